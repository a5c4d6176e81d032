"""What a challenger costs the worker: the same pre-published events through `leadflow worker`
alone and with `LEADFLOW_WORKER__CHALLENGER_RULES` (the shipped rules with a lower MQL
threshold), alternated, on the local broker.

Each run is timed from the moment the live worker (and the challenger, when there is one) owns
every partition until the live stage-change topic holds what replay predicts; with a challenger,
also until the challenger's topic holds what `replay --rules CHALLENGER` predicts. The ratio is
the live stream's throughput with the challenger to its throughput without, in the same command.
"""

from __future__ import annotations

import tempfile
import time
from importlib import resources
from pathlib import Path

import orjson

from bench.stream import _rerun, _settings
from streams.common.kafka_clients import create_topics
from streams.common.publish import publish_events
from streams.common.settings import DEFAULT_MAX_EVENT_BYTES, Settings, environment_of
from streams.core.lead import LeadStageChange
from streams.core.rules import Rules, load_rules
from streams.local.broker import LocalBroker
from streams.local.generator import generate
from streams.local.processes import TopicReader, WorkerProcess
from streams.offline.replay import Replayer
from streams.worker.processes import challenger_settings


def _changes(documents: list[dict[str, object]], rules: Rules) -> int:
    replayed = Replayer(rules, DEFAULT_MAX_EVENT_BYTES).run(orjson.dumps(d) for d in documents)
    return sum(1 for item in replayed if isinstance(item, LeadStageChange))


def _run(settings: Settings, workdir: Path, live: int, shadow: int | None) -> tuple[float, float]:
    """Seconds until the live changes, and until the challenger's (0 without one)."""
    topics, bootstrap = settings.topics, settings.kafka.bootstrap_servers
    readers = [TopicReader(bootstrap, topics.stage_changes, topics.partitions)]
    probes = [WorkerProcess(port=settings.worker.web_port)]
    if shadow is not None:
        readers.append(TopicReader(bootstrap, topics.challenger_stage_changes, topics.partitions))
        probes.append(WorkerProcess(port=challenger_settings(settings, 1).worker.web_port))
    supervisor = WorkerProcess(
        args=["worker", "--loglevel", "warning"],
        env=environment_of(settings),
        log_path=workdir / f"worker-{settings.worker.app_id}.log",
    ).start()
    everything = set(range(topics.partitions))
    try:
        deadline = time.monotonic() + 120
        while not all(
            set((probe.health() or {}).get("partitions", [])) == everything for probe in probes
        ):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the workers did not start (log: {supervisor.log_path})")
            time.sleep(0.1)
        started = time.perf_counter()
        wanted = [live] if shadow is None else [live, shadow]
        took = [0.0, 0.0]
        deadline = time.monotonic() + 600
        while not all(took[: len(wanted)]):
            for index, (reader, count) in enumerate(zip(readers, wanted, strict=True)):
                if not took[index] and len(reader.values()) >= count:
                    took[index] = time.perf_counter() - started
            if time.monotonic() > deadline:
                raise TimeoutError(f"not done within 600s (log: {supervisor.log_path})")
        return took[0], took[1]
    finally:
        supervisor.stop()
        for reader in readers:
            reader.close()


def main(quick: bool = False) -> None:
    leads = 1_000 if quick else 3_000
    documents = generate(leads, seed=9)
    workdir = Path(tempfile.mkdtemp(prefix="leadflow-bench-"))
    draft = workdir / "challenger.toml"
    text = resources.files("streams.core").joinpath("rules.toml").read_text()
    draft.write_text(text.replace("mql_threshold = 60.0", "mql_threshold = 50.0"))
    live, shadow = _changes(documents, load_rules()), _changes(documents, load_rules(draft))
    print(
        f"challenger: {len(documents):,} events of {leads:,} leads, local broker, one live "
        "worker with accounts, alone and with a challenger process, alternated"
    )
    with LocalBroker(log_path=workdir / "broker.log") as broker:
        base = _settings(broker.bootstrap_servers, workdir)
        create_topics(base)
        publish_events(documents, base)
        alone: list[float] = []
        beside: list[tuple[float, float]] = []
        for _ in range(1 if quick else 2):
            alone.append(_run(_rerun(base, accounts=True), workdir, live, None)[0])
            fresh = _rerun(base, accounts=True)
            fresh = fresh.model_copy(
                update={"worker": fresh.worker.model_copy(update={"challenger_rules": draft})}
            )
            beside.append(_run(fresh, workdir, live, shadow))
    without = len(documents) / min(alone)
    with_live = len(documents) / min(seconds for seconds, _ in beside)
    with_shadow = len(documents) / min(seconds for _, seconds in beside)
    print(f"  live worker alone                 {without:>8,.0f} events/s  (1.00)")
    print(
        f"  live worker beside a challenger   {with_live:>8,.0f} events/s  "
        f"({with_live / without:.2f} of alone)"
    )
    print(
        f"  the challenger itself             {with_shadow:>8,.0f} events/s  "
        f"({with_shadow / without:.2f} of the live worker alone)"
    )
