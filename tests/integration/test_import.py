"""`leadflow import`: exports split by object type, each in its own order, load into the pipeline
as `leadflow replay` of the same files says, marked as history, and an interrupted import resumes
without sending anything twice."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import orjson

from schemas.events import ENGAGEMENT_TYPES, PROFILE_TYPES
from streams.common.events_codec import HISTORY_HEADER
from streams.local.generator import generate
from tests.support.command_line import leadflow
from tests.support.harness import Pipeline, difference, effective
from tests.support.waiting import wait_for

LEADS = 300


def _kind(document: dict[str, Any]) -> str:
    if document["type"] in PROFILE_TYPES:
        return "profiles"
    return "engagement" if document["type"] in ENGAGEMENT_TYPES else "sales"


def test_an_interrupted_import_of_split_exports_resumes_and_equals_replay(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    shuffle = random.Random(29).shuffle
    documents = list(generate(LEADS, seed=29))
    exports: dict[str, list[bytes]] = {"profiles": [], "engagement": [], "sales": []}
    for document in documents:
        exports[_kind(document)].append(orjson.dumps(document) + b"\n")
    files = []
    for kind, lines in exports.items():
        shuffle(lines)
        path = tmp_path / f"{kind}.jsonl"
        path.write_bytes(b"".join(lines))
        files.append(str(path))
    # One bad line: reported with its file and line, never sent.
    Path(files[2]).write_bytes(Path(files[2]).read_bytes() + b'{"type": "deal_won"}\n')
    bad_line = len(exports["sales"]) + 1
    concatenated = tmp_path / "all.jsonl"
    concatenated.write_bytes(b"".join(Path(name).read_bytes() for name in files))
    env = pipeline.env()
    replayed = leadflow("replay", str(concatenated), variables=env)
    assert replayed.returncode == 0, replayed.stderr
    expected = effective(replayed.stdout.splitlines())
    assert len(expected) > 100
    unique_events = len({orjson.dumps(document) for document in documents})
    assert unique_events < len(documents), "the traffic repeats some events"

    worker = pipeline.worker().start()
    try:
        worker.wait_assigned()
        checkpoints = tmp_path / "checkpoints"
        common = ["--checkpoint-dir", str(checkpoints)]
        first = leadflow("import", *files, *common, "--stop-after", "500", variables=env)
        assert first.returncode == 0, first.stderr
        assert f"{files[2]}:{bad_line}: ".encode() in first.stderr
        assert b"stopped after 500 events" in first.stderr
        assert len(list(checkpoints.iterdir())) == 1
        events = pipeline.reader(pipeline.settings.topics.events)
        wait_for(events.poll, lambda read: len(read) >= 500, timeout=60, what="500 events")

        # The same input in another order of files is the same import: it resumes.
        second = leadflow("import", *reversed(files), *common, variables=env)
        assert second.returncode == 0, second.stderr
        assert b"resuming after " in second.stderr
        assert f"{unique_events - 500:,} events sent".encode() in second.stderr

        wait_for(
            events.poll,
            lambda read: len(read) >= unique_events,
            timeout=60,
            what="every event on the topic",
        )
        stage_changes = pipeline.reader(pipeline.settings.topics.stage_changes)
        wait_for(
            lambda: difference(effective(stage_changes.values()), expected),
            lambda diff: diff is None,
            timeout=180,
            what="the stage changes of the import to equal replay of the files",
        )
        messages = events.poll()
        assert len(messages) == unique_events, "nothing was sent twice"
        assert all((HISTORY_HEADER, b"1") in list(m.headers) for m in messages)

        # Run once more: everything was acknowledged, nothing is sent.
        third = leadflow("import", *files, *common, variables=env)
        assert third.returncode == 0, third.stderr
        assert b": 0 events sent" in third.stderr
    finally:
        worker.kill()
