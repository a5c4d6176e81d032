"""`whatif --from-topic` (and `tune`'s) reads the events topic from its first offset: the same as
the same events from a file."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import orjson

from streams.local.generator import generate
from tests.support.command_line import leadflow
from tests.support.harness import Pipeline


def test_whatif_from_the_topic_equals_whatif_of_the_file(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    documents = list(generate(300, seed=8))
    log = tmp_path / "events.jsonl"
    log.write_bytes(b"".join(orjson.dumps(d) + b"\n" for d in documents))
    draft = tmp_path / "draft.toml"
    text = resources.files("streams.core").joinpath("rules.toml").read_text()
    draft.write_text(text.replace("mql_threshold = 60.0", "mql_threshold = 45.0"))
    env = pipeline.env()

    missing = leadflow("whatif", "--rules", str(draft), "--from-topic", variables=env)
    assert missing.returncode == 1
    assert b"does not exist" in missing.stderr and b"Traceback" not in missing.stderr

    assert pipeline.publish(documents) == len(documents)
    from_file = leadflow("whatif", "--rules", str(draft), str(log), "--json", variables=env)
    from_topic = leadflow("whatif", "--rules", str(draft), "--from-topic", "--json", variables=env)
    assert from_topic.returncode == 0, from_topic.stderr
    expected = orjson.loads(from_file.stdout)
    assert expected["kinds"], "the draft changes some leads"
    assert orjson.loads(from_topic.stdout) == expected
    tune_file = leadflow("tune", str(log), "--out", str(tmp_path / "a.toml"), variables=env)
    tune_topic = leadflow("tune", "--from-topic", "--out", str(tmp_path / "b.toml"), variables=env)
    # 300 leads hold too few outcomes to learn from: the same refusal, read either way.
    assert tune_topic.returncode == tune_file.returncode == 1
    assert tune_topic.stderr == tune_file.stderr
    assert b"too few outcomes to learn from" in tune_topic.stderr
