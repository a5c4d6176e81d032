"""The lifecycle rules, one scenario each, through the same `decide` the workers use."""

from datetime import timedelta

import pytest

from streams.core.lifecycle import decide
from streams.core.publishing import change_id
from streams.core.revisions import instant_of
from streams.core.rules import Rules
from tests.support.factories import (
    BUYER,
    COMPETITOR,
    STUDENT,
    T0,
    VENDOR,
    WEAK,
    as_event,
    days,
    event,
    run,
    stages,
)


def test_anonymous_browsing_gives_no_stage(rules: Rules) -> None:
    states, changes = run([event("page_view", days(i)) for i in range(5)], rules)
    assert changes == []
    assert states["lead-1"].fold.stage is None


def test_a_form_makes_a_subscriber_and_fit_makes_a_lead(rules: Rules) -> None:
    _, changes = run(
        [event("newsletter_subscribe"), event("profile_updated", days(1), **BUYER)], rules
    )
    assert [(c.from_stage, c.to_stage, c.rule) for c in changes] == [
        (None, "subscriber", "subscriber.contact"),
        ("subscriber", "lead", "lead.fit"),
    ]
    assert changes[1].fit_score == 70
    # A buyer's fit and little engagement yet: fit band A, engagement band 3.
    assert [c.grade for c in changes] == ["C3", "A3"]


def test_a_profile_with_an_email_is_contact_details(rules: Rules) -> None:
    _, changes = run([event("profile_updated", **BUYER)], rules)
    assert stages(changes) == ["subscriber", "lead"]


def test_active_mql_on_a_high_intent_form(rules: Rules) -> None:
    _, changes = run(
        [event("profile_updated", **BUYER), event("demo_request", days(1), event_id="demo")],
        rules,
    )
    mql = changes[-1]
    assert (mql.to_stage, mql.rule, mql.mql_kind) == ("mql", "mql.active_form", "active")
    assert mql.causation_event_id == "demo"
    assert instant_of(mql.occurred_at) == T0 + days(1)
    assert mql.rules_version == rules.rules_version


def test_a_form_in_the_same_instant_as_its_profile_counts_once_the_profile_applies(
    rules: Rules,
) -> None:
    # Profile facts sort before the form at the same instant, whatever the arrival order.
    _, changes = run([event("demo_request"), event("profile_updated", **BUYER)], rules)
    live = {c.change_id: c for c in changes}
    assert sorted(c.to_stage for c in live.values() if not c.retracted) == [
        "lead",
        "mql",
        "subscriber",
    ]


def test_someone_who_is_not_a_lead_does_not_become_an_mql_by_filling_a_form(
    rules: Rules,
) -> None:
    _, changes = run([event("profile_updated", **WEAK), event("demo_request", days(1))], rules)
    assert stages(changes) == ["subscriber"]


def engaged(start: timedelta, step: timedelta = timedelta(hours=1)) -> list[dict[str, object]]:
    """About 63 points, none of them intent: three case studies (30, the content cap), two
    webinars (30), an email click (3)."""
    kinds = (
        [("content_download", {"content_category": "case_study"})] * 3
        + [("webinar_attended", {})] * 2
        + [("email_click", {})]
    )
    return [
        event(kind, start + step * i, event_id=f"engaged-{i}", **properties)
        for i, (kind, properties) in enumerate(kinds)
    ]


def test_passive_mql_when_engagement_reaches_the_threshold(rules: Rules) -> None:
    documents = [event("profile_updated", **BUYER), *engaged(timedelta(hours=1))]
    _, changes = run(documents[:-1], rules)
    assert stages(changes) == ["subscriber", "lead"]  # 60 minus a few hours of decay
    _, changes = run(documents, rules)
    mql = changes[-1]
    assert (mql.to_stage, mql.mql_kind, mql.rule) == ("mql", "passive", "mql.passive_score")
    assert mql.causation_event_id == "engaged-5"
    assert mql.engagement_score == pytest.approx(63, abs=0.5)


def test_repeated_low_value_actions_saturate_at_their_cap(rules: Rules) -> None:
    documents = [event("profile_updated", **BUYER)]
    documents += [event("page_view", timedelta(minutes=i)) for i in range(1, 200)]
    states, changes = run(documents, rules)
    assert stages(changes) == ["subscriber", "lead"]
    assert states["lead-1"].fold.engagement == pytest.approx(10, abs=0.01)


def test_decay_on_event_time_can_keep_a_lead_below_the_threshold(rules: Rules) -> None:
    documents = [event("profile_updated", **BUYER)]
    documents += [event("pricing_page_view", days(60 * i)) for i in range(1, 8)]
    _, changes = run(documents, rules)
    assert stages(changes) == ["subscriber", "lead"]


def test_a_decaying_score_never_demotes(rules: Rules) -> None:
    documents = [event("profile_updated", **BUYER), event("demo_request", days(1))]
    documents += [event("email_open", days(400))]
    states, changes = run(documents, rules)
    assert states["lead-1"].fold.stage == "mql"
    assert stages(changes) == ["subscriber", "lead", "mql"]


def test_sql_when_sales_talks_to_an_mql_and_bant_is_kept(rules: Rules) -> None:
    bant = {"budget": True, "authority": False, "need": True, "timeline": None}
    states, changes = run(
        [
            event("profile_updated", **BUYER),
            event("demo_request", days(1)),
            event("sales_contacted", days(2), channel="call", bant=bant),
        ],
        rules,
    )
    assert (changes[-1].to_stage, changes[-1].rule) == ("sql", "sql.sales_contacted")
    assert states["lead-1"].fold.bant == bant


def test_sales_contact_before_mql_is_not_an_sql(rules: Rules) -> None:
    _, changes = run([event("profile_updated", **BUYER), event("sales_contacted", days(1))], rules)
    assert stages(changes) == ["subscriber", "lead"]


def test_the_whole_funnel_to_evangelist(rules: Rules) -> None:
    _, changes = run(
        [
            event("profile_updated", **BUYER),
            event("contact_sales_request", days(1)),
            event("sales_contacted", days(2)),
            event("quote_requested", days(3)),
            event("deal_won", days(10), amount=12000.0, currency="EUR"),
            event("advocacy", days(40), kind="review"),
        ],
        rules,
    )
    assert [(c.to_stage, c.rule) for c in changes] == [
        ("subscriber", "subscriber.contact"),
        ("lead", "lead.fit"),
        ("mql", "mql.active_form"),
        ("sql", "sql.sales_contacted"),
        ("opportunity", "opportunity.quote_requested"),
        ("customer", "customer.deal_won"),
        ("evangelist", "evangelist.advocacy"),
    ]
    assert [c.sequence for c in changes] == list(range(7))


def test_a_second_won_deal_makes_an_evangelist(rules: Rules) -> None:
    _, changes = run(
        [
            event("profile_updated", **BUYER),
            event("deal_won", days(1), amount=1.0, currency="USD"),
            event("deal_won", days(100), amount=2.0, currency="USD"),
        ],
        rules,
    )
    assert [c.rule for c in changes][-2:] == ["customer.deal_won", "evangelist.repeat_purchase"]


@pytest.mark.parametrize("stage_events", [1, 2, 3, 4, 5])
def test_sales_can_disqualify_from_any_stage_before_customer(
    rules: Rules, stage_events: int
) -> None:
    path = [
        event("profile_updated", **WEAK),  # subscriber
        event("profile_updated", days(1), **BUYER),  # lead
        event("demo_request", days(2)),  # mql
        event("sales_contacted", days(3)),  # sql
        event("quote_requested", days(4)),  # opportunity
    ][:stage_events]
    states, changes = run([*path, event("sales_disqualified", days(5), reason="no_budget")], rules)
    assert (changes[-1].to_stage, changes[-1].rule, changes[-1].reason) == (
        "disqualified",
        "disqualified.sales",
        "no_budget",
    )
    assert states["lead-1"].fold.stage == "disqualified"


def test_customers_cannot_be_disqualified(rules: Rules) -> None:
    states, _ = run(
        [
            event("profile_updated", **BUYER),
            event("deal_won", days(1), amount=1.0, currency="USD"),
            event("sales_disqualified", days(2), reason="other"),
        ],
        rules,
    )
    assert states["lead-1"].fold.stage == "customer"


def test_a_lost_deal_disqualifies(rules: Rules) -> None:
    _, changes = run(
        [
            event("profile_updated", **BUYER),
            event("demo_request", days(1)),
            event("sales_contacted", days(2)),
            event("quote_requested", days(3)),
            event("deal_lost", days(9), reason="price"),
        ],
        rules,
    )
    assert (changes[-1].to_stage, changes[-1].rule, changes[-1].reason) == (
        "disqualified",
        "disqualified.deal_lost",
        "deal_lost",
    )


@pytest.mark.parametrize(
    ("profile", "reason"), [(STUDENT, "student"), (COMPETITOR, "competitor"), (VENDOR, "vendor")]
)
def test_excluded_people_never_become_leads_whatever_forms_they_fill(
    rules: Rules, profile: dict[str, object], reason: str
) -> None:
    documents = [event("profile_updated", **profile)]
    documents += [
        event(form, days(i + 1))
        for i, form in enumerate(
            ["demo_request", "contact_sales_request", "free_trial_signup", "webinar_attended"]
            + ["pricing_page_view"] * 6
        )
    ]
    documents.append(event("sales_contacted", days(20)))
    states, changes = run(documents, rules)
    assert [(c.to_stage, c.rule, c.reason) for c in changes] == [
        ("subscriber", "subscriber.contact", None),
        ("disqualified", "disqualified.exclusion", reason),
    ]
    assert states["lead-1"].fold.stage == "disqualified"


def test_an_exclusion_found_later_disqualifies_an_mql(rules: Rules) -> None:
    _, changes = run(
        [
            event("profile_updated", **BUYER),
            event("demo_request", days(1)),
            event("profile_updated", days(2), email="jane@leadlynx.com"),
        ],
        rules,
    )
    assert (changes[-1].from_stage, changes[-1].to_stage, changes[-1].reason) == (
        "mql",
        "disqualified",
        "competitor",
    )


def test_recycling_returns_to_nurture_and_the_lead_must_earn_mql_again(rules: Rules) -> None:
    documents = [
        event("profile_updated", **BUYER),
        event("demo_request", days(1)),
        event("sales_disqualified", days(2), reason="no_timeline"),
        event("lead_recycled", days(60)),
        event("pricing_page_view", days(61)),
    ]
    states, changes = run(documents, rules)
    assert [(c.from_stage, c.to_stage, c.rule) for c in changes][-2:] == [
        ("mql", "disqualified", "disqualified.sales"),
        ("disqualified", "lead", "recycled.sales"),
    ]
    assert states["lead-1"].fold.engagement == 10  # reset at recycling, then one pricing view
    _, changes = run([*documents, event("demo_request", days(62))], rules)
    assert (changes[-1].to_stage, changes[-1].rule) == ("mql", "mql.active_form")
    assert changes[-1].change_id != change_id("lead-1", "lead", "mql", 0)


def test_a_recycled_person_who_does_not_fit_goes_back_to_subscriber(rules: Rules) -> None:
    _, changes = run(
        [
            event("profile_updated", **WEAK),
            event("sales_disqualified", days(2), reason="invalid_contact"),
            event("lead_recycled", days(3)),
        ],
        rules,
    )
    assert changes[-1].to_stage == "subscriber"


def test_first_touch_attribution(rules: Rules) -> None:
    _, changes = run(
        [
            event("page_view", source="linkedin", campaign="data-leaders"),
            event("profile_updated", days(1), source="crm", **BUYER),
        ],
        rules,
    )
    assert {(c.source, c.campaign) for c in changes} == {("linkedin", "data-leaders")}


def test_a_duplicate_event_changes_nothing(rules: Rules) -> None:
    documents = [event("profile_updated", **BUYER), event("demo_request", days(1))]
    states, _ = run(documents, rules)
    state = states["lead-1"]
    for document in documents:
        decision = decide(state, as_event(document), rules)
        assert decision.duplicate
        assert decision.changes == ()
        assert decision.state is state


def test_a_late_event_applies_at_its_own_time_and_republishes_what_it_alters(
    rules: Rules,
) -> None:
    documents = [
        event("profile_updated", **BUYER),
        event("demo_request", days(5), event_id="demo"),
        event("sales_contacted", days(6), event_id="call"),
    ]
    _, changes = run(documents, rules)
    assert [c.rule for c in changes][-2:] == ["mql.active_form", "sql.sales_contacted"]
    # The tracker delivers, late, what the lead did on day one: the MQL was passive, earlier.
    _, changes = run(documents + engaged(days(1)), rules)
    mql = [c for c in changes if c.to_stage == "mql"][-1]
    assert (mql.rule, mql.causation_event_id, instant_of(mql.occurred_at)) == (
        "mql.passive_score",
        "engaged-5",
        T0 + days(1) + timedelta(hours=5),
    )
    assert mql.change_id == change_id("lead-1", "lead", "mql", 0)
    assert mql.revision == 3 + 6
    assert not any(c.retracted for c in changes)


def test_a_late_event_that_undoes_a_change_retracts_it(rules: Rules) -> None:
    documents = [event("profile_updated", **BUYER), *engaged(timedelta(hours=1))]
    _, changes = run(documents, rules)
    assert changes[-1].rule == "mql.passive_score"
    # An unsubscribe before all that, delivered late: the threshold was never reached.
    states, changes = run([*documents, event("unsubscribe", timedelta(minutes=30))], rules)
    retracted = [c for c in changes if c.retracted]
    assert [(c.to_stage, c.change_id) for c in retracted] == [
        ("mql", change_id("lead-1", "lead", "mql", 0))
    ]
    assert retracted[0].revision == len(documents) + 1
    assert states["lead-1"].fold.stage == "lead"


def pricing_research(start: timedelta, step: timedelta) -> list[dict[str, object]]:
    return [
        event("pricing_page_view", start, event_id="pricing-1"),
        event(
            "content_download", start + step, event_id="pricing-2", content_category="pricing_guide"
        ),
        event("pricing_page_view", start + step * 2, event_id="pricing-3"),
    ]


def test_three_pricing_looks_in_a_week_make_an_active_mql(rules: Rules) -> None:
    documents = [event("profile_updated", **BUYER), *pricing_research(days(1), days(3))]
    _, changes = run(documents, rules)
    mql = changes[-1]
    assert (mql.to_stage, mql.mql_kind, mql.rule, mql.causation_event_id) == (
        "mql",
        "active",
        "mql.intent.pricing_research",
        "pricing-3",
    )
    assert mql.engagement_score < rules.engagement.mql_threshold


def test_pricing_looks_further_apart_than_the_window_are_no_pattern(rules: Rules) -> None:
    documents = [event("profile_updated", **BUYER), *pricing_research(days(1), days(3.6))]
    _, changes = run(documents, rules)
    assert stages(changes) == ["subscriber", "lead"]


def test_a_pattern_completed_before_the_lead_fits_needs_one_more_look_after(
    rules: Rules,
) -> None:
    documents = [
        event("newsletter_subscribe"),
        *pricing_research(days(1), days(1)),
        event("profile_updated", days(4), **BUYER),
    ]
    _, changes = run(documents, rules)
    assert stages(changes) == ["subscriber", "lead"]
    _, changes = run([*documents, event("pricing_page_view", days(5), event_id="again")], rules)
    assert (changes[-1].rule, changes[-1].causation_event_id) == (
        "mql.intent.pricing_research",
        "again",
    )


def test_recycling_forgets_the_intent_seen_before(rules: Rules) -> None:
    documents = [
        event("profile_updated", **BUYER),
        event("pricing_page_view", days(1)),
        event("pricing_page_view", days(2)),
        event("sales_disqualified", days(2.5), reason="no_timeline"),
        event("lead_recycled", days(3)),
        event("pricing_page_view", days(4)),
    ]
    states, changes = run(documents, rules)
    assert changes[-1].rule == "recycled.sales"
    assert states["lead-1"].fold.intent == {"pricing_research": (instant_micros(days(4)),)}


def instant_micros(offset: timedelta) -> int:
    return round((T0 + offset).timestamp() * 1_000_000)


def without_patterns(rules: Rules) -> Rules:
    return rules.model_copy(update={"intent_patterns": ()})


@pytest.mark.parametrize("form", ["demo_request", "contact_sales_request", "free_trial_signup"])
def test_each_high_intent_form_makes_an_mql_on_its_own(rules: Rules, form: str) -> None:
    assert form in rules.lifecycle.high_intent_event_types
    _, changes = run([event("profile_updated", **BUYER), event(form, days(1))], rules)
    assert (changes[-1].to_stage, changes[-1].rule) == ("mql", "mql.active_form")


def test_each_intent_pattern_makes_an_mql_on_its_own(rules: Rules) -> None:
    assert [p.id for p in rules.intent_patterns] == ["pricing_research"]
    for pattern in rules.intent_patterns:
        kind = sorted(pattern.event_types)[0]
        documents = [event("profile_updated", **BUYER)]
        step = timedelta(days=pattern.within_days / pattern.count)
        documents += [event(kind, step * (i + 1)) for i in range(pattern.count)]
        _, changes = run(documents, rules)
        assert (changes[-1].to_stage, changes[-1].rule) == ("mql", pattern.rule)


def test_pricing_visits_with_content_reach_the_passive_threshold(rules: Rules) -> None:
    """The numbers, without the pattern: five pricing views in three days, the pricing guide and
    two case studies (before, the caps of pricing views and content added up to exactly the
    threshold, and the least decay kept such a lead under it for ever)."""
    documents = [event("profile_updated", **BUYER)]
    documents += [event("pricing_page_view", timedelta(hours=14 * i)) for i in range(5)]
    documents += [
        event("content_download", days(2), content_category="pricing_guide"),
        event("content_download", days(2.5), content_category="case_study"),
        event("content_download", days(3), content_category="case_study"),
    ]
    _, changes = run(documents, without_patterns(rules))
    mql = changes[-1]
    assert (mql.to_stage, mql.rule) == ("mql", "mql.passive_score")
    _, changes = run(documents, rules)  # with the pattern, the third pricing view is enough
    assert changes[-1].rule == "mql.intent.pricing_research"
