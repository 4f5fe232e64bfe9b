"""The package ships ``py.typed``: its annotations must hold under ``mypy --strict`` (settings in pyproject.toml)."""

from __future__ import annotations

import re

from conftest import MYPY


def test_mypy_strict_is_clean() -> None:
    # Started when this test was collected (conftest.MypyRun), so that it ran beside the other tests.
    status, out = MYPY.result()
    assert status == 0, f"mypy --strict (scripts/setup.sh installs python3-mypy):\n{out}"
    assert re.search(r"no issues found in [1-9][0-9]* source files", out), out
