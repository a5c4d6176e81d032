"""`leadflow demo`: the whole pipeline on this machine, with nothing to install or start by hand.

It starts the local broker, a worker and the projector (embedded ClickHouse), publishes generated
traffic in chunks, shows stage changes as they arrive, checks the stream against `leadflow replay`
of the same events, prints the funnel report from ClickHouse, writes the HTML report, and stops
everything it started.
"""

from __future__ import annotations

import secrets
import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
from pydantic import SecretStr
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from projections.clickhouse import connect, migrate, spool_inserts_into
from projections.projector import Projector
from projections.report import REPORT_VIEWS, print_report, read_funnel, write_html
from schemas.stage_changes import FUNNEL_STAGES
from streams.common.publish import make_producer, publish_events
from streams.common.settings import PrivacySettings, Settings, environment_of
from streams.common.spend import publish_spend, write_spend_csv
from streams.common.stage_changes_codec import encode_account_change, encode_change
from streams.core.account import AccountStageChange
from streams.core.lead import LeadStageChange
from streams.core.revisions import latest_revisions
from streams.core.rules import Rules
from streams.errors import LeadflowError
from streams.local.broker import FETCH_MAX_WAIT, LocalBroker, free_port
from streams.local.generator import generate
from streams.local.processes import NotReadyError, TopicReader, WorkerProcess
from streams.local.spend_traffic import generate_spend
from streams.offline.replay import Replayer, account_changes_in_effect

CHUNK = 1_000


def demo_settings(settings: Settings, bootstrap_servers: str, workdir: Path) -> Settings:
    """`settings` with what the demo owns replaced: its broker, directories and ports."""
    return settings.model_copy(
        update={
            "kafka": settings.kafka.model_copy(update={"bootstrap_servers": bootstrap_servers}),
            "worker": settings.worker.model_copy(
                update={
                    "data_dir": workdir / "worker",
                    "web_port": free_port(),
                    "fetch_max_wait": FETCH_MAX_WAIT,
                }
            ),
            "clickhouse": settings.clickhouse.model_copy(
                update={"url": f"chdb://{(workdir / 'clickhouse').resolve()}"}
            ),
            "projector": settings.projector.model_copy(
                update={"temp_dir": workdir / "projector-tmp"}
            ),
            # A fresh key per run: the demo's ClickHouse holds no lead id in clear.
            "privacy": PrivacySettings(hash_key=SecretStr(secrets.token_hex(16))),
        }
    )


@contextmanager
def local_pipeline(
    settings: Settings, workdir: Path, console: Console
) -> Iterator[tuple[Settings, WorkerProcess]]:
    """A broker and one worker, stopped on the way out whatever happens."""
    with LocalBroker(log_path=workdir / "broker.log") as broker:
        console.print(f"broker ready on {broker.bootstrap_servers} (log: {workdir}/broker.log)")
        settings = demo_settings(settings, broker.bootstrap_servers, workdir)
        worker = WorkerProcess(
            env=environment_of(settings),
            port=settings.worker.web_port,
            log_path=workdir / "worker.log",
        ).start()
        try:
            started = time.monotonic()
            partitions = worker.wait_assigned(timeout=90)
            console.print(
                f"worker ready in {time.monotonic() - started:.1f}s, owns partitions {partitions} "
                f"(metrics: http://127.0.0.1:{worker.port}/metrics)"
            )
            yield settings, worker
        finally:
            worker.stop()
            console.print("worker stopped")
    console.print("broker stopped")


def run_demo(
    settings: Settings, rules: Rules, leads: int, seed: int, workdir: Path, console: Console
) -> bool:
    """Run the demo; return whether the stream equalled the offline replay."""
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    documents = generate(leads, seed)
    replayer = Replayer(rules, settings.max_event_bytes, accounts=True)
    replayed = list(replayer.run(orjson.dumps(d) for d in documents))
    expected = _effective(
        encode_change(item) for item in replayed if isinstance(item, LeadStageChange)
    )
    expected_accounts = account_changes_in_effect(
        orjson.loads(encode_account_change(item))
        for item in replayed
        if isinstance(item, AccountStageChange)
    )
    spend = list(generate_spend(documents, seed))
    # The spend as an ad platform exports it: `leadflow spend import` takes this file as it is.
    with (workdir / "spend.csv").open("w", encoding="utf-8", newline="") as handle:
        write_spend_csv(spend, handle)
    console.print(
        f"generated {len(documents):,} events of {leads:,} leads (seed {seed}) and "
        f"{len(spend):,} days of campaign spend"
    )
    with (
        local_pipeline(settings, workdir, console) as (settings, _worker),
        _projector(settings) as projector,
    ):
        reader = TopicReader(
            settings.kafka.bootstrap_servers,
            settings.topics.stage_changes,
            settings.topics.partitions,
        )
        producer = make_producer(settings)
        spent = publish_spend(enumerate(spend), settings, producer=producer)
        if spent.failed:
            raise LeadflowError(
                f"the broker did not take {len(spent.failed)} of the demo's spend records "
                f"({spent.failed[0][1]})"
            )
        published = 0
        started = time.monotonic()
        with Live(console=console, refresh_per_second=4) as live:
            while True:
                if published < len(documents):
                    chunk = documents[published : published + CHUNK]
                    sending = publish_events(chunk, settings, producer=producer)
                    if sending.failed:
                        position, reason = sending.failed[0]
                        raise LeadflowError(
                            f"the broker did not take {len(sending.failed)} of the demo's "
                            f"events (the first, {published + position + 1}: {reason})"
                        )
                    published += len(chunk)
                values = reader.values()
                found = _effective(values)
                live.update(_progress(published, len(documents), values, found, len(expected)))
                if published == len(documents) and found.keys() >= expected.keys():
                    break
                if time.monotonic() - started > 300:
                    console.print("[red]gave up waiting after 300s[/red]")
                    break
        elapsed = time.monotonic() - started
        console.print()
        producer.close()
        reader.close()
        accounts, account_messages = _account_changes(settings, len(expected_accounts))
        _wait_projected(projector, len(values), len(documents), account_messages, len(spend))
    same = _comparable(found) == _comparable(expected)
    console.print(
        f"{len(documents):,} events -> {len(values):,} stage-change messages in {elapsed:.1f}s "
        f"({len(documents) / elapsed:,.0f} events/s end to end)"
    )
    console.print(
        "stream equals `leadflow replay` of the same events: "
        + ("[green]yes[/green]" if same else "[red]NO[/red]")
    )
    same_accounts = accounts == expected_accounts
    stages = Counter(str(change["to_stage"]) for change in accounts.values())
    console.print(
        f"{len(accounts):,} account changes in effect ({stages['engaged']:,} engaged, "
        f"{stages['sales_ready']:,} sales_ready, {stages['customer']:,} customer); equal to "
        "`leadflow replay --accounts`: "
        + ("[green]yes[/green]" if same_accounts else "[red]NO[/red]")
    )
    same = same and same_accounts
    metrics = read_funnel(projector.client, settings.clickhouse.database, REPORT_VIEWS)
    print_report(metrics, console)
    page = workdir / "funnel.html"
    write_html(metrics, page)
    console.print(f"HTML report: {page.resolve()}")
    return same


def _account_changes(settings: Settings, expected: int) -> tuple[dict[str, dict[str, Any]], int]:
    """The account changes in effect once as many as expected are in (or after 60 s), and how
    many messages the topic held then."""
    reader = TopicReader(
        settings.kafka.bootstrap_servers,
        settings.topics.account_changes,
        settings.topics.partitions,
    )
    deadline = time.monotonic() + 60
    try:
        while True:
            values = reader.values()
            found = account_changes_in_effect(orjson.loads(v) for v in values)
            if len(found) >= expected or time.monotonic() > deadline:
                return found, len(values)
            time.sleep(0.2)
    finally:
        reader.close()


class _RunningProjector:
    def __init__(self, settings: Settings) -> None:
        spool_inserts_into(settings.projector.temp_dir)
        self.client = connect(settings.clickhouse)
        migrate(self.client, settings.clickhouse.database)
        self.projector = Projector(settings, self.client)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.projector.run, args=(self.stop,), daemon=True)


@contextmanager
def _projector(settings: Settings) -> Iterator[_RunningProjector]:
    """The projector in a thread of this process, so the report can read the same embedded
    ClickHouse afterwards (one process per embedded data directory)."""
    running = _RunningProjector(settings)
    running.thread.start()
    try:
        yield running
    finally:
        running.stop.set()
        running.thread.join(timeout=60)


def _wait_projected(
    running: _RunningProjector,
    stage_changes: int,
    events: int,
    account_changes: int,
    spend: int,
) -> None:
    deadline = time.monotonic() + 120
    stats = running.projector.stats
    while (
        stats.stage_changes < stage_changes
        or stats.events < events
        or stats.account_changes < account_changes
        or stats.spend < spend
    ):
        if time.monotonic() > deadline or not running.thread.is_alive():
            raise NotReadyError(
                f"the projector wrote {stats.stage_changes}/{stage_changes} stage changes, "
                f"{stats.events}/{events} events, {stats.account_changes}/{account_changes} "
                f"account changes and {stats.spend}/{spend} spend records"
            )
        time.sleep(0.1)


def _effective(values: Iterable[bytes]) -> dict[str, dict[str, Any]]:
    return latest_revisions(
        (orjson.loads(value) for value in values),
        lambda change: (change["change_id"], change["revision"]),
    )


def _comparable(changes: dict[str, dict[str, object]]) -> dict[str, tuple[object, ...]]:
    return {
        cid: (c["to_stage"], c["causation_event_id"], c["rule"], c["revision"], c["retracted"])
        for cid, c in changes.items()
    }


def _progress(
    published: int,
    total: int,
    values: list[bytes],
    found: dict[str, dict[str, object]],
    expected: int,
) -> Group:
    current: dict[str, tuple[int, str]] = {}
    for change in found.values():
        if change["retracted"]:
            continue
        lead = str(change["lead_id"])
        sequence = int(change["sequence"])  # type: ignore[call-overload]
        if lead not in current or sequence > current[lead][0]:
            current[lead] = (sequence, str(change["to_stage"]))
    stages = Counter(stage for _, stage in current.values())
    funnel = Table(title="leads by current stage", min_width=40)
    funnel.add_column("stage")
    funnel.add_column("leads", justify="right")
    for stage in (*FUNNEL_STAGES, "disqualified"):
        funnel.add_row(stage, f"{stages.get(stage, 0):,}")
    recent = Table(title="latest stage changes")
    for column in ("lead", "change", "rule"):
        recent.add_column(column)
    for value in values[-6:]:
        change = orjson.loads(value)
        recent.add_row(
            change["lead_id"],
            f"{change['from_stage'] or '-'} -> {change['to_stage']}",
            change["rule"] + (" (retracted)" if change["retracted"] else ""),
        )
    header = Table.grid()
    header.add_row(
        f"published {published:,}/{total:,} events; received {len(values):,} stage-change "
        f"messages, {len(found):,}/{expected:,} distinct changes"
    )
    return Group(header, funnel, recent)
