"""An answer that comes while the body is still being sent: a proxy's early 413 (nginx's ``client_max_body_size``)
is raised as such, once, and the rest of the body is not sent; over TLS as over plain HTTP."""

from __future__ import annotations

import contextlib
import http.server
import shutil
import ssl
import subprocess
import threading
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import numpy as np
import pytest

from zprune_client import ZpruneClient, ZpruneError
from zprune_client._early_answer import HTTPSHandler

#: What nginx answers past client_max_body_size, body and all.
NGINX_413 = (b"<html>\r\n<head><title>413 Request Entity Too Large</title></head>\r\n<body>\r\n<center>"
             b"<h1>413 Request Entity Too Large</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n")

#: 50 MiB of f32 weights: far more than the socket buffers on both sides hold.
BIG = np.ones((12800, 1024), np.float32)


class Record:
    """What a stub saw: requests, and the body bytes it read."""

    def __init__(self) -> None:
        self.requests = 0
        self.body_bytes: List[int] = []


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, made with the openssl command."""
    assert shutil.which("openssl"), "the openssl command makes the test certificate (scripts/setup.sh installs it)"
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return {"cert": cert, "key": key}


@pytest.fixture(params=[False, True], ids=["http", "https"])
def maybe_tls(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Optional[Dict[str, Path]]:
    """None (plain HTTP), then the certificate files of a TLS stub, which the client trusts through SSL_CERT_FILE."""
    if not request.param:
        return None
    files: Dict[str, Path] = request.getfixturevalue("tls_files")
    monkeypatch.setenv("SSL_CERT_FILE", str(files["cert"]))
    return files


@contextlib.contextmanager
def serving(answer: Any, tls: Optional[Dict[str, Path]] = None) -> Iterator[str]:
    """Calls ``answer(handler)`` for each POST with its body unread; yields the URL (https with ``tls``).

    On leaving, waits for every ``answer`` to return: the client can see an answer before the handler is done (an
    early 413 while it reads on), and what the handler records must be there for the test's asserts."""
    busy = threading.Condition()
    running = [0]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            with busy:
                running[0] += 1
            try:
                answer(self)
            finally:
                with busy:
                    running[0] -= 1
                    busy.notify_all()

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls:
        # TLS 1.3, whose session tickets make the client's socket readable before any answer has come.
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_cert_chain(tls["cert"], tls["key"])
        httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{httpd.server_address[1]}"
    finally:
        with busy:
            done = busy.wait_for(lambda: running[0] == 0, timeout=30)
        httpd.shutdown()
        httpd.server_close()
    assert done, "a handler was still running 30 s after the client was done"


def answer_413(h: http.server.BaseHTTPRequestHandler) -> None:
    """A 413 with an HTML body and ``Connection: close``, sent once the headers are read."""
    h.send_response(413)
    h.send_header("Content-Type", "text/html")
    h.send_header("Content-Length", str(len(NGINX_413)))
    h.send_header("Connection", "close")
    h.end_headers()
    h.wfile.write(NGINX_413)
    h.wfile.flush()


def drain(h: http.server.BaseHTTPRequestHandler) -> int:
    """Reads what the client sends until it closes; returns how many bytes came."""
    total = 0
    try:
        while True:
            chunk = h.rfile.read1(1 << 20)  # type: ignore[attr-defined]
            if not chunk:
                return total
            total += len(chunk)
    except OSError:
        return total


def no_sleep(client: ZpruneClient) -> List[float]:
    waits: List[float] = []
    client.sleep = waits.append
    return waits


def test_an_early_413_that_resets_the_upload_is_too_large(maybe_tls: Optional[Dict[str, Path]]) -> None:
    # As nginx past client_max_body_size: the answer, then the connection closed with the body unread (a reset).
    files = maybe_tls
    seen = Record()

    def refuse(h: http.server.BaseHTTPRequestHandler) -> None:
        seen.requests += 1
        answer_413(h)
        h.close_connection = True

    with serving(refuse, files) as url:
        client = ZpruneClient(url, max_retries=2)
        waits = no_sleep(client)
        with pytest.raises(ZpruneError) as info:
            client.prune_layer(BIG, None, method="magnitude", sparsity=0.5)
    err = info.value
    assert (err.code, err.status) == ("too_large", 413), err
    assert "413 Request Entity Too Large" in err.message
    assert seen.requests == 1 and waits == [], "a 413 is not retried: the body went out once"


def test_an_early_answer_stops_the_upload(maybe_tls: Optional[Dict[str, Path]]) -> None:
    # A server that answers at once, then reads on: the client stops sending once the answer is there.
    files = maybe_tls
    seen = Record()

    def refuse_and_read_on(h: http.server.BaseHTTPRequestHandler) -> None:
        seen.requests += 1
        answer_413(h)
        seen.body_bytes.append(drain(h))
        h.close_connection = True

    with serving(refuse_and_read_on, files) as url:
        client = ZpruneClient(url, max_retries=2)
        no_sleep(client)
        with pytest.raises(ZpruneError) as info:
            client.prune_layer(BIG, None, method="magnitude", sparsity=0.5)
        assert info.value.status == 413
    assert seen.requests == 1 and len(seen.body_bytes) == 1
    # The socket buffers on both sides take a few MiB before the answer is seen; the other 40-odd MiB stay here.
    assert seen.body_bytes[0] < BIG.nbytes // 2, f"{seen.body_bytes[0]} of {BIG.nbytes} bytes sent after the answer"


def test_a_tls_upload_of_many_chunks_is_answered(tls_files: Dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    # TLS 1.3 session tickets arrive while the body is being sent: no answer, and the whole body still goes out.
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_files["cert"]))
    body = bytes(range(256)) * (5 << 12)  # 5 MiB
    got: List[bytes] = []

    def echo_length(h: http.server.BaseHTTPRequestHandler) -> None:
        got.append(h.rfile.read(int(h.headers["Content-Length"])))
        answer = str(len(got[0])).encode()
        h.send_response(200)
        h.send_header("Content-Type", "text/plain")
        h.send_header("Content-Length", str(len(answer)))
        h.end_headers()
        h.wfile.write(answer)

    with serving(echo_length, tls_files) as url:
        status, _, answer = ZpruneClient(url, timeout=30).request("POST", "/v1/prune", body)
    assert (status, answer) == (200, str(len(body)).encode()) and got == [body]


def test_the_https_handler_uses_the_tls_context_it_is_given(tls_files: Dict[str, Path]) -> None:
    # urllib's own handler passes its context to the connection; one that dropped it would verify against the system's
    # certificates, which do not hold this self-signed one.
    trusting = ssl.create_default_context(cafile=str(tls_files["cert"]))

    def ok(h: http.server.BaseHTTPRequestHandler) -> None:
        h.rfile.read(int(h.headers["Content-Length"]))
        h.send_response(204)
        h.end_headers()

    with serving(ok, tls_files) as url:
        opener = urllib.request.build_opener(HTTPSHandler(context=trusting))
        with opener.open(urllib.request.Request(url, data=b"x" * 10, method="POST"), timeout=30) as res:
            assert res.status == 204
