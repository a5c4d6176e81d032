"""Event time is bounded by the contract, and no event, however odd its time, breaks its lead."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from schemas.accounts import AccountChange, AccountSignal
from schemas.stage_changes import StageChange
from streams.common.account_signals_codec import encode_account_signal
from streams.common.settings import DEFAULT_MAX_EVENT_BYTES
from streams.common.stage_changes_codec import encode_account_change, encode_change
from streams.core.account import AccountStageChange, Signal
from streams.core.lead import LeadStageChange
from streams.core.qualify import qualify
from streams.core.rules import load_rules
from streams.offline import replay as replay_module
from streams.offline.replay import BadLine, Replayer
from tests.support.event_times import OUT_OF_RANGE, control_lead, edge_times, in_range, odd_types
from tests.support.factories import event
from tests.support.outcomes import current_stages

RULES = load_rules()


@given(odd=st.lists(st.tuples(edge_times, odd_types), min_size=1, max_size=6), seed=st.randoms())
def test_odd_event_times_are_refused_or_applied_and_never_break_the_lead(
    odd: list[tuple[str, str]], seed: Any
) -> None:
    """The odd events arrive anywhere among the lead's ordinary ones (which arrive in order):
    out of range, they are refused with the reason; in range, however far off, applied; and
    the ordinary events still take the lead to SQL."""
    odd_documents = []
    for timestamp, event_type in odd:
        document = event(
            event_type,
            lead="odd",
            **({"job_title": "CTO"} if event_type == "profile_updated" else {}),
        )
        document["occurred_at"] = timestamp
        odd_documents.append(document)
    documents = control_lead("odd")
    for document in odd_documents:
        documents.insert(seed.randint(0, len(documents)), document)
    lines = [orjson.dumps(d) for d in documents]
    replayer = Replayer(RULES, DEFAULT_MAX_EVENT_BYTES, accounts=True)
    out = list(replayer.run(lines))

    bad = [item for item in out if isinstance(item, BadLine)]
    expected_bad = [n for n, d in enumerate(documents, 1) if not in_range(d["occurred_at"])]
    assert [b.line_number for b in bad] == expected_bad
    assert all(b.reason.startswith(OUT_OF_RANGE) for b in bad), bad
    # Every output is encodable and valid under its contract, and the lead still got to SQL.
    for item in out:
        if isinstance(item, LeadStageChange):
            StageChange.model_validate_json(encode_change(item))
        elif isinstance(item, Signal):
            AccountSignal.model_validate_json(encode_account_signal(item))
        elif isinstance(item, AccountStageChange):
            AccountChange.model_validate_json(encode_account_change(item))
    changes = [item for item in out if isinstance(item, LeadStageChange)]
    assert current_stages(changes)["odd"] == "sql"


def test_the_reported_far_future_event_no_longer_freezes_its_lead(tmp_path: Path) -> None:
    frozen = event("newsletter_subscribe", lead="frozen")
    frozen["occurred_at"] = "9999-12-31T23:59:59-01:00"
    log = tmp_path / "events.jsonl"
    log.write_bytes(b"\n".join(orjson.dumps(d) for d in [frozen, *control_lead("frozen")]))
    result = subprocess.run(
        [sys.executable, "-m", "streams", "replay", "--accounts", str(log)],
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.decode().startswith(tuple(f"line 1: {r}" for r in OUT_OF_RANGE))
    stages = subprocess.run(
        [sys.executable, "-m", "streams", "replay", str(log)], capture_output=True, timeout=60
    ).stdout.splitlines()
    assert [orjson.loads(line)["to_stage"] for line in stages] == [
        "subscriber",
        "lead",
        "mql",
        "sql",
    ]


def test_a_core_failure_is_reported_on_its_line_and_the_replay_goes_on(monkeypatch: Any) -> None:
    calls = {"n": 0}
    real = qualify

    def failing_once(*args: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return real(*args)

    monkeypatch.setattr(replay_module, "qualify", failing_once)
    out = list(
        Replayer(RULES, DEFAULT_MAX_EVENT_BYTES).run(orjson.dumps(d) for d in control_lead("x"))
    )
    assert out[0] == BadLine(1, "internal_error: RuntimeError: boom")
    # The failed event left the lead as it was: the rest still folds (no profile, no lead).
    assert [c.to_stage for c in out[1:] if isinstance(c, LeadStageChange)] == ["subscriber"]
