"""The projector under faults: kill -9 at random moments, quick kills, SIGTERM, no ClickHouse.

Every comparison is of whole views against the references computed from `replay`: the local
broker's high watermark can undercount, so no test trusts an offset count alone.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from streams.local.broker import free_port
from tests.integration.harness import Pipeline, env_with_path


def run_project(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams", "project", "--until-caught-up"],
        env=env_with_path(env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert done.returncode == 1, done.stderr
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


def test_a_clickhouse_server_that_does_not_answer_is_one_line_naming_the_setting(
    pipeline: Pipeline,
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    env = {**pipeline.projector_env("unreachable"), "LEADFLOW_CLICKHOUSE__URL": url}
    line = one_error_line(run_project(env))
    assert url in line and "LEADFLOW_CLICKHOUSE__URL" in line, line
    assert "Traceback" not in line


def test_a_chdb_path_held_by_another_process_is_one_line_naming_that_process(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    env = pipeline.projector_env("locked")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys\n"
            "from projections.clickhouse import connect\n"
            "from streams.common.settings import Settings\n"
            "client = connect(Settings().clickhouse)\n"
            "print('open', flush=True)\n"
            "sys.stdin.read()\n",
        ],
        env=env_with_path(env),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        line = one_error_line(run_project(env))
    finally:
        holder.kill()
        holder.wait()
    assert env["LEADFLOW_CLICKHOUSE__URL"] in line and "LEADFLOW_CLICKHOUSE__URL" in line, line
    assert f"process {holder.pid}" in line, line
