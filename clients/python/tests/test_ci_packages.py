"""CI must run the torch tests, not skip them: they skip where torch is not installed (pytest.importorskip), which
a notebook user may well lack, so under CI (CI=true, where scripts/setup.sh installs python3-torch) torch must import.
The same guard as tests/ci_adapter_test.ts for the WebGPU tests."""

from __future__ import annotations

import importlib
import os

import pytest


@pytest.mark.skipif(not os.environ.get("CI"), reason="only CI promises every optional package")
def test_ci_has_torch_for_the_tests_that_skip_without_it() -> None:
    try:
        importlib.import_module("torch")
    except ImportError as e:  # pragma: no cover - the failure this test is for
        pytest.fail(f"torch does not import under CI ({e}): scripts/setup.sh installs python3-torch")
