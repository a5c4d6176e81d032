"""Challenger rules in the worker: a shadow process scores every event with a second rules
file and publishes to its own topic only; the live stream is as it would be without it."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from kafka import KafkaProducer

from streams.core.rules import Rules, load_rules
from streams.local.generator import TrafficShape, generate
from streams.local.processes import WorkerProcess as Worker
from streams.worker.processes import challenger_settings
from tests.support.funnel_reference import champion_challenger, normalised
from tests.support.harness import (
    Pipeline,
    difference,
    in_effect,
    replay_bytes,
    report,
    settings_from,
)
from tests.support.waiting import wait_for


def test_a_challenger_publishes_its_own_changes_and_leaves_the_live_stream_alone(
    pipeline: Pipeline, rules: Rules, tmp_path: Path
) -> None:
    # Some people browse anonymously first: the challenger stitches them as the live worker does
    # (compared in effect: a revision stamps when a summary met its lead's events, see in_effect).
    traffic = generate(400, seed=43, shape=TrafficShape(anonymous_browsing=0.6))
    draft = tmp_path / "challenger.toml"
    text = resources.files("streams.core").joinpath("rules.toml").read_text()
    draft.write_text(text.replace("mql_threshold = 60.0", "mql_threshold = 45.0"))
    challenger = load_rules(draft)
    live_expected = in_effect(replay_bytes(traffic, rules))
    shadow_expected = in_effect(replay_bytes(traffic, challenger))
    assert live_expected.keys() != shadow_expected.keys(), "the challenger decides otherwise"

    one = pipeline.worker()
    env = {**one.env, "LEADFLOW_WORKER__CHALLENGER_RULES": str(draft)}
    supervisor = pipeline.command(["worker", "--loglevel", "info"], env, "supervisor").start()
    shadow_port = challenger_settings(settings_from(env), 1).worker.web_port
    probes = [one, Worker(port=shadow_port, log_path=one.log_path)]
    try:
        wait_for(
            lambda: [set((probe.health() or {}).get("partitions", [])) for probe in probes],
            lambda owned: all(partitions == {0, 1, 2, 3} for partitions in owned),
            timeout=90,
            what="the live worker and the challenger to own every partition, each in its group",
        )
        pipeline.publish(traffic)
        producer = KafkaProducer(bootstrap_servers=pipeline.bootstrap_servers)
        producer.send(pipeline.settings.topics.events, key=b"lead-x", value=b"not json").get(30)
        producer.close()
        topics = pipeline.settings.topics
        live = pipeline.reader(topics.stage_changes)
        shadow = pipeline.reader(topics.challenger_stage_changes)
        wait_for(
            lambda: difference(in_effect(shadow.values()), shadow_expected),
            lambda diff: diff is None,
            timeout=180,
            what="the challenger's stage changes to equal replay --rules CHALLENGER",
        )
        wait_for(
            lambda: difference(in_effect(live.values()), live_expected),
            lambda diff: diff is None,
            timeout=120,
            what="the live stage changes to equal replay with the live rules",
        )
        assert {orjson_rules_version(v) for v in shadow.values()} == {challenger.rules_version}
        wait_for(
            lambda: probes[1].metrics().get('leadflow_dead_letters_total{kind="invalid_event"}'),
            lambda counted: counted == 1,
            timeout=30,
            what="the challenger to count the bad message",
        )
        # Counted by both, published by the live worker alone.
        assert probes[0].metrics().get('leadflow_dead_letters_total{kind="invalid_event"}') == 1
        dead = pipeline.reader(topics.dead_letter)
        wait_for(dead.values, lambda values: len(values) >= 1, timeout=30, what="a dead letter")
        assert dead.values() == [b"not json"]
    finally:
        supervisor.stop(timeout=60)
    assert supervisor.process is not None and supervisor.process.returncode == 0

    # The projector stores the challenger's changes apart, and the view compares both.
    env = pipeline.projector_env("challenger")
    projector = pipeline.command(["project", "--until-caught-up"], env, "projector")
    assert projector.start().wait(timeout=180) == 0
    expected = champion_challenger(live_expected.values(), shadow_expected.values())
    assert expected[0]["side"] == "challenger" and expected[0]["mqls"] > expected[1]["mqls"]
    assert (
        report(env, links=True)["champion_challenger"]
        == normalised({"champion_challenger": expected})["champion_challenger"]
    )


def orjson_rules_version(value: bytes) -> str:
    import orjson

    version: str = orjson.loads(value)["rules_version"]
    return version
