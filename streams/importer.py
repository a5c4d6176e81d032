"""`leadflow import`: load a history (one or more JSON-lines exports, any line order) into the
events topic, in event-time order, marked as history, resumable.

Every file is validated first: a file that is not JSON lines stops the import before anything is
sent, and invalid lines are reported (file and line) and never sent. The valid events of all
files are sorted together by event time (`event_order`), so the workers fold each lead's history
in the order it happened, as `leadflow replay` of the same files does. Each message carries the
history header. Events are sent in batches; after the broker acknowledged a whole batch, a
checkpoint records how far the sorted order got, so that the same import run again (after Ctrl-C
or a crash) resumes after what was acknowledged instead of sending it twice.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

import orjson

from streams.common.event_files import event_lines
from streams.common.event_order import (
    DEFAULT_RUN_BYTES,
    RejectedLine,
    SortedEvents,
    numbered,
    sorted_by_event_time,
)
from streams.common.events_codec import HISTORY_HEADERS
from streams.common.progress import terminal_progress
from streams.common.publish import make_producer, publish_events
from streams.common.settings import Settings
from streams.errors import LeadflowError

DEFAULT_CHECKPOINT_DIR = Path(".leadflow/import")
BATCH = 5_000
"""Events sent between two checkpoints."""


@dataclass
class ImportReport:
    """What an import read, sent and skipped."""

    files: int = 0
    lines: int = 0
    events: int = 0
    """Valid events in the files (copies of a repeated event included)."""
    rejected: int = 0
    resumed_after: int = 0
    """Events of the sorted order acknowledged by an earlier run of the same import."""
    sent: int = 0
    """Events the broker acknowledged in this run."""
    duplicates: int = 0
    """Exact copies of an event (same bytes) not sent again."""
    stopped_early: bool = False
    checkpoint: Path | None = None


class ImportFailedError(LeadflowError):
    """The broker did not take every event; the checkpoint says where a new run resumes."""


def import_history(
    files: Sequence[str],
    settings: Settings,
    on_rejected: Callable[[RejectedLine], None],
    checkpoint_dir: Path = DEFAULT_CHECKPOINT_DIR,
    restart: bool = False,
    stop_after: int | None = None,
    say: Callable[[str], None] = lambda _: None,
    run_bytes: int = DEFAULT_RUN_BYTES,
    jobs: int = 1,
) -> ImportReport:
    """Validate, sort and publish the events of `files` in event-time order, marked as history.

    `on_rejected` gets each invalid line (never sent). With `restart`, a checkpoint of the same
    input is ignored and everything is sent again. `stop_after` (for tests) stops once that many
    events were acknowledged in this run, as an interruption would. `jobs` processes validate
    the lines (the same events, in the same order, for any number). Raises ImportFailedError
    when the broker did not acknowledge every event, naming how many.
    """
    report = ImportReport(files=len(files))
    sizes = [_size(name) for name in files]
    total_bytes = None if None in sizes else sum(size or 0 for size in sizes)
    with ExitStack() as stack:
        # Every file is opened (and refused if it is not JSON lines) before anything is sent.
        opened = [stack.enter_context(event_lines(name)) for name in files]
        lines = chain.from_iterable(
            numbered(name, handle) for name, handle in zip(files, opened, strict=True)
        )
        with terminal_progress("reading", total_bytes, unit_is_bytes=True) as read_bar:
            events = stack.enter_context(
                sorted_by_event_time(
                    lines,
                    settings.max_event_bytes,
                    on_rejected,
                    run_bytes,
                    on_read=read_bar,
                    jobs=jobs,
                )
            )
        report.lines, report.events, report.rejected = events.lines, events.events, events.rejected
        checkpoint = Checkpoint.of(events, settings, checkpoint_dir)
        report.checkpoint = checkpoint.path
        if not events.events:
            return report  # nothing valid to send: no broker needed
        report.resumed_after = 0 if restart else checkpoint.acknowledged()
        if report.resumed_after:
            say(
                f"resuming after {report.resumed_after:,} of {events.events:,} events "
                f"(checkpoint {checkpoint.path}; --restart sends everything again)"
            )
        _send(events, settings, checkpoint, report, stop_after)
    return report


def _send(
    events: SortedEvents,
    settings: Settings,
    checkpoint: Checkpoint,
    report: ImportReport,
    stop_after: int | None,
) -> None:
    """Send the sorted events after the checkpoint, a batch at a time, each batch acknowledged
    before the checkpoint moves past it."""
    skip = report.resumed_after
    producer = make_producer(settings)
    try:
        with terminal_progress("importing", events.events - skip) as advance:
            batch: list[bytes] = []
            positions: list[int] = []
            previous: bytes | None = None
            for position, (_, raw) in enumerate(events):
                if position < skip:
                    previous = raw
                    continue
                if raw == previous:
                    report.duplicates += 1  # the core would ignore it: same event_id
                else:
                    batch.append(raw)
                    positions.append(position)
                previous = raw
                full = len(batch) >= BATCH
                stopping = stop_after is not None and report.sent + len(batch) >= stop_after
                if full or stopping:
                    _publish(batch, positions, position + 1, settings, producer, checkpoint, report)
                    advance(len(batch))
                    batch, positions = [], []
                    if stopping:
                        report.stopped_early = True
                        return
            _publish(batch, positions, events.events, settings, producer, checkpoint, report)
            advance(len(batch))
    finally:
        producer.close()


def _publish(
    batch: list[bytes],
    positions: list[int],
    done: int,
    settings: Settings,
    producer: Any,
    checkpoint: Checkpoint,
    report: ImportReport,
) -> None:
    """Publish one batch; once all of it is acknowledged, record `done` (the sorted events
    handled so far) in the checkpoint. Raises ImportFailedError when some were not."""
    if batch:
        sent = publish_events(batch, settings, producer, headers=HISTORY_HEADERS)
        report.sent += sent.sent
        failed = sorted(sent.failed + sent.rejected)
        if failed:
            first = failed[0][0]
            # Everything before the first failure was acknowledged: a new run resumes there.
            checkpoint.record(positions[first])
            raise ImportFailedError(
                f"{len(failed)} events not acknowledged by the broker ({failed[0][1]}); "
                f"{report.resumed_after + report.sent:,} sent so far: run the same import "
                f"again to resume after event {positions[first]:,} of the sorted order"
            )
    checkpoint.record(done)


@dataclass(frozen=True)
class Checkpoint:
    """How many events of one input's sorted order the broker acknowledged, in a small file
    named by what identifies that import: the input's content (any line order, any split into
    files) and where it goes (brokers and topic)."""

    path: Path
    events: int
    files: tuple[str, ...]

    @classmethod
    def of(cls, events: SortedEvents, settings: Settings, directory: Path) -> Checkpoint:
        identity = "\n".join(
            (events.fingerprint, settings.kafka.bootstrap_servers, settings.topics.events)
        )
        name = hashlib.sha256(identity.encode()).hexdigest()[:32]
        return cls(directory / f"{name}.json", events.events, tuple(events.sources))

    def acknowledged(self) -> int:
        """Events acknowledged by earlier runs (0 without a readable checkpoint)."""
        try:
            document = orjson.loads(self.path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return 0
        if not isinstance(document, dict) or document.get("events") != self.events:
            return 0
        done = document.get("acknowledged")
        return done if isinstance(done, int) and 0 <= done <= self.events else 0

    def record(self, acknowledged: int) -> None:
        """Write the checkpoint (atomically: a crash leaves the old one or the new one)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        document = {"acknowledged": acknowledged, "events": self.events, "files": self.files}
        partial = self.path.with_suffix(".partial")
        with partial.open("wb") as out:
            out.write(orjson.dumps(document, option=orjson.OPT_INDENT_2))
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, self.path)


def _size(name: str) -> int | None:
    if name == "-":
        return None
    try:
        return os.path.getsize(name)
    except OSError:
        return None  # event_lines says why it cannot be read


def describe(report: ImportReport, topic: str) -> Iterator[str]:
    """The summary lines of an import."""
    line = (
        f"imported {report.files} files ({report.lines:,} lines, {report.events:,} events, "
        f"{report.rejected:,} bad lines): {report.sent:,} events sent to {topic}"
    )
    if report.duplicates:
        line += f", {report.duplicates:,} exact duplicates not sent"
    if report.resumed_after:
        line += f", {report.resumed_after:,} already sent by an earlier run"
    yield line
