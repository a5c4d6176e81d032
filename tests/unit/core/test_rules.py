from importlib import resources
from pathlib import Path

import pytest

from streams.core.rules import load_rules, parse_rules
from streams.errors import RulesError

DEFAULT = resources.files("streams.core").joinpath("rules.toml").read_text()


def test_default_rules_load_and_cite_version_with_digest() -> None:
    rules = load_rules()
    assert rules.version == "2026.12.7"
    version, _, digest = rules.rules_version.partition("+")
    assert version == rules.version and len(digest) == 8


def test_an_unversioned_edit_still_changes_the_rules_version() -> None:
    edited = DEFAULT.replace("mql_threshold = 60.0", "mql_threshold = 55.0")
    assert parse_rules(edited.encode()).rules_version != load_rules().rules_version


def test_rules_file_option_reads_the_given_file(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(DEFAULT.replace('version = "2026.12.7"', 'version = "test-1"'))
    assert load_rules(path).version == "test-1"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            ("[engagement.points]", "[engagement.points]\npage_veiw = 3"),
            "engagement.points: Value error, unknown engagement event type: page_veiw",
        ),
        (
            ("half_life_days = 30.0", "half_life_days = 0"),
            "engagement.half_life_days: Input should be greater than 0",
        ),
        (
            ("lead_threshold = 25", "lead_threshold = 25\nlead_treshold = 3"),
            "fit.lead_treshold: Extra inputs are not permitted",
        ),
        (
            (
                'high_intent_event_types = ["demo_request"',
                'high_intent_event_types = ["demo_requested"',
            ),
            "lifecycle.high_intent_event_types: Value error, unknown event type: demo_requested",
        ),
        (('ceo = "c_level"', 'ceo = "emperor"'), "fit: Value error, unknown seniority: emperor"),
        (
            ('"Email Bounced" = "email_bounced"', '"Deal Won" = "deal_won"'),
            "collector.track_events: Value error, sales event types cannot come from a tracker "
            "('Deal Won' -> deal_won)",
        ),
        (
            (
                'student_title_keywords = ["student"',
                'student_title_keywords = ["full time phd student"',
            ),
            "at most 3 words: full time phd student",
        ),
        (
            ("\nUS = 5\n", "\nNarnia = 5\n"),
            "fit.country_points: Value error, 'Narnia' is not a country",
        ),
    ],
)
def test_invalid_rules_fail_at_load_naming_the_key(edit: tuple[str, str], message: str) -> None:
    old, new = edit
    assert old in DEFAULT
    with pytest.raises(RulesError) as failure:
        parse_rules(DEFAULT.replace(old, new, 1).encode(), "my-rules.toml")
    assert str(failure.value).startswith("my-rules.toml: invalid rules: ")
    assert message in str(failure.value)


def test_not_toml_is_reported_as_such() -> None:
    with pytest.raises(RulesError, match=r"my\.toml: not valid TOML"):
        parse_rules(b"version = ", "my.toml")


def test_missing_rules_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="cannot read rules file"):
        load_rules(tmp_path / "nope.toml")


PATTERN = """[[intent_patterns]]
id = "pricing_research"
event_types = ["pricing_page_view"]
content_categories = ["pricing_guide"]
count = 3
within_days = 7.0
"""


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            ('event_types = ["pricing_page_view"]', 'event_types = ["pricing_view"]'),
            "intent_patterns.0.event_types: Value error, unknown engagement event type: "
            "pricing_view",
        ),
        (
            ('event_types = ["pricing_page_view"]\ncontent_categories = ["pricing_guide"]', ""),
            "intent_patterns.0: Value error, name event_types or content_categories",
        ),
        (("count = 3", "count = 1"), "intent_patterns.0.count: Input should be greater than"),
        (('id = "pricing_research"', 'id = "Pricing Research"'), "intent_patterns.0.id"),
        (
            ("within_days = 7.0\n", "within_days = 7.0\n\n" + PATTERN),
            "intent_patterns: ids used twice: pricing_research",
        ),
    ],
)
def test_invalid_intent_patterns_fail_at_load_naming_the_key(
    edit: tuple[str, str], message: str
) -> None:
    assert PATTERN in DEFAULT
    old, new = edit
    edited = DEFAULT.replace(PATTERN, PATTERN.replace(old, new, 1), 1)
    with pytest.raises(RulesError) as failure:
        parse_rules(edited.encode(), "my-rules.toml")
    assert message in str(failure.value)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            ('types = ["page_view", "social_engagement"]', 'types = ["page_view", "email_open"]'),
            "engagement: Value error, type email_open is in two groups: email and web",
        ),
        (
            ('types = ["page_view", "social_engagement"]', 'types = ["page_views"]'),
            "engagement.groups.web.types: Value error, unknown engagement event type: page_views",
        ),
        (('types = ["page_view", "social_engagement"]', "types = []"), "groups.web.types"),
        (("cap = 15\n", "cap = -1\n"), "engagement.groups.web.cap: Input should be greater"),
        (
            ("total_cap = 100.0", "total_cap = 50.0"),
            "engagement: Value error, total_cap 50 is below mql_threshold 60",
        ),
        (
            ('facts = ["seniority", "title_keyword"]', 'facts = ["seniority", "title"]'),
            "fit.groups.role.facts: Value error, unknown fit fact: title",
        ),
    ],
)
def test_invalid_score_groups_fail_at_load_naming_the_key(
    edit: tuple[str, str], message: str
) -> None:
    old, new = edit
    assert old in DEFAULT
    with pytest.raises(RulesError) as failure:
        parse_rules(DEFAULT.replace(old, new, 1).encode(), "my-rules.toml")
    assert message in str(failure.value)


GRADE = 'fit_bands = [{ grade = "A", min = 50 }, { grade = "B", min = 25 }, { grade = "C" }]'


@pytest.mark.parametrize(
    ("bands", "message"),
    [
        (
            'fit_bands = [{ grade = "A", min = 50 }, { grade = "B", min = 25 }]',
            "grade.fit_bands: Value error, every band but the last needs a min",
        ),
        (
            'fit_bands = [{ grade = "A", min = 25 }, { grade = "B", min = 50 }, { grade = "C" }]',
            "grade.fit_bands: Value error, bands go from the highest min down",
        ),
        (
            'fit_bands = [{ grade = "A", min = 50 }, { grade = "A" }]',
            "grade.fit_bands: Value error, a grade is named twice: A, A",
        ),
        ("fit_bands = []", "grade.fit_bands: Tuple should have at least 1 item"),
        ('fit_bands = [{ grade = "A and more" }]', "grade.fit_bands.0.grade: String should match"),
    ],
)
def test_invalid_grade_bands_fail_at_load_naming_the_key(bands: str, message: str) -> None:
    assert GRADE in DEFAULT
    with pytest.raises(RulesError) as failure:
        parse_rules(DEFAULT.replace(GRADE, bands, 1).encode(), "my-rules.toml")
    assert message in str(failure.value)


def test_rules_without_a_grade_section_give_no_grade() -> None:
    start = DEFAULT.index("[grade]")
    end = DEFAULT.index("[accounts]")
    assert parse_rules((DEFAULT[:start] + DEFAULT[end:]).encode()).grade is None


def test_country_points_are_read_as_the_codes_events_carry() -> None:
    # Events carry ISO alpha-2 codes: a key written another way would never score.
    edited = DEFAULT.replace("\nUS = 5\n", '\n"United States" = 5\n', 1).replace(
        "\nGB = 5\n", "\nuk = 4\n", 1
    )
    points = parse_rules(edited.encode()).fit.country_points
    assert points["US"] == 5 and points["GB"] == 4
