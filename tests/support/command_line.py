"""The `leadflow` console script, run as a user runs it: in a new process."""

from __future__ import annotations

import os
import subprocess
import sys

LEADFLOW = [sys.executable, "-m", "streams"]
"""The command line that runs the CLI of this checkout."""


def leadflow(
    *args: str, stdin: bytes | None = None, variables: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run the CLI; with `variables`, those are its only LEADFLOW_* variables."""
    environment = None
    if variables is not None:
        inherited = {k: v for k, v in os.environ.items() if not k.upper().startswith("LEADFLOW_")}
        environment = {**inherited, **variables}
    return subprocess.run(
        [*LEADFLOW, *args], input=stdin, env=environment, capture_output=True, timeout=120
    )
