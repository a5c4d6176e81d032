import pytest

from streams.core.rules import Rules
from streams.core.scoring import (
    add_engagement,
    decay_factor,
    engagement_points,
    exclusion_of,
    fit_score,
    title_phrases,
)
from tests.factories import BUYER

DAY = 86_400_000_000


def test_fit_adds_every_profile_component(rules: Rules) -> None:
    # business email 10 + vp 25 + "marketing" 10 + 100-499 employees 10 + software 10 + US 5
    assert fit_score(BUYER, rules.fit) == 70


def test_missing_facts_score_zero(rules: Rules) -> None:
    assert fit_score({}, rules.fit) == 0


def test_explicit_seniority_wins_over_the_title(rules: Rules) -> None:
    assert fit_score({"job_title": "CTO", "seniority": "manager"}, rules.fit) == 15
    assert fit_score({"job_title": "CTO"}, rules.fit) == 30


def test_title_keywords_match_whole_words_only(rules: Rules) -> None:
    assert title_phrases("VP, Data & Analytics") >= {"vp", "data", "vp data", "analytics"}
    # "it" is a keyword; "Digital" and "Security" must not match it.
    assert fit_score({"job_title": "Digital Security"}, rules.fit) == 0
    assert fit_score({"job_title": "IT Manager"}, rules.fit) == 15 + 5
    assert fit_score({"job_title": "Vice President of Sales"}, rules.fit) == 25 + 5


def test_free_mail_gets_no_business_email_points(rules: Rules) -> None:
    assert fit_score({"email": "jane@gmail.com"}, rules.fit) == 0
    assert fit_score({"email": "jane@acme.io"}, rules.fit) == 10


@pytest.mark.parametrize(
    ("profile", "expected"),
    [
        ({"email": "x@rivalfunnel.com"}, "competitor"),
        ({"email": "x@eu.pipecraft.io"}, "competitor"),
        ({"company": "  LeadLynx "}, "competitor"),
        ({"email": "x@printshop.example"}, "vendor"),
        ({"company": "StaffPros"}, "vendor"),
        ({"job_title": "PhD Candidate"}, "student"),
        ({"job_title": "Graduate student, CS"}, "student"),
        ({"seniority": "Student"}, "student"),
        ({"email": "x@cs.ox.ac.uk"}, "student"),
        ({"email": "x@mit.edu"}, "student"),
        (BUYER, None),
        ({"email": "x@notpipecraft.io"}, None),
        ({"job_title": "Student Success Manager"}, None),
        ({"job_title": "Student Intern"}, "student"),
    ],
)
def test_exclusions(rules: Rules, profile: dict[str, object], expected: str | None) -> None:
    assert exclusion_of(profile, rules.exclusions, rules.fit) == expected


def test_content_category_points_replace_type_points(rules: Rules) -> None:
    assert engagement_points("content_download", "case_study", rules.engagement) == 10
    assert engagement_points("content_download", "unknown-category", rules.engagement) == 5
    assert engagement_points("content_download", None, rules.engagement) == 5


def test_score_halves_after_one_half_life(rules: Rules) -> None:
    half_life = int(rules.engagement.half_life_days * DAY)
    assert decay_factor(half_life, rules.engagement) == pytest.approx(0.5, abs=1e-12)
    assert decay_factor(0, rules.engagement) == 1.0


def test_caps_saturate_a_type_at_any_moment(rules: Rules) -> None:
    buckets: dict[str, float] = {}
    for _ in range(50):
        buckets = add_engagement(buckets, 1.0, "page_view", 1.0, rules.engagement)
    assert buckets == {"page_view": 10.0}
    # After decay the type earns again, up to the cap.
    buckets = add_engagement(buckets, 0.5, "page_view", 1.0, rules.engagement)
    assert buckets == {"page_view": 6.0}


def test_negative_points_and_their_cap(rules: Rules) -> None:
    buckets = add_engagement({"demo_request": 50.0}, 1.0, "unsubscribe", -20.0, rules.engagement)
    assert sum(buckets.values()) == 30.0
    for _ in range(5):
        buckets = add_engagement(buckets, 1.0, "unsubscribe", -20.0, rules.engagement)
    assert buckets["unsubscribe"] == -40.0


def test_decayed_buckets_are_pruned(rules: Rules) -> None:
    buckets = add_engagement({"email_open": 1.0}, 1e-4, "page_view", 1.0, rules.engagement)
    assert buckets == {"page_view": 1.0}
