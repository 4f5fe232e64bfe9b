"""The package ships ``py.typed``: its annotations must hold under ``mypy --strict`` (settings in pyproject.toml)."""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_mypy_strict_is_clean() -> None:
    with tempfile.TemporaryDirectory() as cache:
        run = subprocess.run(
            [sys.executable, "-m", "mypy", "--cache-dir", cache],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
    assert run.returncode == 0, f"mypy --strict (scripts/setup.sh installs python3-mypy):\n{run.stdout}{run.stderr}"
    assert re.search(r"no issues found in [1-9][0-9]* source files", run.stdout), run.stdout
