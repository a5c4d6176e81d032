"""Lead histories that walk every kind of path through the funnel: recycled leads that enter a
stage again, deals won before the lead reached opportunity (stages skipped), disqualification
from any stage, a deal won with no stage at all. For the funnel views' tests."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import orjson
from hypothesis import strategies as st

from streams.common.settings import DEFAULT_MAX_EVENT_BYTES
from streams.common.stage_changes_codec import encode_change
from streams.core.lead import LeadStageChange
from streams.core.revisions import latest_revisions
from streams.core.rules import Rules
from streams.offline.replay import Replayer
from tests.support.factories import BUYER, WEAK, days, event

Document = dict[str, Any]
ACTIONS: dict[str, Callable[[str, timedelta], Document]] = {
    "signs_up": lambda lead, at: event("profile_updated", at, lead=lead, **BUYER),
    "signs_up_unfit": lambda lead, at: event("profile_updated", at, lead=lead, **WEAK),
    "requests_demo": lambda lead, at: event("demo_request", at, lead=lead),
    "is_contacted": lambda lead, at: event("sales_contacted", at, lead=lead),
    "requests_quote": lambda lead, at: event("quote_requested", at, lead=lead),
    "wins": lambda lead, at: event("deal_won", at, lead=lead, amount=1000.0, currency="EUR"),
    "loses": lambda lead, at: event("deal_lost", at, lead=lead),
    "is_disqualified": lambda lead, at: event(
        "sales_disqualified", at, lead=lead, reason="no_budget"
    ),
    "is_recycled": lambda lead, at: event("lead_recycled", at, lead=lead),
    "advocates": lambda lead, at: event("advocacy", at, lead=lead, kind="review"),
}
"""What a lead does, as the event that says it (at an offset from the factories' T0)."""


def history(lead: str, steps: list[tuple[str, float]]) -> list[Document]:
    """The lead's events: each step is an action and the days since the previous step."""
    documents, at = [], 0.0
    for action, gap in steps:
        at += gap
        documents.append(ACTIONS[action](lead, days(at)))
    return documents


EXAMPLE_PATHS: dict[str, list[str]] = {
    # MQL, dropped, recycled into lead, MQL again, then SQL: enters lead and MQL twice.
    "recycled": [
        "signs_up",
        "requests_demo",
        "is_disqualified",
        "is_recycled",
        "requests_demo",
        "is_contacted",
    ],
    # Won while a lead: leaves lead past MQL, SQL and opportunity.
    "skips": ["signs_up", "wins", "advocates"],
    # Won from MQL, from SQL; lost at opportunity, recycled, won from lead.
    "skips_from_mql": ["signs_up", "requests_demo", "wins"],
    "skips_from_sql": ["signs_up", "requests_demo", "is_contacted", "wins"],
    "lost_recycled_won": [
        "signs_up",
        "requests_demo",
        "is_contacted",
        "requests_quote",
        "loses",
        "is_recycled",
        "wins",
    ],
    # Dropped as a subscriber, recycled into subscriber (unfit), waits there.
    "unfit_recycled": ["signs_up_unfit", "is_disqualified", "is_recycled"],
    # Disqualified before any stage, won while disqualified.
    "no_stage": ["is_disqualified", "wins"],
}


def example_paths() -> list[Document]:
    """One lead per path of EXAMPLE_PATHS (named after it), a day between its steps."""
    return [
        document
        for name, actions in EXAMPLE_PATHS.items()
        for document in history(f"path-{name}", [(action, 1.0) for action in actions])
    ]


@st.composite
def lead_histories(draw: st.DrawFn, max_leads: int = 6) -> list[Document]:
    """A few leads, each doing any actions in any order, some on the same instant."""
    documents = []
    for number in range(draw(st.integers(1, max_leads))):
        steps = draw(
            st.lists(
                st.tuples(st.sampled_from(sorted(ACTIONS)), st.sampled_from([0.0, 0.5, 3.0])),
                min_size=1,
                max_size=12,
            )
        )
        documents.extend(history(f"drawn-{number}", steps))
    return documents


def replayed(documents: list[Document], rules: Rules) -> list[bytes]:
    """Every stage change `leadflow replay` publishes for the documents, encoded."""
    return [
        encode_change(item)
        for item in Replayer(rules, DEFAULT_MAX_EVENT_BYTES).run(orjson.dumps(d) for d in documents)
        if isinstance(item, LeadStageChange)
    ]


def latest(changes: list[bytes]) -> list[bytes]:
    """The latest revision of each change (retracted ones included), as the projector keeps."""
    decoded = ((orjson.loads(value), value) for value in changes)
    newest = latest_revisions(decoded, lambda pair: (pair[0]["change_id"], pair[0]["revision"]))
    return [value for _, value in newest.values()]
