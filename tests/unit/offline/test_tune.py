"""`leadflow tune`: it finds the generator's known truth, leaves the noise alone, refuses a log
with too few outcomes, and gives the same draft for the same log."""

from __future__ import annotations

import dataclasses
from importlib import resources
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from streams.common.event_order import lines_in_event_time_order
from streams.core.rules import load_rules, parse_rules
from streams.local.generator import TrafficShape, generate
from streams.offline.tune import (
    Evidence,
    Feature,
    LeadOutcome,
    TooLittleData,
    Tuned,
    _evidence,
    newcombe,
    tune,
)
from streams.offline.tune_terminal import print_tuned
from tests.support.command_line import leadflow

MAX_EVENT_BYTES = 1_000_000
RULES = load_rules()
RULES_TEXT = resources.files("streams.core").joinpath("rules.toml").read_text("utf-8")
WEBINAR = Feature("engagement.points", "webinar_attended")
CASE_STUDY = Feature("engagement.category_points", "case_study")


def truth_lines(leads: int, seed: int) -> list[bytes]:
    """The known-truth traffic, in event-time order (as the command reads it)."""
    lines = [orjson.dumps(e) for e in generate(leads, seed, TrafficShape(tune_truth=True))]
    with lines_in_event_time_order("test", lines, MAX_EVENT_BYTES, lambda _: None) as ordered:
        return [raw for _, raw in ordered]


@pytest.fixture(scope="module")
def truth() -> tuple[list[bytes], Tuned]:
    lines = truth_lines(2000, 7)
    return lines, tune(lines, RULES, RULES_TEXT, MAX_EVENT_BYTES)


def evidence_of(tuned: Tuned, feature: Feature) -> Evidence:
    return next(e for e in tuned.evidence if e.feature == feature)


def test_finds_the_behaviours_that_predict_conversion(truth: tuple[list[bytes], Tuned]) -> None:
    _, tuned = truth
    for feature, points in ((WEBINAR, 15), (CASE_STUDY, 10)):
        found = evidence_of(tuned, feature)
        assert found.verdict == "predicts"
        assert found.proposed is not None and found.proposed > points


def test_leaves_the_noise_alone(truth: tuple[list[bytes], Tuned]) -> None:
    _, tuned = truth
    for name in ("page_view", "social_engagement"):
        found = evidence_of(tuned, Feature("engagement.points", name))
        assert found.verdict == "noise"
        assert found.proposed is None
    assert {e.feature for e in tuned.changed} == {WEBINAR, CASE_STUDY}


def test_suggests_small_companies_for_no_budget(truth: tuple[list[bytes], Tuned]) -> None:
    _, tuned = truth
    found = [(s.reason, s.feature) for s in tuned.suggestions]
    assert found == [("no_budget", Feature("fit.company_size_points", "1"))]
    assert "# suggestion: no_budget:" in tuned.draft_toml


def test_the_draft_is_valid_rules_with_its_evidence(truth: tuple[list[bytes], Tuned]) -> None:
    _, tuned = truth
    draft = parse_rules(tuned.draft_toml.encode())
    assert draft.version == f"{RULES.version}-tuned"
    webinar = evidence_of(tuned, WEBINAR)
    assert draft.engagement.points["webinar_attended"] == webinar.proposed
    assert draft.engagement.category_points["case_study"] == evidence_of(tuned, CASE_STUDY).proposed
    # Everything else as it was: caps, thresholds, groups, the other points.
    assert draft.engagement.caps == RULES.engagement.caps
    assert draft.fit == RULES.fit
    assert f"webinar_attended = {webinar.proposed:g} # tuned 15 -> " in tuned.draft_toml


def test_the_held_out_comparison_is_printed(truth: tuple[list[bytes], Tuned]) -> None:
    _, tuned = truth
    assert tuned.live.auc is not None and tuned.draft.auc is not None
    assert tuned.draft.auc > tuned.live.auc
    console = Console(record=True, width=200)
    print_tuned(tuned, "draft.toml", "leadflow whatif --rules draft.toml events.jsonl", console)
    text = console.export_text()
    assert text.startswith("wrote draft.toml")
    assert "held-out cohorts" in text
    assert "next: leadflow whatif --rules draft.toml events.jsonl" in text


def test_a_worse_draft_is_announced_first(truth: tuple[list[bytes], Tuned]) -> None:
    _, tuned = truth
    worse = dataclasses.replace(tuned, worse=("AUC 0.500 < 0.600",))
    console = Console(record=True, width=200)
    print_tuned(worse, "draft.toml", "leadflow whatif --rules draft.toml x", console)
    first = console.export_text().splitlines()[0]
    assert first.startswith("WARNING: the draft does worse")
    assert "AUC 0.500 < 0.600" in first


def test_the_same_log_gives_the_same_draft_in_any_number_of_processes() -> None:
    lines = truth_lines(800, 3)
    once = tune(lines, RULES, RULES_TEXT, MAX_EVENT_BYTES)
    again = tune(list(lines), RULES, RULES_TEXT, MAX_EVENT_BYTES)
    assert once.draft_toml == again.draft_toml
    assert once == again
    assert tune(lines, RULES, RULES_TEXT, MAX_EVENT_BYTES, jobs=2) == once


def test_too_few_outcomes_are_refused() -> None:
    with pytest.raises(TooLittleData, match="too few outcomes to learn from"):
        tune(truth_lines(50, 1), RULES, RULES_TEXT, MAX_EVENT_BYTES)


def test_newcombe_matches_the_published_example() -> None:
    # Newcombe (1998), method 10: 56/70 against 48/80.
    difference, low, high = newcombe(56, 70, 48, 80, 1.959964)
    assert (round(difference, 4), round(low, 4), round(high, 4)) == (0.2, 0.0524, 0.3339)


def outcome(lead: int, converted: bool, features: frozenset[Feature]) -> LeadOutcome:
    return LeadOutcome(f"lead-{lead}", 0, "", converted, False, (), features, "2026-01")


@settings(max_examples=60, deadline=None)
@given(
    leads=st.integers(min_value=2, max_value=12),
    converted=st.integers(min_value=1, max_value=11),
    with_times=st.integers(min_value=2, max_value=8),
    without_times=st.integers(min_value=2, max_value=8),
)
def test_a_feature_independent_of_conversion_keeps_its_points(
    leads: int, converted: int, with_times: int, without_times: int
) -> None:
    converted = min(converted, leads - 1)
    learning = []
    for group, times in ((frozenset({WEBINAR}), with_times), (frozenset(), without_times)):
        for _ in range(times * 3):
            for lead in range(leads):
                learning.append(outcome(len(learning), lead < converted, group))
    evidence, _ = _evidence(learning, RULES)
    found = next(e for e in evidence if e.feature == WEBINAR)
    assert found.proposed is None
    assert found.verdict in ("noise", "too little data")


def test_the_command_writes_the_draft_and_refuses_to_overwrite(
    truth: tuple[list[bytes], Tuned], tmp_path: Path
) -> None:
    lines, tuned = truth
    log = tmp_path / "events.jsonl"
    log.write_bytes(b"\n".join(lines) + b"\n")
    draft = tmp_path / "draft.toml"
    result = leadflow("tune", str(log), "--out", str(draft), variables={})
    assert result.returncode == 0, result.stderr
    assert draft.read_text("utf-8") == tuned.draft_toml
    output = result.stdout.decode()
    assert output.startswith(f"wrote {draft}")
    assert f"leadflow whatif --rules {draft} {log}" in output
    again = leadflow("tune", str(log), "--out", str(draft), variables={})
    assert again.returncode == 1
    assert b"--force" in again.stderr


def test_the_command_refuses_a_log_with_too_few_outcomes(tmp_path: Path) -> None:
    small = leadflow("generate", "--leads", "50", "--seed", "1").stdout
    draft = tmp_path / "draft.toml"
    result = leadflow("tune", "-", "--out", str(draft), stdin=small, variables={})
    assert result.returncode == 1
    assert result.stderr.decode().count("\n") == 1
    assert "too few outcomes to learn from" in result.stderr.decode()
    assert not draft.exists()


def test_the_command_tunes_the_rules_it_is_given_and_prints_json(
    truth: tuple[list[bytes], Tuned], tmp_path: Path
) -> None:
    lines, tuned = truth
    log = tmp_path / "events.jsonl"
    log.write_bytes(b"\n".join(lines) + b"\n")
    live = tmp_path / "ours.toml"
    live.write_text(RULES_TEXT.replace(f'version = "{RULES.version}"', 'version = "ours.1"'))
    draft = tmp_path / "draft.toml"
    result = leadflow(
        "tune", str(log), "--live", str(live), "--out", str(draft), "--json", variables={}
    )
    assert result.returncode == 0, result.stderr
    document = orjson.loads(result.stdout)
    assert document["whatif"] == f"leadflow whatif --rules {draft} --live {live} {log}"
    assert parse_rules(draft.read_bytes()).version == "ours.1-tuned"
    changed = {
        (e["feature"]["table"], e["feature"]["name"])
        for e in document["tuned"]["evidence"]
        if e["proposed"] is not None
    }
    assert changed == {tuple(e.feature) for e in tuned.changed}
    assert result.stderr == b"", "the draft does no worse on the held-out cohorts"
