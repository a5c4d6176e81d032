"""Campaign spend: the contract, its key, the ad platforms' CSV and the generated spend."""

from __future__ import annotations

import io
from datetime import date
from pathlib import Path

import orjson
import pytest

from schemas.export import export_json_schemas
from schemas.spend import CampaignSpend
from streams.common.spend import (
    SpendFileError,
    decode_spend,
    encode_spend,
    read_spend_csv,
    spend_csv_text,
)
from streams.errors import InvalidEventError
from streams.local.generator import generate
from streams.local.spend_traffic import generate_spend
from tests.support.command_line import leadflow

SPEND = CampaignSpend(
    source="linkedin", campaign="data-leaders", day=date(2026, 3, 1), amount=120.5, currency="EUR"
)


def test_the_same_source_campaign_day_and_currency_have_the_same_id() -> None:
    assert SPEND.model_copy(update={"amount": 99.0}).spend_id == SPEND.spend_id
    for change in ({"currency": "USD"}, {"day": date(2026, 3, 2)}, {"campaign": "other"}):
        assert SPEND.model_copy(update=change).spend_id != SPEND.spend_id
    assert decode_spend(encode_spend(SPEND)) == SPEND


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ({"amount": -1}, "amount: Input should be greater than or equal to 0"),
        ({"currency": "eur"}, "currency: String should match pattern"),
        ({"day": "2026-02-30"}, "day: Input should be a valid date"),
        ({"source": ""}, "source: String should have at least 1 character"),
        ({"amount": "nan"}, "amount: Input should be a finite number"),
        ({"extra": 1}, "extra: Extra inputs are not permitted"),
    ],
)
def test_an_invalid_spend_record_is_refused_with_the_reason(
    document: dict[str, object], reason: str
) -> None:
    with pytest.raises(InvalidEventError, match=reason):
        decode_spend({**SPEND.model_dump(mode="json"), **document})


def test_a_spend_csv_is_read_line_by_line_and_bad_lines_named() -> None:
    text = (
        "date,source,campaign,cost,currency,clicks\n"
        "2026-03-01,linkedin,data-leaders,120.50,EUR,40\n"
        "\n"
        "2026-03-02,linkedin,data-leaders,-3,EUR,1\n"
        "2026-03-03,linkedin,data-leaders,12,euro,1\n"
        "2026-03-04,linkedin,data-leaders,12\n"
        "2026-03-05,google_ads,brand-search,7,USD,2\n"
    )
    rows = read_spend_csv(io.StringIO(text), "spend.csv")
    assert [(line, spend.day.day) for line, spend in rows.records] == [(2, 1), (7, 5)]
    assert [(bad.line, bad.reason.split(":")[0]) for bad in rows.bad] == [
        (4, "amount"),
        (5, "currency"),
        (6, "4 cells, the header has 6"),
    ]


def test_the_columns_are_configurable_and_a_missing_one_is_named() -> None:
    text = "Day,Network,Campaign name,Spend,Currency\n2026-03-01,linkedin,x,5,USD\n"
    columns = {
        "day": "Day",
        "source": "Network",
        "campaign": "Campaign name",
        "amount": "Spend",
        "currency": "Currency",
    }
    rows = read_spend_csv(io.StringIO(text), "ads.csv", columns)
    assert [spend.source for _, spend in rows.records] == ["linkedin"]
    with pytest.raises(SpendFileError, match=r"ads\.csv: the header lacks the column\(s\) date, "):
        read_spend_csv(io.StringIO(text), "ads.csv")


def test_generated_spend_is_deterministic_and_reads_back_as_it_was_written() -> None:
    events = generate(60, seed=9)
    spend = list(generate_spend(events, 9))
    assert spend == list(generate_spend(generate(60, seed=9), 9))
    assert spend != list(generate_spend(events, 10))
    assert {s.currency for s in spend} == {"EUR", "USD"}
    assert all(s.source not in {"email", "newsletter", "organic_search", "crm"} for s in spend)
    rows = read_spend_csv(io.StringIO(spend_csv_text(spend)), "generated.csv")
    assert rows.bad == [] and [s for _, s in rows.records] == spend


def test_the_import_names_each_bad_line_and_sends_nothing(tmp_path: Path) -> None:
    export = tmp_path / "spend.csv"
    export.write_text(
        "date,source,campaign,cost,currency\n"
        "2026-03-01,linkedin,data-leaders,1,EUR\n"
        "2026-03-02,linkedin,data-leaders,lots,EUR\n"
    )
    # No broker at that address: nothing is sent, the bad line is said first.
    done = leadflow(
        "spend",
        "import",
        str(export),
        variables={"LEADFLOW_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1"},
    )
    assert done.returncode == 1
    stderr = done.stderr.decode()
    assert f"{export}:3: amount: Input should be a valid number" in stderr
    assert "1 bad lines in" in stderr and "nothing was sent" in stderr


def test_generate_writes_the_spend_beside_the_same_events(tmp_path: Path) -> None:
    plain = leadflow("generate", "--leads", "30", "--seed", "2")
    with_spend = leadflow(
        "generate", "--leads", "30", "--seed", "2", "--spend", str(tmp_path / "s.csv")
    )
    assert with_spend.stdout == plain.stdout
    events = [orjson.loads(line) for line in plain.stdout.splitlines()]
    assert (tmp_path / "s.csv").read_text() == spend_csv_text(generate_spend(events, 2))


def test_the_spend_record_is_exported_with_the_contract(tmp_path: Path) -> None:
    export_json_schemas(tmp_path)
    schema = orjson.loads((tmp_path / "campaign_spend.schema.json").read_bytes())
    assert set(schema["required"]) == {"source", "campaign", "day", "amount", "currency"}
