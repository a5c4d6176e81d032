"""Real processes for integration tests: workers as subprocesses, topic readers, unique names."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaProducer

from projections.report import ACCOUNT_VIEWS, ATTRIBUTION_VIEWS, MONEY_VIEWS
from streams.common.account_signals_codec import encode_account_signal
from streams.common.settings import DEFAULT_MAX_EVENT_BYTES, Settings
from streams.common.stage_changes_codec import encode_account_change
from streams.core.account import AccountStageChange, Signal
from streams.core.revisions import latest_revisions
from streams.core.rules import Rules
from streams.local.broker import FETCH_MAX_WAIT, free_ports
from streams.local.processes import LeadflowProcess, TopicReader, WorkerProcess, scrape_metrics
from streams.offline.replay import Replayer
from tests.support.account_records import AccountLog
from tests.support.funnel_reference import normalised


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass
class Pipeline:
    """One test's pipeline: its own topics and consumer group on the shared broker."""

    bootstrap_servers: str
    workdir: Path
    partitions: int = 4
    name: str = field(default_factory=lambda: unique("lf"))
    readers: list[TopicReader] = field(default_factory=list)

    def env(self, **extra: str) -> dict[str, str]:
        """LEADFLOW_* variables for a process of this pipeline."""
        return {
            "LEADFLOW_KAFKA__BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "LEADFLOW_TOPICS__EVENTS": f"{self.name}.events",
            "LEADFLOW_TOPICS__STAGE_CHANGES": f"{self.name}.stage-changes",
            "LEADFLOW_TOPICS__DEAD_LETTER": f"{self.name}.dead-letter",
            "LEADFLOW_TOPICS__ACCOUNT_SIGNALS": f"{self.name}.account-signals",
            "LEADFLOW_TOPICS__ACCOUNT_CHANGES": f"{self.name}.account-changes",
            "LEADFLOW_TOPICS__HANDOFF": f"{self.name}.handoff",
            "LEADFLOW_TOPICS__SPEND": f"{self.name}.spend",
            "LEADFLOW_TOPICS__CHALLENGER_STAGE_CHANGES": f"{self.name}.challenger-stage-changes",
            "LEADFLOW_TOPICS__IDENTITY_SUMMARIES": f"{self.name}.identity-summaries",
            "LEADFLOW_TOPICS__CHALLENGER_IDENTITY_SUMMARIES": (
                f"{self.name}.challenger-identity-summaries"
            ),
            "LEADFLOW_TOPICS__PARTITIONS": str(self.partitions),
            "LEADFLOW_WORKER__APP_ID": self.name,
            "LEADFLOW_WORKER__FETCH_MAX_WAIT": str(FETCH_MAX_WAIT),
            **extra,
        }

    @property
    def settings(self) -> Settings:
        return settings_from(self.env())

    def worker(self, label: str = "a", store: str = "rocksdb") -> WorkerProcess:
        data_dir = self.workdir / f"worker-{label}"
        # Room for `--processes 2` and a challenger beside them (web_port + n).
        port = free_ports(3)
        env = self.env(
            LEADFLOW_WORKER__DATA_DIR=str(data_dir),
            LEADFLOW_WORKER__WEB_PORT=str(port),
            LEADFLOW_WORKER__STORE=store,
        )
        return WorkerProcess(env=env, port=port, log_path=self.workdir / f"worker-{label}.log")

    def projector_env(self, label: str, handoffs: bool = False, **extra: str) -> dict[str, str]:
        """Settings of a projector with its own consumer group and embedded ClickHouse. Unless
        `handoffs`, it reads a handoff topic no worker writes: the worker's clock publishes
        due-soon and breached steps when deadlines come, which a reference computed from the
        traffic alone cannot foresee (the handoff projection has tests of its own)."""
        if not handoffs:
            extra = {"LEADFLOW_TOPICS__HANDOFF": f"{self.name}.handoff-unwritten", **extra}
        return self.env(
            LEADFLOW_CLICKHOUSE__URL=f"chdb://{self.workdir / f'clickhouse-{label}'}",
            LEADFLOW_PROJECTOR__GROUP_ID=f"{self.name}-projector-{label}",
            LEADFLOW_PROJECTOR__TEMP_DIR=str(self.workdir / f"projector-tmp-{label}"),
            LEADFLOW_PRIVACY__HASH_KEY="integration-test-key",
            **extra,
        )

    def command(self, args: list[str], env: dict[str, str], log: str) -> LeadflowProcess:
        """Any `leadflow` command as a process of this pipeline (not started)."""
        return LeadflowProcess(args=args, env=env, log_path=self.workdir / f"{log}.log")

    def publish(self, documents: Iterable[dict[str, Any]]) -> int:
        from streams.common.publish import publish_events

        report = publish_events(documents, self.settings)
        assert report.rejected == []
        assert report.failed == []
        return report.sent

    def reader(self, topic: str) -> TopicReader:
        reader = TopicReader(self.bootstrap_servers, topic, self.partitions)
        self.readers.append(reader)
        return reader

    def close(self) -> None:
        for reader in self.readers:
            reader.close()


def settings_from(env: dict[str, str]) -> Settings:
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        return Settings()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def replay_bytes(documents: list[dict[str, Any]], rules: Rules) -> list[bytes]:
    """What `leadflow replay` prints for these events, as the encoded stage changes."""
    from streams.common.stage_changes_codec import encode_change
    from streams.core.lead import LeadStageChange

    return [
        encode_change(item)
        for item in Replayer(rules, DEFAULT_MAX_EVENT_BYTES).run(orjson.dumps(d) for d in documents)
        if isinstance(item, LeadStageChange)
    ]


def replay_accounts(documents: list[dict[str, Any]], rules: Rules) -> dict[str, bytes]:
    """The effective account changes of `leadflow replay --accounts` for these events."""
    from streams.common.stage_changes_codec import encode_account_change
    from streams.core.account import AccountStageChange

    return effective_accounts(
        encode_account_change(item)
        for item in Replayer(rules, DEFAULT_MAX_EVENT_BYTES, accounts=True).run(
            orjson.dumps(d) for d in documents
        )
        if isinstance(item, AccountStageChange)
    )


def replay_signals(documents: list[dict[str, Any]], rules: Rules) -> set[bytes]:
    """The account signals the lead side sends for these events, as their bytes."""
    from streams.common.account_signals_codec import encode_account_signal
    from streams.core.account import Signal

    return {
        encode_account_signal(item)
        for item in Replayer(rules, DEFAULT_MAX_EVENT_BYTES, accounts=True).run(
            orjson.dumps(d) for d in documents
        )
        if isinstance(item, Signal)
    }


def difference(
    found: dict[str, bytes], expected: dict[str, bytes], owner: str = "lead_id"
) -> str | None:
    """None when equal, else a short account of what differs (for timeout messages)."""
    if found == expected:
        return None
    missing = expected.keys() - found.keys()
    extra = found.keys() - expected.keys()
    changed = [cid for cid in expected.keys() & found.keys() if found[cid] != expected[cid]]
    owners = sorted(
        {
            orjson.loads(expected.get(cid) or found[cid])[owner]
            for cid in [*missing, *extra, *changed]
        }
    )
    example = ""
    if changed:
        cid = changed[0]
        example = f"; e.g. expected {expected[cid]!r}, found {found[cid]!r}"
    return (
        f"{len(missing)} missing, {len(extra)} unexpected, {len(changed)} different "
        f"change_ids, of {len(owners)} {owner}s (e.g. {owners[:3]}){example}"
    )


def effective(values: Iterable[bytes]) -> dict[str, bytes]:
    """The latest revision of each change_id, as its bytes (retracted ones included)."""
    decoded = ((orjson.loads(value), value) for value in values)
    latest = latest_revisions(decoded, lambda pair: (pair[0]["change_id"], pair[0]["revision"]))
    return {change_id: value for change_id, (_, value) in latest.items()}


def in_effect(values: Iterable[bytes]) -> dict[str, bytes]:
    """The stage changes consumers keep (latest revision, retracted ones left out), without
    the revision: it stamps the order in which a lead's events and its linked identities'
    summaries met, which routing through topics makes differ from replay's."""
    decoded = [orjson.loads(value) for value in values]
    latest = latest_revisions(decoded, lambda change: (change["change_id"], change["revision"]))
    return {
        change_id: orjson.dumps({**change, "revision": 0})
        for change_id, change in latest.items()
        if not change["retracted"]
    }


def effective_accounts(values: Iterable[bytes]) -> dict[str, bytes]:
    """The account changes in effect (see `account_changes_in_effect`), as bytes."""
    from streams.offline.replay import account_changes_in_effect

    in_effect = account_changes_in_effect(orjson.loads(value) for value in values)
    return {change_id: orjson.dumps(change) for change_id, change in in_effect.items()}


def raw_producer(bootstrap_servers: str) -> KafkaProducer:
    return KafkaProducer(
        bootstrap_servers=bootstrap_servers, acks="all", max_request_size=16 * 1024 * 1024
    )


def report(env: dict[str, str], links: bool = False) -> dict[str, list[dict[str, Any]]]:
    """`leadflow report --json` in its own process (the embedded engine is one per process),
    without the identity views; unless `links`, checked to say that no visitor was linked."""
    done = subprocess.run(
        [sys.executable, "-m", "streams", "report", "--json"],
        env=env_with_path(env),
        capture_output=True,
        timeout=120,
        check=True,
    )
    found: dict[str, list[dict[str, Any]]] = orjson.loads(done.stdout)
    # test_projections.py checks the identity views; the references here have none.
    for view in MONEY_VIEWS:  # test_money.py checks them; these references have no spend
        found.pop(view)
    for view in ATTRIBUTION_VIEWS:  # test_attribution.py checks them (windows against now())
        found.pop(view)
    stitching = found.pop("identity_stitching")
    daily = found.pop("identity_links_daily")
    if not links:
        assert [row["links"] for row in stitching] == [0] and daily == []
    return normalised(found)


def env_with_path(env: dict[str, str]) -> dict[str, str]:
    """This process's environment with `env` on top (for a subprocess)."""
    return {**os.environ, **env}


def replayed_account_records(traffic: list[dict[str, Any]], rules: Rules) -> AccountLog:
    """The account records `replay` gives for these events, as their bytes."""
    replayed = AccountLog()
    for item in Replayer(rules, DEFAULT_MAX_EVENT_BYTES, accounts=True).run(
        orjson.dumps(d) for d in traffic
    ):
        if isinstance(item, Signal):
            replayed.signals.append(encode_account_signal(item))
        elif isinstance(item, AccountStageChange):
            replayed.changes.append(encode_account_change(item))
    return replayed


def account_views(metrics: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """Only the account views of a report."""
    return {view: metrics[view] for view in ACCOUNT_VIEWS}


def projected_rows(port: int) -> float:
    """Rows a projector with its metrics on `port` has written so far (0 until it serves them)."""
    try:
        samples = scrape_metrics(port)
    except OSError:
        return 0.0
    return sum(v for k, v in samples.items() if k.startswith("leadflow_projector_rows_total"))
