"""Campaign spend: the wire format of the spend topic, the ad platforms' CSV export, and
publishing (`leadflow spend import`, the CRM webhook's /v1/crm/spend).

A spend record travels as compact JSON (`schemas.CampaignSpend`), keyed by its spend id, so a
record sent again for the same source, campaign, day and currency replaces the earlier one.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO, Any, Final

import orjson
from pydantic import ValidationError

from schemas.spend import CampaignSpend
from streams.common.events_codec import describe_validation_error
from streams.common.kafka_clients import send_failure, unacknowledged
from streams.common.publish import make_producer
from streams.common.settings import Settings
from streams.errors import InvalidEventError, LeadflowError

SPEND_FIELDS: Final = ("day", "source", "campaign", "amount", "currency")
DEFAULT_COLUMNS: Final = {
    "day": "date",
    "source": "source",
    "campaign": "campaign",
    "amount": "cost",
    "currency": "currency",
}
"""Each spend field and the CSV column it is read from by default (an ad platform's export)."""


class SpendFileError(LeadflowError):
    """A spend CSV cannot be read at all (no such file, a header without the columns)."""


def encode_spend(spend: CampaignSpend) -> bytes:
    """A spend record as the JSON of the spend topic (the same record, the same bytes)."""
    return orjson.dumps(spend.model_dump(mode="json"))


def decode_spend(raw: bytes | str | dict[str, Any]) -> CampaignSpend:
    """A spend record from JSON (or a parsed document); InvalidEventError says why not."""
    try:
        if isinstance(raw, dict):
            return CampaignSpend.model_validate(raw)
        return CampaignSpend.model_validate_json(raw)
    except ValidationError as exc:
        raise InvalidEventError(f"not a spend record: {describe_validation_error(exc)}") from None


@dataclass(frozen=True)
class BadSpendLine:
    """A CSV line that is no spend record, and why."""

    line: int
    reason: str


@dataclass
class SpendRows:
    """The valid records of a spend CSV with their line numbers, and its bad lines."""

    records: list[tuple[int, CampaignSpend]] = field(default_factory=list)
    bad: list[BadSpendLine] = field(default_factory=list)


def read_spend_csv(handle: IO[str], name: str, columns: dict[str, str] | None = None) -> SpendRows:
    """Every line of a spend CSV validated: `columns` maps each spend field to its column
    (DEFAULT_COLUMNS by default). SpendFileError when the header lacks one of them."""
    wanted = {**DEFAULT_COLUMNS, **(columns or {})}
    rows = csv.reader(handle)
    header = next(rows, None)
    if header is None:
        raise SpendFileError(f"{name} is empty: want a header naming the columns")
    names = [column.strip().lstrip("\ufeff") for column in header]
    missing = [column for column in wanted.values() if column not in names]
    if missing:
        raise SpendFileError(
            f"{name}: the header lacks the column(s) {', '.join(missing)} (it has "
            f"{', '.join(names)}); name them with --date-column, --source-column, "
            "--campaign-column, --cost-column, --currency-column"
        )
    where = {spend_field: names.index(column) for spend_field, column in wanted.items()}
    found = SpendRows()
    for row in rows:
        line = rows.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(names):
            found.bad.append(BadSpendLine(line, f"{len(row)} cells, the header has {len(names)}"))
            continue
        document = {spend_field: row[index].strip() for spend_field, index in where.items()}
        try:
            found.records.append((line, decode_spend(document)))
        except InvalidEventError as exc:
            found.bad.append(BadSpendLine(line, exc.reason.removeprefix("not a spend record: ")))
    return found


def open_spend_csv(name: str) -> IO[str]:
    """A spend CSV opened for `read_spend_csv` (SpendFileError when it cannot be)."""
    try:
        return open(name, encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise SpendFileError(f"cannot read {name}: {exc.strerror}") from None


def write_spend_csv(records: Iterable[CampaignSpend], handle: IO[str]) -> None:
    """Spend records as the CSV `read_spend_csv` reads by default (an ad platform's export)."""
    out = csv.writer(handle, lineterminator="\n")
    out.writerow([DEFAULT_COLUMNS[name] for name in SPEND_FIELDS])
    for spend in records:
        out.writerow(
            [
                spend.day.isoformat(),
                spend.source,
                spend.campaign,
                f"{spend.amount:.2f}",
                spend.currency,
            ]
        )


def spend_csv_text(records: Iterable[CampaignSpend]) -> str:
    """`write_spend_csv` into a string."""
    buffer = io.StringIO()
    write_spend_csv(records, buffer)
    return buffer.getvalue()


@dataclass
class SpendPublished:
    """How many records the broker acknowledged, and each one it did not (label, why)."""

    sent: int = 0
    failed: list[tuple[int, str]] = field(default_factory=list)


def publish_spend(
    records: Iterable[tuple[int, CampaignSpend]], settings: Settings, producer: Any = None
) -> SpendPublished:
    """Send spend records (each with a label, e.g. its line) to the spend topic, keyed by their
    spend id, with acks from all replicas; return once the broker answered for each."""
    from kafka.errors import KafkaError

    own_producer = producer is None
    if own_producer:
        producer = make_producer(settings)
    sends: list[tuple[int, Any]] = []
    done = SpendPublished()
    try:
        for label, spend in records:
            try:
                sends.append(
                    (
                        label,
                        producer.send(
                            settings.topics.spend,
                            key=spend.spend_id.encode(),
                            value=encode_spend(spend),
                        ),
                    )
                )
            except KafkaError as exc:
                done.failed.append((label, send_failure(exc)))
        producer.flush()
    finally:
        if own_producer:
            producer.close()
    not_acknowledged = unacknowledged(sends)
    done.sent = len(sends) - len(not_acknowledged)
    done.failed = sorted(done.failed + not_acknowledged)
    return done
