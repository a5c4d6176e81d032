"""Random event logs for hypothesis properties: one lead's events, and a visitor's with the
known lead it links to; the rules they are checked against."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hypothesis import strategies as st

from schemas.events import EVENT_TYPES, LINK_TYPES
from streams.core.lead import entry_of
from streams.core.rules import load_rules
from tests.support.factories import BUYER, COMPETITOR, STUDENT, VENDOR, WEAK, as_event, event

RULES = load_rules()  # hypothesis does not mix with function-scoped fixtures
WIDE = RULES.model_copy(
    update={"state": RULES.state.model_copy(update={"allowed_lateness_days": 180.0})}
)
"""Rules whose bound every generated log fits in."""
PROFILES = [
    BUYER,
    STUDENT,
    COMPETITOR,
    VENDOR,
    WEAK,
    {"job_title": "CTO"},
    {"company_size": 900, "industry": "software"},
    {"email": "x@acme.org"},
]
LEAD_EVENT_TYPES = tuple(t for t in EVENT_TYPES if t not in LINK_TYPES)
"""The types one lead's core folds (links are an identity's: tests/unit/core/test_identity.py)."""


def properties_for(event_type: str) -> st.SearchStrategy[dict[str, Any]]:
    """Properties an event of this type may carry (a few, so that they repeat)."""
    if event_type == "profile_updated":
        return st.sampled_from(PROFILES)
    if event_type == "content_download":
        return st.sampled_from(
            [{}, {"content_category": "pricing_guide"}, {"content_category": "careers"}]
        )
    if event_type == "sales_contacted":
        return st.sampled_from([{}, {"bant": {"budget": True, "need": False}}])
    if event_type == "sales_disqualified":
        return st.sampled_from([{"reason": "no_budget"}, {"reason": "competitor"}])
    if event_type == "deal_won":
        return st.just({"amount": 100.0, "currency": "EUR"})
    if event_type == "owner_assigned":
        return st.sampled_from([{"owner_id": "ben"}, {"owner_id": "crm-7", "team": "emea"}])
    if event_type == "advocacy":
        return st.just({"kind": "review"})
    return st.just({})


# Hours on a coarse grid, so that ties (the same instant) happen often.
instants = st.one_of(st.integers(0, 24 * 120), st.sampled_from([0, 1, 1, 48, 500]))


@st.composite
def lead_logs(draw: st.DrawFn, lead: str = "lead-1", max_size: int = 30) -> list[dict[str, Any]]:
    """A lead's events, each with a distinct event_id, in a random arrival order."""
    documents = []
    for index in range(draw(st.integers(1, max_size))):
        event_type = draw(st.sampled_from(LEAD_EVENT_TYPES))
        documents.append(
            event(
                event_type,
                timedelta(hours=draw(instants)),
                lead=lead,
                event_id=f"{lead}-{index}",
                source=draw(st.sampled_from([None, "google", "linkedin"])),
                **draw(properties_for(event_type)),
            )
        )
    return documents


def in_event_time_order(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The documents as the core orders them: by event time, then rank, then event id."""
    return sorted(documents, key=lambda d: tuple(entry_of(as_event(d))[:3]))


VISITOR = "anon-1"
LEAD = "lead-1"
ANONYMOUS_TYPES = ["page_view", "pricing_page_view", "content_download", "webinar_attended"]
hours = st.integers(0, 24 * 40)


def link_event(
    at: int, event_id: str, anonymous: str = VISITOR, lead: str = LEAD
) -> dict[str, Any]:
    """An `identity_linked` event, `at` hours in, linking `anonymous` to `lead`."""
    document = event("identity_linked", timedelta(hours=at), lead=lead, event_id=event_id)
    document["anonymous_id"] = anonymous
    return document


@st.composite
def stitched_logs(draw: st.DrawFn) -> list[dict[str, Any]]:
    """A visitor's anonymous events, the known lead's, and one or more links between them
    (an explicit link, or the lead's events seen under the visitor's anonymous id)."""
    documents = []
    for index in range(draw(st.integers(0, 16))):
        event_type = draw(st.sampled_from(ANONYMOUS_TYPES))
        category = {"content_category": "case_study"} if event_type == "content_download" else {}
        document = event(
            event_type,
            timedelta(hours=draw(st.integers(0, 24 * 12))),
            lead=VISITOR,
            event_id=f"anon-{index}",
            source=draw(st.sampled_from([None, "google", "linkedin"])),
            **category,
        )
        document["anonymous_id"] = VISITOR
        documents.append(document)
    signed_up = draw(hours)
    sign_up = event(
        "profile_updated", timedelta(hours=signed_up), lead=LEAD, event_id="signup", **BUYER
    )
    if draw(st.booleans()):
        sign_up["anonymous_id"] = VISITOR
    documents.append(sign_up)
    for index in range(draw(st.integers(0, 6))):
        documents.append(
            event(
                draw(st.sampled_from(["page_view", "email_open", "content_download"])),
                timedelta(hours=draw(hours)),
                lead=LEAD,
                event_id=f"own-{index}",
            )
        )
    for index in range(draw(st.integers(0 if "anonymous_id" in sign_up else 1, 2))):
        documents.append(link_event(draw(hours), f"link-{index}"))
    return documents
