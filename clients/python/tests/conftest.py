"""Test harness: a live zprune server started from the repository's ``main.ts`` for the whole session.

``ZPRUNE_TEST_URL`` points the tests at a server that is already running instead. The server is started with the
CPU backend on port 0, so the kernel picks a free port at bind time and no other process can take it first; the port is
read from the server's ``zprune listening on`` line. Its output goes to ``$ZPRUNE_TEST_LOG_DIR/zprune-server-*.log``
(default: the system temp directory) and is printed when it fails to come up.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))  # test the working tree, installed or not

REPO = HERE.parent.parent.parent
GOLDEN = REPO / "tests" / "fixtures" / "golden"
MODEL_DIR = Path(os.environ.get("ZPRUNE_MODEL_DIR") or REPO / "models" / "zp-llama-9m")
CORPUS_DIR = Path(os.environ.get("ZPRUNE_CORPUS_DIR") or REPO / "data" / "corpus")


def deno_command() -> List[str]:
    """How to run Deno: ``$ZPRUNE_DENO``, the npm-installed binary, ``deno`` on PATH, or ``npx deno``."""
    if os.environ.get("ZPRUNE_DENO"):
        return [os.environ["ZPRUNE_DENO"]]
    local = REPO / "node_modules" / ".bin" / "deno"
    if local.exists():
        return [str(local)]
    if shutil.which("deno"):
        return ["deno"]
    return ["npx", "--no-install", "deno"]


def free_port() -> int:
    """A port nothing listens on now, for tests that want a refused connection (a server it starts may race for it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A ``deno run -A main.ts`` child process on a port of its own, killed (with its process group) on ``stop``."""

    LISTENING = re.compile(rb"zprune listening on (http://\S+) ")

    def __init__(self, env: Optional[Dict[str, str]] = None) -> None:
        self.url = ""  # known once the server has said where it listens (wait_ready)
        log_dir = Path(os.environ.get("ZPRUNE_TEST_LOG_DIR") or tempfile.gettempdir())
        log_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="zprune-server-", suffix=".log", dir=log_dir)
        self.log_path = Path(name)
        full_env = {k: v for k, v in os.environ.items() if k != "ZPRUNE_TOKEN"}  # no ambient token
        full_env.update(ZPRUNE_BACKEND="cpu", PORT="0", NO_COLOR="1", **(env or {}))
        self._log = os.fdopen(fd, "wb")
        self.proc = subprocess.Popen(
            deno_command() + ["run", "-A", "main.ts"],
            cwd=REPO,
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if not self.url:
                found = self.LISTENING.search(self.log_path.read_bytes())
                if found:
                    self.url = found.group(1).decode()
            if self.url:
                try:
                    with urllib.request.urlopen(self.url + "/healthz", timeout=2) as r:
                        if r.status == 200:
                            return
                except Exception:  # noqa: BLE001 - not up yet
                    pass
            time.sleep(0.2)
        self.stop()
        where = self.url or "(it never said where it listens)"
        raise RuntimeError(f"zprune server did not become healthy at {where}; its log:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._log.close()


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """The base URL of a live server (started here unless ``ZPRUNE_TEST_URL`` is set)."""
    external = os.environ.get("ZPRUNE_TEST_URL")
    if external:
        yield external.rstrip("/")
        return
    server = Server()
    server.wait_ready()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def start_server():
    """Starts extra servers with extra environment (e.g. a token); all are stopped at the end of the session."""
    started: List[Server] = []

    def start(env: Dict[str, str]) -> Server:
        s = Server(env)
        started.append(s)
        s.wait_ready()
        return s

    yield start
    for s in started:
        s.stop()


class MypyRun:
    """``mypy --strict`` over the package (settings in pyproject.toml) in a child process of its own, started when
    test_typing.py's test is collected: it takes most of a minute, nearly all of it inside torch's stubs, and runs
    beside the other tests instead of after them. ``result`` waits for it."""

    def __init__(self) -> None:
        self._proc: Optional["subprocess.Popen[str]"] = None
        self._cache: Optional[tempfile.TemporaryDirectory[str]] = None

    def start(self) -> None:
        """Starts mypy with a cache of its own, so that no earlier run's cache answers for this tree."""
        if self._proc is None:
            self._cache = tempfile.TemporaryDirectory()
            self._proc = subprocess.Popen([sys.executable, "-m", "mypy", "--cache-dir", self._cache.name],
                                          cwd=HERE.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def result(self, timeout: float = 600) -> "tuple[int, str]":
        """mypy's exit status and output (started now if it was not)."""
        self.start()
        assert self._proc is not None
        out, _ = self._proc.communicate(timeout=timeout)
        return self._proc.returncode, out

    def stop(self) -> None:
        """Ends a run no test waited for (its test deselected, the session cut short) and removes its cache."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.communicate()
        if self._cache is not None:
            self._cache.cleanup()


MYPY = MypyRun()


@pytest.hookimpl(trylast=True)  # after -k and -m have deselected what they deselect
def pytest_collection_modifyitems(items: List[pytest.Item]) -> None:
    """Starts the mypy run once its test is among those that will run."""
    if any(item.nodeid.endswith("test_typing.py::test_mypy_strict_is_clean") for item in items):
        MYPY.start()


def pytest_sessionfinish() -> None:
    """Stops what this harness started in the background."""
    MYPY.stop()
