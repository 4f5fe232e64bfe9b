"""Error mapping: the server's errors become ``ZpruneError(code, message, status)`` (codes and statuses from
API.md); 429 and 503 are retried honouring ``Retry-After``."""

from __future__ import annotations

import contextlib
import http.server
import inspect
import json
import math
import re
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Tuple

import msgpack
import numpy as np
import pytest

from zprune_client import DEFAULT_TIMEOUT, ZpruneClient, ZpruneError, prune_layer, prune_layers
from zprune_client import client as client_module

from conftest import REPO

RNG = np.random.default_rng(7)
W = RNG.standard_normal((8, 16)).astype(np.float32)
ACT = RNG.random(16).astype(np.float32)


def raises(code: str, status: int, fn: Any, *args: Any, **kwargs: Any) -> ZpruneError:
    with pytest.raises(ZpruneError) as info:
        fn(*args, **kwargs)
    err = info.value
    assert (err.code, err.status) == (code, status), f"got {err.code} {err.status}: {err.message}"
    assert err.message, "the server explains every error"
    return err


def test_shape_mismatch_act_length(server_url: str) -> None:
    err = raises("shape_mismatch", 422, prune_layer, W, ACT[:10], sparsity=0.5, url=server_url)
    # The id the server logged the request under (a fresh UUID: the client sends none).
    assert err.request_id is not None and re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", err.request_id)


def test_shape_mismatch_nm_columns(server_url: str) -> None:
    raises("shape_mismatch", 422, prune_layer, W[:, :10], ACT[:10], pattern="4:8", url=server_url)


def test_non_finite(server_url: str) -> None:
    w = W.copy()
    w[2, 3] = np.nan
    err = raises("non_finite", 422, prune_layer, w, ACT, sparsity=0.5, url=server_url, name="nanlayer")
    assert "nanlayer" in err.message


def test_non_finite_activation(server_url: str) -> None:
    act = ACT.copy()
    act[5] = np.inf
    raises("non_finite", 422, prune_layer, W, act, sparsity=0.5, url=server_url)


def test_negative_activation(server_url: str) -> None:
    act = ACT.copy()
    act[1] = -1.0
    raises("invalid_request", 422, prune_layer, W, act, sparsity=0.5, url=server_url)


def test_activations_required(server_url: str) -> None:
    raises("activations_required", 422, prune_layer, W, None, method="wanda", sparsity=0.5, url=server_url)


def test_data_free_allows_no_activations(server_url: str) -> None:
    mask, stats = prune_layer(W, None, method="zpruner", sparsity=0.5, data_free=True, url=server_url)
    assert int(mask.sum()) == stats["pruned"] == W.size // 2


def test_sparsity_required_for_layer(server_url: str) -> None:
    err = raises("invalid_request", 422, prune_layer, W, ACT, url=server_url)
    assert "sparsity" in err.message


def test_sparsity_out_of_range(server_url: str) -> None:
    err = raises("invalid_request", 422, prune_layer, W, ACT, sparsity=1.5, url=server_url)
    assert "sparsity" in err.message


def test_unknown_method(server_url: str) -> None:
    err = raises("invalid_request", 422, prune_layer, W, ACT, method="sparsegpt", sparsity=0.5, url=server_url)
    assert "method" in err.message


def test_bad_msgpack(server_url: str) -> None:
    raises("bad_msgpack", 400, ZpruneClient(server_url).request, "POST", "/v1/prune", b"\x92\x01")


def test_unsupported_media_type(server_url: str) -> None:
    client = ZpruneClient(server_url)
    raises("unsupported_media_type", 415, client.request, "POST", "/v1/prune", b"{}", "application/json")


def test_x_msgpack_accepted(server_url: str) -> None:
    body = msgpack.packb(
        {"method": "magnitude", "sparsity": 0.5, "layers": [{"name": "a", "weight": {"dtype": "f32", "shape": [8, 16],
                                                                                      "data": W.tobytes()}}]},
        use_bin_type=True,
    )
    status, _, _ = ZpruneClient(server_url).request("POST", "/v1/prune", body, "application/x-msgpack")
    assert status == 200


def test_healthz_and_info(server_url: str) -> None:
    client = ZpruneClient(server_url)
    assert client.health()["status"] == "ok"
    info = client.info()
    assert set(info["methods"]) >= {"zpruner", "wanda", "ria", "magnitude"}
    assert set(info["dtypes"]) >= {"f32", "f16", "bf16"}


def test_info_and_health_check_the_answer_but_keep_what_a_newer_server_adds(
    server_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = ZpruneClient(server_url)
    real = client.info()
    answers: List[Any] = []
    monkeypatch.setattr(client, "request", lambda method, path, body=None: (
        200, {"content-type": "application/json"}, json.dumps(answers[-1]).encode()))
    newer = {**real, "methods": [*real["methods"], "sparsegpt"], "dtypes": [*real["dtypes"], "fp8"], "extra": 1}
    answers.append(newer)
    assert client.info() == newer
    broken: List[Dict[str, Any]] = [
        {**real, "name": "other"}, {**real, "version": 2}, {**real, "apiVersion": True}, {**real, "backend": "tpu"},
        {**real, "device": None}, {k: v for k, v in real.items() if k != "limits"},
        {**real, "limits": {**real["limits"], "maxBodyBytes": -1}},
        {**real, "limits": {**real["limits"], "msgpack": {"maxDepth": 32}}},
        {**real, "limits": {**real["limits"], "exponent": {"min": 0, "max": "64"}}},
        {**real, "methods": "zpruner"}, {**real, "returns": ["mask", 3]},
    ]
    for answer in broken:
        answers.append(answer)
        with pytest.raises(ZpruneError) as e:
            client.info()
        assert e.value.code == "invalid_response", answer
    answers.append({"status": "ok", "backend": "cpu"})
    assert client.health() == {"status": "ok", "backend": "cpu"}
    for answer in ({"status": "fine", "backend": "cpu"}, {"status": "ok"}, {"status": "ok", "backend": "gpu"}):
        answers.append(answer)
        with pytest.raises(ZpruneError) as e:
            client.health()
        assert e.value.code == "invalid_response", answer


def test_many_layers_in_request_order(server_url: str) -> None:
    layers = [(f"l{i}", RNG.standard_normal((4 + i, 8)).astype(np.float32), None) for i in range(5)]
    result = prune_layers(layers, url=server_url, method="magnitude", pattern="row", sparsity=0.25)
    assert [(r.name, r.shape) for r in result.layers] == [(n, w.shape) for n, w, _ in layers]
    for (_, w, _), r in zip(layers, result.layers):
        assert (r.mask.sum(axis=1) == 2).all()
        # magnitude/row: the two smallest |w| of each row (no ties in random normals)
        smallest = np.argsort(np.abs(w), axis=1, kind="stable")[:, :2]
        assert all(set(np.flatnonzero(r.mask[i])) == set(smallest[i]) for i in range(w.shape[0]))


def test_return_weight_and_score(server_url: str) -> None:
    result = prune_layers([("w", W, ACT)], url=server_url, method="wanda", sparsity=0.5,
                          returns=("mask", "weight", "score"))
    layer = result.layers[0]
    assert layer.weight is not None and layer.weight.dtype == np.float32
    assert np.array_equal(layer.weight, np.where(layer.mask, 0, W))
    assert layer.score is not None and layer.score.shape == W.shape
    np.testing.assert_allclose(layer.score, np.abs(W) * np.sqrt(ACT), rtol=1e-5)  # wanda: |W| * ||x||
    # One name alone, as a str, is that one tensor (a str is also a sequence of its letters).
    alone = prune_layers([("w", W, ACT)], url=server_url, method="wanda", sparsity=0.5, returns="score").layers[0]
    assert alone.weight is None and alone.score is not None and np.array_equal(alone.score, layer.score)
    assert np.array_equal(alone.mask, layer.mask)


def test_unreachable() -> None:
    from conftest import free_port

    client = ZpruneClient(f"http://127.0.0.1:{free_port()}", max_retries=2, backoff=0.25)
    waits: List[float] = []
    client.sleep = waits.append
    err = raises("unreachable", 0, client.prune_layer, W, ACT, sparsity=0.5)
    assert "127.0.0.1" in err.message
    assert len(waits) == 2, "a refused connection is retried max_retries times, then raised"
    assert 0.25 * 0.75 <= waits[0] <= 0.25 * 1.25 and 0.5 * 0.75 <= waits[1] <= 0.5 * 1.25


def test_unknown_host_is_not_retried() -> None:
    client = ZpruneClient("http://zprune.invalid:8787", max_retries=3)
    waits: List[float] = []
    client.sleep = waits.append
    raises("unreachable", 0, client.prune_layer, W, ACT, sparsity=0.5)
    assert waits == []


def test_refused_certificate_is_not_retried() -> None:
    # A certificate no authority signed fails the same way on every try: unreachable at once, as the TypeScript client
    # answers it (tests/fixtures/tls holds a self-signed one for 127.0.0.1).
    import ssl

    tls = REPO / "tests" / "fixtures" / "tls"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls / "self_signed.crt", tls / "self_signed.key")
    httpd = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        client = ZpruneClient(f"https://127.0.0.1:{httpd.server_address[1]}", max_retries=3)
        waits: List[float] = []
        client.sleep = waits.append
        err = raises("unreachable", 0, client.health)
        assert "CERTIFICATE_VERIFY_FAILED" in err.message, err.message
        assert waits == []
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_refused_connection_retried_until_the_server_is_up() -> None:
    from conftest import free_port

    port = free_port()
    started: List[http.server.HTTPServer] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = _ok_answer()
            self.send_response(200)
            self.send_header("Content-Type", "application/msgpack")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    def start_server_while_waiting(_seconds: float) -> None:
        # The client's first try was refused; the server comes up during its backoff, as after a restart.
        if not started:
            httpd = http.server.HTTPServer(("127.0.0.1", port), Handler)
            threading.Thread(target=httpd.serve_forever, daemon=True).start()
            started.append(httpd)

    client = ZpruneClient(f"http://127.0.0.1:{port}", max_retries=3)
    client.sleep = start_server_while_waiting
    try:
        mask, stats = client.prune_layer(W, ACT, sparsity=0.5)
        assert len(started) == 1 and mask.shape == W.shape and stats["total"] == W.size
    finally:
        for httpd in started:
            httpd.shutdown()
            httpd.server_close()


def test_type_errors_before_sending() -> None:
    with pytest.raises(TypeError, match="layer 'layer', weight: expected float32"):
        prune_layer(np.arange(12).reshape(3, 4), sparsity=0.5, url="http://127.0.0.1:9")
    with pytest.raises(TypeError, match='weight: a 16-bit integer array .* dtype="bf16"'):
        prune_layer(np.zeros((3, 4), np.uint16), sparsity=0.5, url="http://127.0.0.1:9")  # bf16 needs dtype="bf16"
    # Among a request's layers, the message names the one and the field: here the second layer's activations.
    with pytest.raises(TypeError, match="layer 'b', act_norm_sq: expected float32, float16 or bfloat16 data, got int"):
        prune_layers([("a", W, ACT), ("b", W, np.ones(W.shape[1], np.int64))], sparsity=0.5, url="http://127.0.0.1:9")


def test_python_lists_of_integers_are_numbers(server_url: str) -> None:
    # The README and to_numpy: Python lists become float32; [1, 2] has no dtype that could be token ids by mistake.
    ints = [[int(v) for v in row] for row in np.arange(1, 9).reshape(2, 4)]
    by_list = prune_layer(ints, [1, 2, 3, 4], sparsity=0.5, url=server_url)
    by_array = prune_layer(np.array(ints, np.float32), np.array([1, 2, 3, 4], np.float32), sparsity=0.5, url=server_url)
    assert np.array_equal(by_list[0], by_array[0]) and by_list[1]["pruned"] == 4


# -- retries, against a scripted stand-in server ---------------------------------------------------------------

def _ok_answer() -> bytes:
    # What layer 0.5 prunes: half the weights (which half does not matter to these tests).
    mask = np.packbits(np.arange(W.size) % 2 == 0, bitorder="little").tobytes()
    stats = {"pruned": W.size // 2, "total": W.size, "sparsity": 0.5,
             "rowSparsity": {"min": 0.5, "max": 0.5, "mean": 0.5}, "nonFinite": 0}
    timings = {"decodeMs": 0.5, "computeMs": 1, "encodeMs": 0.25, "totalMs": 2}
    return msgpack.packb({"backend": "cpu", "device": "stub", "timings": timings, "layers": [
        {"name": "layer", "shape": list(W.shape), "mask": mask, "stats": stats}]}, use_bin_type=True)


class Script:
    """Answers POSTs from a list of (status, headers, body); remembers how many requests came."""

    def __init__(self, answers: List[Tuple[int, Dict[str, str], bytes]]) -> None:
        self.answers = answers
        self.count = 0


@pytest.fixture
def stub() -> Iterator[Tuple[str, Script]]:
    script = Script([])

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            status, headers, body = script.answers[min(script.count, len(script.answers) - 1)]
            script.count += 1
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            if "Content-Length" not in headers:  # a script may promise more than it sends
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", script
    finally:
        httpd.shutdown()
        httpd.server_close()


def _json_error(code: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": f"{code} for the test"}}).encode()


def test_retries_busy_then_succeeds(stub: Tuple[str, Script]) -> None:
    url, script = stub
    busy = (429, {"Content-Type": "application/json", "Retry-After": "2"}, _json_error("busy"))
    down = (503, {"Content-Type": "application/json"}, _json_error("unavailable"))
    script.answers = [busy, down, (200, {"Content-Type": "application/msgpack"}, _ok_answer())]
    client = ZpruneClient(url, backoff=0.25)
    waits: List[float] = []
    client.sleep = waits.append
    mask, stats = client.prune_layer(W, ACT, sparsity=0.5)
    assert script.count == 3 and mask.shape == W.shape and stats["total"] == W.size
    assert 2.0 <= waits[0] <= 2.5, "Retry-After is honoured, stretched by at most 25 %"
    assert 0.25 * 0.75 <= waits[1] <= 0.5 * 1.25, "exponential backoff without Retry-After"


def test_backoff_never_waits_past_max_backoff(stub: Tuple[str, Script], monkeypatch: pytest.MonkeyPatch) -> None:
    url, script = stub
    monkeypatch.setattr(client_module.random, "random", lambda: 0.999)  # the longest jitter, every time
    down = (503, {"Content-Type": "application/json"}, _json_error("unavailable"))
    script.answers = [down] * 6 + [(200, {"Content-Type": "application/msgpack"}, _ok_answer())]
    client = ZpruneClient(url, max_retries=6, backoff=1.0, max_backoff=2.0)
    waits: List[float] = []
    client.sleep = waits.append
    client.prune_layer(W, ACT, sparsity=0.5)
    assert len(waits) == 6
    # 1, 2, 4, 8, ... each stretched by almost 25 %, then capped at 2.
    assert waits[0] == pytest.approx(1.2495)
    assert waits[1:] == [2.0] * 5, waits


def test_backoff_past_1024_retries_still_waits(stub: Tuple[str, Script]) -> None:
    # backoff * 2**1024 overflowed a float (OverflowError): max_retries may be any whole number.
    url, script = stub
    down = (503, {"Content-Type": "application/json", "Retry-After": "1"}, _json_error("unavailable"))
    script.answers = [down] * 1030 + [(200, {"Content-Type": "application/msgpack"}, _ok_answer())]
    client = ZpruneClient(url, max_retries=2000, backoff=0.5, max_backoff=3.0)
    waits: List[float] = []
    client.sleep = waits.append
    client.prune_layer(W, ACT, sparsity=0.5)
    assert len(waits) == 1030 and all(1.0 <= w <= 3.0 for w in waits), (min(waits), max(waits))
    assert waits[-1] == 3.0, "past a few doublings every wait is max_backoff"


@pytest.mark.parametrize("jitter,waits", [(0.0, [1.0, 1.0, 1.5, 3.0]), (0.999, [1.24975, 1.24975, 2.499, 4.998])])
def test_backoff_grows_past_a_retry_after_that_stays_the_same(
    stub: Tuple[str, Script], monkeypatch: pytest.MonkeyPatch, jitter: float, waits: List[float]
) -> None:
    # zprune answers busy with Retry-After: 1 however long it stays busy: the client's doubling must still spread
    # its retries out. Backoff 0.5 s: 0.5, 1, 2, 4 jittered to 0.75-1.25 of themselves, each at least 1 s stretched by
    # the same jitter's 0-25 %.
    url, script = stub
    monkeypatch.setattr(client_module.random, "random", lambda: jitter)
    busy = (429, {"Content-Type": "application/json", "Retry-After": "1"}, _json_error("busy"))
    script.answers = [busy] * 4 + [(200, {"Content-Type": "application/msgpack"}, _ok_answer())]
    client = ZpruneClient(url, backoff=0.5)
    got: List[float] = []
    client.sleep = got.append
    client.prune_layer(W, ACT, sparsity=0.5)
    assert got == pytest.approx(waits), got


def test_retries_give_up_with_the_error(stub: Tuple[str, Script]) -> None:
    url, script = stub
    script.answers = [(429, {"Content-Type": "application/json", "Retry-After": "0"}, _json_error("busy"))]
    client = ZpruneClient(url, max_retries=3)
    client.sleep = lambda s: None
    err = raises("busy", 429, client.prune_layer, W, ACT, sparsity=0.5)
    assert err.retry_after == 0.0 and script.count == 4


@pytest.mark.parametrize("status,code", [(422, "shape_mismatch"), (504, "deadline_exceeded")])
def test_no_retry_for_client_errors_or_a_deadline(stub: Tuple[str, Script], status: int, code: str) -> None:
    # 504: computing the request outlasted the server's deadline, and would again.
    url, script = stub
    script.answers = [(status, {"Content-Type": "application/json"}, _json_error(code))]
    raises(code, status, prune_layer, W, ACT, sparsity=0.5, url=url)
    assert script.count == 1


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_raised_not_followed(stub: Tuple[str, Script], status: int) -> None:
    # urllib follows a POST's 301-303 as a GET without the body: the server at the new URL would answer 404.
    url, script = stub
    script.answers = [(status, {"Location": "/moved/v1/prune"}, b"")]
    err = raises("invalid_response", status, prune_layer, W, ACT, sparsity=0.5, url=url)
    assert "/v1/prune was redirected to /moved/v1/prune" in err.message, err.message
    assert script.count == 1


def test_msgpack_error_body(stub: Tuple[str, Script]) -> None:
    url, script = stub
    body = msgpack.packb({"error": {"code": "too_large", "message": "body over 1 byte"}}, use_bin_type=True)
    script.answers = [(413, {"Content-Type": "application/msgpack"}, body)]
    err = raises("too_large", 413, prune_layer, W, ACT, sparsity=0.5, url=url)
    assert err.message == "body over 1 byte"


def test_answer_for_another_layer_is_refused(stub: Tuple[str, Script]) -> None:
    url, script = stub
    script.answers = [(200, {"Content-Type": "application/msgpack", "X-Request-Id": "req-42"}, _ok_answer())]
    err = raises("invalid_response", 200, prune_layer, W, ACT, sparsity=0.5, url=url, name="not-layer")
    assert err.request_id == "req-42", "an answer out of contract keeps its request id, as an error answer does"
    script.answers = [(200, {"Content-Type": "application/msgpack", "X-Request-Id": "req-43"}, b"\xc1")]
    assert raises("invalid_response", 200, prune_layer, W, ACT, sparsity=0.5, url=url).request_id == "req-43"
    # msgpack's error for a byte no msgpack value starts with (0xc1) carries no text: the message names it anyway.
    for answer in (b"\xc1", _ok_answer()[:-3], _ok_answer() + b"\x00"):
        script.answers = [(200, {"Content-Type": "application/msgpack"}, answer)]
        message = raises("invalid_response", 200, prune_layer, W, ACT, sparsity=0.5, url=url).message
        assert re.fullmatch(r"the answer is not one msgpack value: \S.*", message), message


def test_exact_path_is_read_from_the_answer(stub: Tuple[str, Script]) -> None:
    url, script = stub
    good = msgpack.unpackb(_ok_answer(), raw=False)
    slow = {**good, "layers": [{**good["layers"][0], "exactPath": "the GPU ran out of memory"}]}
    script.answers = [(200, {"Content-Type": "application/msgpack"}, msgpack.packb(slow, use_bin_type=True)),
                      (200, {"Content-Type": "application/msgpack"}, _ok_answer())]
    assert prune_layers([("layer", W, ACT)], url=url, sparsity=0.5).layers[0].exact_path == "the GPU ran out of memory"
    assert prune_layers([("layer", W, ACT)], url=url, sparsity=0.5).layers[0].exact_path is None


def test_malformed_answers_raise_invalid_response(stub: Tuple[str, Script]) -> None:
    url, script = stub
    good = msgpack.unpackb(_ok_answer(), raw=False)
    stats = good["layers"][0]["stats"]

    def tensor(a: Any) -> Dict[str, Any]:
        return {"dtype": "f32", "shape": list(a.shape), "data": np.ascontiguousarray(a, "<f4").tobytes()}

    def answer_with(**changes: Any) -> bytes:
        return bytes(msgpack.packb({k: v for k, v in {**good, **changes}.items() if v is not None}, use_bin_type=True))

    def layer_with(**changes: Any) -> bytes:
        layer = {**good["layers"][0], **changes}
        layer = {k: v for k, v in layer.items() if v is not None}
        return bytes(msgpack.packb({**good, "layers": [layer]}, use_bin_type=True))

    cases = {
        "a mask one byte short": layer_with(mask=good["layers"][0]["mask"][:-1]),
        "no mask": layer_with(mask=None),
        "a shape that is not numbers": layer_with(shape=["x", "y"]),
        "a returned weight of the wrong size": layer_with(weight={"dtype": "f32", "shape": [4, 8], "data": b"\0" * 4}),
        # Whole tensors, right in themselves, but not of the layer's shape.
        "a returned weight of another shape": layer_with(weight=tensor(W.T)),
        "a score of another shape": layer_with(score=tensor(np.zeros((1, W.size), np.float32))),
        "no stats": layer_with(stats=None),
        "stats without pruned": layer_with(stats={k: v for k, v in stats.items() if k != "pruned"}),
        "a total that is not an integer": layer_with(stats={**stats, "total": float(W.size) + 0.5}),
        "a pruned count that is a string": layer_with(stats={**stats, "pruned": "0"}),
        # Numbers of another mask: API.md's pruned is the mask's 1 bits, total its weights.
        "a pruned count the mask does not hold": layer_with(stats={**stats, "pruned": 3}),
        "a total of another layer": layer_with(stats={**stats, "total": W.size + 1}),
        "timings that are a number": bytes(msgpack.packb({**good, "timings": 5}, use_bin_type=True)),
        "timings that are a list": bytes(msgpack.packb({**good, "timings": [1, 2]}, use_bin_type=True)),
        # The contract's other fields, as the TypeScript client's schema checks them.
        "timings without totalMs": answer_with(timings={k: v for k, v in good["timings"].items() if k != "totalMs"}),
        "no timings": answer_with(timings=None),
        "no backend": answer_with(backend=None),
        "a backend the contract does not name": answer_with(backend="tpu"),
        "a device that is a number": answer_with(device=3),
        "layers that are a map": answer_with(layers={}),
        "an answer that is a list": bytes(msgpack.packb([good], use_bin_type=True)),
        "stats without sparsity": layer_with(stats={k: v for k, v in stats.items() if k != "sparsity"}),
        "rowSparsity without mean": layer_with(stats={**stats, "rowSparsity": {"min": 0, "max": 0}}),
        "a threshold that is a string": layer_with(stats={**stats, "threshold": "0.5"}),
        "nonFinite that is not 0": layer_with(stats={**stats, "nonFinite": 1}),
        "nonFinite false": layer_with(stats={**stats, "nonFinite": False}),
        "not msgpack": b"\xc1",
        "truncated msgpack": _ok_answer()[:-3],
    }
    for what, body in cases.items():
        script.answers = [(200, {"Content-Type": "application/msgpack"}, body)]
        err = raises("invalid_response", 200, prune_layer, W, ACT, sparsity=0.5, url=url)
        assert err.message, what
    script.answers = [(200, {"Content-Type": "application/msgpack"}, cases["a pruned count the mask does not hold"])]
    err = raises("invalid_response", 200, prune_layer, W, ACT, sparsity=0.5, url=url)
    assert f"stats say 3 of {W.size} pruned, the mask {W.size // 2} of {W.size}" in err.message, err.message
    # The mask's own count, but not what the request's pattern prunes (API.md's Selection).
    script.answers = [(200, {"Content-Type": "application/msgpack"}, _ok_answer())]
    err = raises("invalid_response", 200, prune_layer, W, ACT, sparsity=0.75, url=url)
    assert f"{W.size // 2} of {W.size} weights pruned, where layer at 0.75 prunes 96" in err.message, err.message
    for pattern, prunes in (("row", "where row at 0.25 prunes 32"), ("1:4", "where 1:4 prunes 32")):
        script.answers = [(200, {"Content-Type": "application/msgpack"}, _ok_answer())]
        err = raises("invalid_response", 200, prune_layer, W, ACT, sparsity=0.25, pattern=pattern, url=url)
        assert prunes in err.message, err.message
    script.answers = [(200, {"Content-Type": "application/msgpack"}, _ok_answer())]
    assert int(prune_layer(W, ACT, pattern="2:4", url=url)[0].sum()) == W.size // 2  # 2:4 prunes half as well


def test_pruned_counts_follow_api_md_selection() -> None:
    from zprune_client.client import pruned_counts

    assert pruned_counts("layer", 0.5, 8, 16) == [64]
    # floor(0.7 * 3 * 10): 0.7 * 30 is 21.000000000000004, read left to right 20.999999999999996; both are taken.
    assert pruned_counts("layer", 0.7, 3, 10) == [21, 20]
    assert pruned_counts("row", 0.25, 8, 16) == [8 * 4]
    assert pruned_counts("row", 0.01, 8, 16) == [0]
    assert pruned_counts("2:4", None, 8, 16) == [8 * 4 * 2]
    assert pruned_counts("3:8", 0.9, 2, 16) == [2 * 2 * 3]  # sparsity is ignored for N:M


def test_answers_without_the_asked_tensors_or_in_another_dtype_are_invalid(stub: Tuple[str, Script]) -> None:
    # As the TypeScript client checks: each tensor return asks for, weights in the request's dtype, scores in f32.
    url, script = stub
    good = msgpack.unpackb(_ok_answer(), raw=False)

    def half(a: Any) -> Dict[str, Any]:  # right in size and shape, in f16
        return {"dtype": "f16", "shape": list(a.shape), "data": np.ascontiguousarray(a, "<f2").tobytes()}

    def answer(**extra: Any) -> bytes:
        return bytes(msgpack.packb({**good, "layers": [{**good["layers"][0], **extra}]}, use_bin_type=True))

    cases = [
        (("mask", "score"), answer(), "no score, which return asked for"),
        (("weight",), answer(), "no weight, which return asked for"),
        (("mask", "weight"), answer(weight=half(W)), "weight is f16, not f32"),
        (("mask", "score"), answer(score=half(W)), "score is f16, not f32"),
    ]
    for returns, body, message in cases:
        script.answers = [(200, {"Content-Type": "application/msgpack"}, body)]
        err = raises("invalid_response", 200, ZpruneClient(url).prune_layers, [("layer", W, ACT)], sparsity=0.5,
                     returns=returns)
        assert message in err.message, (returns, err.message)


def test_answer_cut_short_is_unreachable_after_retries(stub: Tuple[str, Script]) -> None:
    url, script = stub
    body = _ok_answer()
    script.answers = [(200, {"Content-Type": "application/msgpack", "Content-Length": str(len(body) + 100)}, body)]
    client = ZpruneClient(url, max_retries=2)
    client.sleep = lambda s: None
    raises("unreachable", 0, client.prune_layer, W, ACT, sparsity=0.5)
    assert script.count == 3, "a connection closed mid-answer is retried like a reset"


def test_retry_after_is_capped_by_max_backoff(stub: Tuple[str, Script]) -> None:
    url, script = stub
    busy = [(429, {"Content-Type": "application/json", "Retry-After": after}, _json_error("busy"))
            for after in ("86400", "Wed, 21 Oct 2099 07:28:00 GMT", "inf")]
    script.answers = [*busy, (200, {"Content-Type": "application/msgpack"}, _ok_answer())]
    client = ZpruneClient(url, backoff=0.5, max_backoff=10.0)
    waits: List[float] = []
    client.sleep = waits.append
    client.prune_layer(W, ACT, sparsity=0.5)
    # A day, a date decades ahead: max_backoff each. "inf" is no usable Retry-After: the jittered backoff (0.5 * 4).
    assert waits[:2] == [10.0, 10.0], waits
    assert 1.5 <= waits[2] <= 2.5, waits


def test_an_error_answer_cut_short_takes_its_code_from_the_header(stub: Tuple[str, Script]) -> None:
    url, script = stub
    cut = {"Content-Type": "application/json", "Content-Length": "1000"}  # 5 bytes of 1000 come
    script.answers = [(422, {**cut, "X-Zprune-Error": "shape_mismatch"}, b'{"err')]
    raises("shape_mismatch", 422, prune_layer, W, ACT, sparsity=0.5, url=url)
    # Not a code: a proxy's own header, say. The status stands in.
    script.answers = [(422, {**cut, "X-Zprune-Error": "Bad <thing>"}, b'{"err')]
    raises("invalid_request", 422, prune_layer, W, ACT, sparsity=0.5, url=url)


HTML = {"Content-Type": "text/html"}
TEXT = {"Content-Type": "text/plain"}
JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize("status,headers,body,code", [
    # Proxies' own answers: the contract's code for the status (API.md's table).
    (413, HTML, b"<html><h1>413 Request Entity Too Large</h1></html>", "too_large"),
    (429, TEXT, b"Too Many Requests", "busy"),
    (503, HTML, b"<html>Service Temporarily Unavailable</html>", "unavailable"),
    (401, TEXT, b"Unauthorized", "unauthorized"),
    (404, HTML, b"<html>Not Found</html>", "not_found"),
    # Bodies that are not zprune's error, or whose code is not a code: the status decides.
    (422, JSON, json.dumps({"error": {"code": "Some Code!", "message": "m"}}).encode(), "invalid_request"),
    (415, JSON, json.dumps({"error": {"code": "7", "message": "m"}}).encode(), "unsupported_media_type"),
    (400, JSON, json.dumps({"error": {"message": "no code at all"}}).encode(), "bad_msgpack"),
    (400, JSON, json.dumps({"error": {"code": 400, "message": "a number"}}).encode(), "bad_msgpack"),
    (500, JSON, json.dumps({"error": "something broke"}).encode(), "internal"),
    (413, JSON, b'{"error": {"code": "too_la', "too_large"),
    # A code of the right shape that this client does not know yet is kept: a newer server's.
    (422, JSON, json.dumps({"error": {"code": "some_new_code", "message": "m"}}).encode(), "some_new_code"),
    # No code of the contract for the status: a proxy's 502, a gateway timeout (not zprune's deadline_exceeded).
    (502, HTML, b"<html>502 Bad Gateway</html>", "http_502"),
    (504, HTML, b"<html>504 Gateway Time-out</html>", "http_504"),
    (418, TEXT, b"I'm a teapot", "http_418"),
])
def test_an_answer_that_names_no_code_takes_its_status_code(
    stub: Tuple[str, Script], status: int, headers: Dict[str, str], body: bytes, code: str
) -> None:
    url, script = stub
    script.answers = [(status, headers, body)]
    client = ZpruneClient(url, max_retries=2)
    waits: List[float] = []
    client.sleep = waits.append
    err = raises(code, status, client.prune_layer, W, ACT, sparsity=0.5)
    assert script.count == (3 if status in (429, 503) else 1) and len(waits) == script.count - 1
    if "error" not in body.decode(errors="replace"):
        assert err.message == body.decode(), "the proxy's own words"


def test_codes_of_statuses_are_the_typescript_clients() -> None:
    # client/mod.ts's codeOfStatus: the first code with the status in ERROR_STATUS's order, deadline_exceeded aside.
    source = (REPO / "contract" / "errors.ts").read_text(encoding="utf-8")
    table = re.search(r"export const ERROR_STATUS = \{(.*?)\} as const;", source, re.S)
    assert table, "contract/errors.ts defines ERROR_STATUS"
    expected: Dict[int, str] = {}
    for code, status in re.findall(r"^\s*([a-z_]+): (\d{3}),", table.group(1), re.M):
        if code != "deadline_exceeded":
            expected.setdefault(int(status), code)
    assert len(expected) >= 10 and expected[422] == "invalid_request"
    assert client_module._CODE_OF_STATUS == expected


def test_zprune_error_pickles_with_every_attribute() -> None:
    import pickle

    err = pickle.loads(pickle.dumps(ZpruneError("busy", "the queue is full", 429, retry_after=1.5, request_id="r7")))
    assert (type(err), err.code, err.message, err.status, err.retry_after, err.request_id) == (
        ZpruneError, "busy", "the queue is full", 429, 1.5, "r7")
    assert str(err) == "busy (429): the queue is full"


def test_an_error_answer_cut_short_keeps_its_status(stub: Tuple[str, Script]) -> None:
    url, script = stub
    cut = {"Content-Type": "application/json", "Content-Length": "1000"}  # 5 bytes of 1000 come
    script.answers = [(422, cut, b'{"err')]
    raises("invalid_request", 422, prune_layer, W, ACT, sparsity=0.5, url=url)
    assert script.count == 1, "a 422 is not retried, however its body ended"
    script.answers, script.count = [
        (503, cut, b'{"err'),
        (200, {"Content-Type": "application/msgpack"}, _ok_answer()),
    ], 0
    client = ZpruneClient(url)
    client.sleep = lambda s: None
    client.prune_layer(W, ACT, sparsity=0.5)
    assert script.count == 2, "a 503 cut short is still retried"


def test_a_proxy_set_after_import_is_used(stub: Tuple[str, Script], monkeypatch: pytest.MonkeyPatch) -> None:
    # The client reads proxies from the environment when it is made, as it reads ZPRUNE_URL and ZPRUNE_TOKEN: a
    # notebook that sets http_proxy after importing zprune_client is heard. The stand-in server plays the proxy for a
    # host that does not resolve, so only a request sent through it can be answered.
    url, script = stub
    script.answers = [(200, {"Content-Type": "application/msgpack"}, _ok_answer())]
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", url)
    mask, stats = prune_layer(W, ACT, sparsity=0.5, url="http://zprune.invalid:8787", name="layer")
    assert script.count == 1 and mask.shape == W.shape and stats["total"] == W.size


def test_token_from_a_secret_file_loses_its_newline(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ZpruneClient("http://127.0.0.1:1", token=" s3cret\n").token == "s3cret"
    monkeypatch.setenv("ZPRUNE_TOKEN", "s3cret\n")
    assert ZpruneClient("http://127.0.0.1:1").token == "s3cret"
    # An explicit empty token is none at all, whatever the environment holds (as documented).
    assert ZpruneClient("http://127.0.0.1:1", token="").token is None
    monkeypatch.setenv("ZPRUNE_TOKEN", "\n")
    assert ZpruneClient("http://127.0.0.1:1").token is None


@contextlib.contextmanager
def _serving(answer: Callable[[http.server.BaseHTTPRequestHandler], None]) -> Iterator[str]:
    """Answers each POST, once its body is read, with ``answer(handler)``; yields the server's URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            answer(self)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_timeout_bounds_the_whole_answer_not_each_read() -> None:
    # 60 bytes, one every 0.1 s: no single read waits a second, the whole answer takes 6.
    def trickle(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/msgpack")
        h.send_header("Content-Length", "60")
        h.end_headers()
        try:
            for _ in range(60):
                h.wfile.write(b"\xc0")
                h.wfile.flush()
                time.sleep(0.1)
        except OSError:
            pass  # the client gave up

    with _serving(trickle) as url:
        client = ZpruneClient(url, timeout=1.0)
        # Read to its end, the body would be 60 nils: invalid_response. Cut off at the timeout: unreachable.
        raises("unreachable", 0, client.prune_layer, W, ACT, sparsity=0.5)


def test_an_answer_complete_past_the_timeout_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    # The headers before the client's deadline, the whole body after it. The deadline is passed on the client's clock
    # (its monotonic time jumps a minute once the headers are sent) rather than by sleeping, where the stub's two
    # sleeps had to end within the timeout of each read: no real wait comes near the 30 s timeout here.
    class Clock:
        """client.py's time module, whose monotonic clock the stub moves on."""

        skew = 0.0
        read_past_the_deadline = False

        def monotonic(self) -> float:
            self.read_past_the_deadline |= self.skew > 0
            return time.monotonic() + self.skew

        def __getattr__(self, name: str) -> Any:
            return getattr(time, name)

    clock = Clock()
    monkeypatch.setattr(client_module, "time", clock)

    def late(h: http.server.BaseHTTPRequestHandler) -> None:
        body = _ok_answer()
        h.send_response(200)
        h.send_header("Content-Type", "application/msgpack")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.flush()
        clock.skew = 60.0
        h.wfile.write(body)

    with _serving(late) as url:
        mask, stats = ZpruneClient(url, timeout=30.0).prune_layer(W, ACT, sparsity=0.5)
        assert mask.shape == W.shape and stats["total"] == W.size
    assert clock.read_past_the_deadline, "the client looked at its clock once the body had come, past its deadline"


@pytest.mark.parametrize("framing", ["chunked", "until closed"])
def test_an_answer_without_a_content_length_is_read_whole(framing: str) -> None:
    # The answer is read into a buffer of its Content-Length; without one it grows as the answer comes.
    mask = np.arange(W.size).reshape(W.shape) % 4 < 2  # half, as layer 0.5 prunes
    body = msgpack.unpackb(_ok_answer(), raw=False)
    body["layers"][0].update(mask=np.packbits(mask.ravel(), bitorder="little").tobytes(),
                             score={"dtype": "f32", "shape": list(W.shape), "data": np.abs(W).tobytes()})
    body["layers"][0]["stats"]["pruned"] = int(mask.sum())  # the mask's count, as API.md has it
    data = msgpack.packb(body, use_bin_type=True)

    def unsized(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/msgpack")
        if framing == "chunked":
            h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        for at in range(0, len(data), 100):
            piece = data[at:at + 100]
            h.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if framing == "chunked" else piece)
            h.wfile.flush()
        if framing == "chunked":
            h.wfile.write(b"0\r\n\r\n")

    with _serving(unsized) as url:
        got = ZpruneClient(url).prune_layers([("layer", W, ACT)], sparsity=0.5, returns=("mask", "score")).layers[0]
    assert np.array_equal(got.mask, mask) and np.array_equal(got.score, np.abs(W))


# -- a second live server: token, small body limit, no queue ---------------------------------------------------

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def strict_server(start_server: Any) -> str:
    server = start_server({"ZPRUNE_TOKEN": TOKEN, "ZPRUNE_MAX_BODY_BYTES": str(4 * 1024 * 1024),
                           "ZPRUNE_CONCURRENCY": "1", "ZPRUNE_MAX_QUEUE": "0"})
    return str(server.url)


def test_unauthorized_without_token(strict_server: str) -> None:
    raises("unauthorized", 401, prune_layer, W, ACT, sparsity=0.5, url=strict_server)


def test_unauthorized_with_another_token(strict_server: str) -> None:
    raises("unauthorized", 401, prune_layer, W, ACT, sparsity=0.5, url=strict_server, token="not-it")


def test_token_accepted(strict_server: str) -> None:
    mask, stats = prune_layer(W, ACT, sparsity=0.5, url=strict_server, token=TOKEN)
    assert stats["pruned"] == int(mask.sum()) == W.size // 2


def test_too_large(strict_server: str) -> None:
    big = np.ones((1024, 1280), np.float32)  # 5.2 MB of weights > the 4 MiB limit
    raises("too_large", 413, prune_layer, big, None, method="magnitude", sparsity=0.5, url=strict_server,
           token=TOKEN)


def test_busy_is_retried_until_served(strict_server: str) -> None:
    """With one compute slot and no queue, concurrent requests get 429 busy; the client retries them all through."""
    from test_golden import assert_golden, load_case

    req, exp = load_case("zpruner-layer-f32-512x1536")
    layer = req["layers"][0]
    w = np.frombuffer(layer["weight"]["data"], "<f4").reshape(layer["weight"]["shape"])
    act = np.frombuffer(layer["actNormSq"]["data"], "<f4")
    waits: List[float] = []
    lock = threading.Lock()

    def sleep(seconds: float) -> None:
        with lock:
            waits.append(seconds)
        import time

        time.sleep(seconds)

    for _round in range(3):
        results: List[Any] = [None] * 4
        barrier = threading.Barrier(4)

        def work(i: int) -> None:
            client = ZpruneClient(strict_server, TOKEN, max_retries=30)
            client.sleep = sleep
            barrier.wait()
            try:
                results[i] = client.prune_layer(w, act, sparsity=req["sparsity"])
            except Exception as e:  # noqa: BLE001 - reported below
                results[i] = e

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for r in results:
            assert not isinstance(r, Exception), r
            assert_golden(r[0], r[1], exp)
        if waits:
            break
    assert waits, "no request was ever answered busy: the retry path was not exercised"
    assert all(s >= 1.0 for s in waits), "the server's Retry-After (1 s) is honoured"


def test_inputs_instead_of_act_norm_sq(server_url: str) -> None:
    """Raw calibration inputs: the server sums the squares (one sequence), the same mask as the sums sent."""
    x = RNG.integers(-3, 4, size=(32, 16)).astype(np.float32)  # small integers: the sums are exact in float32
    act = (x * x).sum(axis=0)
    from_inputs, s1 = prune_layer(W, None, inputs=x, method="wanda", sparsity=0.5, url=server_url)
    from_sums, s2 = prune_layer(W, act, method="wanda", sparsity=0.5, url=server_url)
    assert np.array_equal(from_inputs, from_sums) and s1["pruned"] == s2["pruned"] == W.size // 2


def test_malformed_url_is_refused_at_once() -> None:
    import http.client

    # A bad port, no scheme (urllib reads "127.0.0.1" as the scheme), not a URL, and a scheme urllib would follow
    # elsewhere (ftp:// waited out the whole timeout).
    for url in ["http://127.0.0.1:8787x", "127.0.0.1:8787", "not a url", "ftp://127.0.0.1:8787", "http://:8787"]:
        with pytest.raises(http.client.InvalidURL):
            ZpruneClient(url)
        with pytest.raises(http.client.InvalidURL):
            prune_layer(W, ACT, sparsity=0.5, url=url)
    assert ZpruneClient("https://example.invalid/zprune/").url == "https://example.invalid/zprune"
    # A URL read from a file ends with a newline: dropped, as around the token. Inside, whitespace is no URL.
    assert ZpruneClient(" http://127.0.0.1:8787/\n").url == "http://127.0.0.1:8787"
    for url in ["http://exa mple.invalid:8787", "http://example.invalid/\npath", "http://example.invalid\x00"]:
        with pytest.raises(http.client.InvalidURL):
            ZpruneClient(url)


@pytest.mark.parametrize("url", [
    # Paths are appended to the base URL as text: a query or fragment would swallow them (a 404, or the wrong route).
    "http://127.0.0.1:8787/?x=1", "http://127.0.0.1:8787/zprune?token=abc", "http://127.0.0.1:8787/?",
    "http://127.0.0.1:8787#top", "http://127.0.0.1:8787/#",
    # Credentials would go out as Basic auth beside the token; give the token as token=.
    "http://user:s3cretpw@127.0.0.1:8787", "https://user@example.invalid/zprune", "http://:s3cretpw@127.0.0.1:8787",
    # Another refusal first (a bad port, a space, no scheme) must not quote the password either.
    "http://user:s3cretpw@127.0.0.1:87x", "http://user:s3cret pw@127.0.0.1:8787", "user:s3cretpw@127.0.0.1:8787",
])
def test_a_base_url_with_a_query_fragment_or_credentials_is_refused(url: str) -> None:
    import http.client

    for make in (lambda: ZpruneClient(url), lambda: prune_layer(W, ACT, sparsity=0.5, url=url)):
        with pytest.raises(ValueError) as info:
            make()
        assert isinstance(info.value, http.client.InvalidURL), "the client's other URL errors are InvalidURL"
        assert "s3cret" not in str(info.value) and "s3cret" not in repr(info.value.args), info.value
    if "s3cret" in url:
        assert "***@" in str(info.value), info.value


def test_default_timeout_outlasts_the_servers_default_deadline() -> None:
    # The server's default, read from its own configuration: a client timeout under it would cut off a slow request
    # that the server is still working on, before the server's own 503 or 504 could say where the time went.
    config = (REPO / "config.ts").read_text(encoding="utf-8")
    match = re.search(r"^\s*deadlineMs: ([\d_]+),", config, re.M)
    assert match, "config.ts names the default deadline"
    deadline_s = int(match.group(1).replace("_", "")) / 1000
    assert DEFAULT_TIMEOUT >= deadline_s + 30, (DEFAULT_TIMEOUT, deadline_s)
    for fn in (ZpruneClient.__init__, prune_layer, prune_layers):
        assert inspect.signature(fn).parameters["timeout"].default == DEFAULT_TIMEOUT, fn.__name__
    assert ZpruneClient("http://127.0.0.1:1").timeout == DEFAULT_TIMEOUT


def test_options_out_of_range_are_refused_when_the_client_is_made(server_url: str) -> None:
    # As the TypeScript client's RangeError: timeout 0 made every connection "unreachable" (a non-blocking socket), a
    # negative backoff failed only at the first retry.
    for bad in ({"timeout": 0}, {"timeout": -1}, {"timeout": float("nan")}, {"timeout": None}, {"max_retries": -1},
                {"max_retries": 1.5}, {"backoff": -0.5}, {"max_backoff": float("inf")}, {"timeout": True},
                {"max_retries": True}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ZpruneClient(server_url, **bad)  # type: ignore[arg-type]
    # math.inf is no limit, as the TypeScript client's Infinity.
    assert ZpruneClient(server_url, timeout=math.inf).health()["status"] == "ok"
    # numpy's scalars are numbers too (a timeout read from an array, say).
    client = ZpruneClient(server_url, timeout=np.float32(30), max_retries=np.int64(2), backoff=np.float64(0.1))
    assert client.health()["status"] == "ok"


def test_a_timeout_is_not_retried() -> None:
    # A server that answers only after the client's timeout: the client already waited that long, and each retry
    # would wait as long again (6 x 660 s by default in a notebook).
    requests: List[int] = []

    def late(h: http.server.BaseHTTPRequestHandler) -> None:
        requests.append(1)
        time.sleep(0.8)
        try:
            h.send_response(200)
            h.send_header("Content-Length", "0")
            h.end_headers()
        except OSError:
            pass  # the client gave up

    with _serving(late) as url:
        client = ZpruneClient(url, timeout=0.3, max_retries=3)
        waits: List[float] = []
        client.sleep = waits.append
        raises("unreachable", 0, client.prune_layer, W, ACT, sparsity=0.5)
    assert (len(requests), waits) == (1, [])


def test_an_error_answer_takes_its_body_s_code_before_its_header_s(stub: Tuple[str, Script]) -> None:
    url, script = stub
    headers = {"Content-Type": "application/json", "X-Zprune-Error": "invalid_request"}
    script.answers = [(422, headers, _json_error("shape_mismatch"))]
    raises("shape_mismatch", 422, prune_layer, W, ACT, sparsity=0.5, url=url)


def test_an_answer_with_fewer_layers_or_another_shape_is_invalid(stub: Tuple[str, Script]) -> None:
    url, script = stub
    script.answers = [(200, {"Content-Type": "application/msgpack"}, _ok_answer())]
    err = raises("invalid_response", 200, prune_layers, [("layer", W, ACT), ("other", W, ACT)], url=url, sparsity=0.5)
    assert "1 layers answered for 2 sent" in err.message, err.message
    # The layer's own name, its mask's length, but the shape of its transpose.
    good = msgpack.unpackb(_ok_answer(), raw=False)
    transposed = {**good, "layers": [{**good["layers"][0], "shape": [W.shape[1], W.shape[0]]}]}
    script.answers = [(200, {"Content-Type": "application/msgpack"}, msgpack.packb(transposed, use_bin_type=True))]
    err = raises("invalid_response", 200, prune_layer, W, ACT, sparsity=0.5, url=url)
    assert "answered as 'layer' [16, 8], sent as 'layer' [8, 16]" in err.message, err.message
    # A mask one byte longer than its layer's.
    longer = {**good, "layers": [{**good["layers"][0], "mask": good["layers"][0]["mask"] + b"\0"}]}
    script.answers = [(200, {"Content-Type": "application/msgpack"}, msgpack.packb(longer, use_bin_type=True))]
    raises("invalid_response", 200, prune_layer, W, ACT, sparsity=0.5, url=url)


def test_sparsity_and_exponent_zero_are_sent_as_given(server_url: str) -> None:
    # 0 is a value, not "unset": the dense baseline of a sweep, and act^0 = 1 (wanda's score is then |W|).
    mask, stats = prune_layer(W, ACT, sparsity=0.0, url=server_url)
    assert stats["pruned"] == 0 and not mask.any()
    res = prune_layers([("layer", W, ACT)], url=server_url, method="wanda", sparsity=0.5, exponent=0.0, returns="score")
    assert np.array_equal(res.layers[0].score, np.abs(W))
