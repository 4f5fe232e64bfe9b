"""The early-answer connection step by step, with nothing left to timing: the reset path of ``_EarlyAnswerConnection``
(a send cut off by a peer that answered, or did not, before it hung up), its chunking and its looks for an answer
between chunks, and ``_Prefixed``, which puts the bytes read ahead back in front of the answer.

The connection's socket is one end of a ``socket.socketpair()``; the test plays the server on the other end.
http.client's own ``send`` (what the connection calls for each chunk) is replaced by a recorder that can make the peer
answer, hang up or fail the send at a chosen chunk, so each case happens in the same order on every run. The upload
tests against real HTTP servers (test_upload.py) see the same paths only when the kernel's timing happens to lead there.
"""

from __future__ import annotations

import array
import http.client
import io
import socket
import ssl
import threading
import urllib.error
from typing import Any, Callable, Iterator, List, Optional, Type

import pytest

from zprune_client import ZpruneClient, ZpruneError
from zprune_client import _early_answer
from zprune_client._early_answer import _EarlyAnswerConnection, _Prefixed

#: The body of the answers the peer writes: distinct bytes, so that a byte out of place or twice shows.
PAGE = b"<html><body>413 Request Entity Too Large</body></html>\r\n"

#: The send errors after which the server may still have answered (``_CUT_OFF``), one of each to raise.
CUT_OFF_ERRORS: List[Callable[[], OSError]] = [
    lambda: BrokenPipeError(32, "Broken pipe"),
    lambda: ConnectionResetError(104, "Connection reset by peer"),
    lambda: ssl.SSLEOFError(8, "EOF occurred in violation of protocol"),
]
CUT_OFF_IDS = ["broken-pipe", "reset", "tls-eof"]


def http_answer(status: int, reason: str, body: bytes, close: bool = True) -> bytes:
    """A whole HTTP/1.1 answer with a Content-Length (and ``Connection: close`` with ``close``), as proxies write."""
    head = f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/html\r\nContent-Length: {len(body)}\r\n"
    return (head + ("Connection: close\r\n" if close else "") + "\r\n").encode() + body


def numbered(size: int) -> bytes:
    """``size`` bytes that do not repeat within 251: a piece read twice or skipped changes what is read."""
    return bytes(i % 251 for i in range(size))


class Wire:
    """An ``_EarlyAnswerConnection`` on one end of a socketpair, the test's server (``peer``) on the other, and a
    record of what the connection did: ``events`` holds ``"look"`` for each look for an answer and the bytes of each
    chunk handed to http.client's send, in order."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Connects the pair and replaces http.client's send and the module's look with recorders."""
        self.sock, self.peer = socket.socketpair()
        self.sock.settimeout(10)  # a test that went wrong fails, instead of hanging on a read
        self.conn = _EarlyAnswerConnection("zprune.test")
        self.conn.sock = self.sock
        self.events: List[Any] = []
        #: Called with the index of each chunk as it is sent (after it is recorded): the peer's move, or a failure.
        self.on_send: Callable[[int], None] = lambda index: None
        look = _early_answer._answer_so_far

        def recording_look(sock: socket.socket) -> Optional[bytes]:
            """The module's own look, recorded."""
            self.events.append("look")
            return look(sock)

        def recording_send(conn: http.client.HTTPConnection, data: Any) -> None:
            """Records the chunk instead of writing it (the peer reads nothing), then lets the test act."""
            self.events.append(data if hasattr(data, "read") else bytes(data))
            self.on_send(len(self.sent) - 1)

        monkeypatch.setattr(_early_answer, "_answer_so_far", recording_look)
        monkeypatch.setattr(http.client.HTTPConnection, "send", recording_send)

    @property
    def sent(self) -> List[Any]:
        """The chunks handed to http.client's send (those that failed too), in order."""
        return [e for e in self.events if e != "look"]

    def fail_at(self, index: int, error: OSError, answer: bytes = b"", hang_up: bool = True) -> None:
        """Makes the send of chunk ``index`` fail with ``error``, after the peer wrote ``answer`` (and hung up)."""

        def act(i: int) -> None:
            """The peer's answer and close, then the failure, at chunk ``index`` only."""
            if i != index:
                return
            self.peer.sendall(answer)
            if hang_up:
                self.peer.close()
            raise error

        self.on_send = act

    def answer_at(self, index: int, answer: bytes) -> None:
        """Makes the peer write ``answer`` while chunk ``index`` is sent: the next look finds it."""
        self.on_send = lambda i: self.peer.sendall(answer) if i == index else None

    def close(self) -> None:
        """Closes both ends."""
        self.conn.close()
        self.sock.close()
        self.peer.close()


@pytest.fixture
def wire(monkeypatch: pytest.MonkeyPatch) -> Iterator[Wire]:
    """A fresh ``Wire``, closed after the test."""
    w = Wire(monkeypatch)
    try:
        yield w
    finally:
        w.close()


def post(conn: http.client.HTTPConnection, body: bytes) -> None:
    """Sends a POST with ``body`` as urllib does (headers in one send, then the body in one)."""
    conn.request("POST", "/v1/prune", body=body, headers={"Content-Type": "application/msgpack"})


# -- a send cut off by the peer ------------------------------------------------------------------------------------


@pytest.mark.parametrize("error", CUT_OFF_ERRORS, ids=CUT_OFF_IDS)
@pytest.mark.parametrize("failing", [0, 1], ids=["headers", "body"])
def test_an_answer_before_a_reset_is_read(wire: Wire, error: Callable[[], OSError], failing: int) -> None:
    """A send cut off after the peer wrote a whole 413: the 413 is the response, and nothing more is sent."""
    wire.fail_at(failing, error(), http_answer(413, "Request Entity Too Large", PAGE))
    post(wire.conn, b"w" * 10)  # the reset is no error yet: the answer may be behind it
    assert len(wire.sent) == failing + 1, "the send stops at the failure: the body is not sent after failed headers"
    before = list(wire.events)
    wire.conn.send(b"more of the body")
    assert wire.events == before, "a send after the failure neither looks nor sends: the peer has hung up"
    res = wire.conn.getresponse()
    assert (res.status, res.reason) == (413, "Request Entity Too Large")
    assert res.getheader("Content-Length") == str(len(PAGE))
    assert res.read() == PAGE


@pytest.mark.parametrize("error", CUT_OFF_ERRORS, ids=CUT_OFF_IDS)
@pytest.mark.parametrize("reply", [b"", b"garbage\r\n", b"HTTP/1.1 41"], ids=["nothing", "garbage", "cut-short"])
def test_a_reset_without_an_answer_raises_the_sends_error(
        wire: Wire, error: Callable[[], OSError], reply: bytes) -> None:
    """A send cut off with no HTTP answer behind it: a URLError whose reason is the send's own error, as urllib's."""
    failure = error()
    wire.fail_at(1, failure, reply)
    post(wire.conn, b"w" * 10)
    with pytest.raises(urllib.error.URLError) as info:
        wire.conn.getresponse()
    assert info.value.reason is failure, "the reason is the reset, not the read that found no answer after it"


def test_a_reset_from_a_silent_peer_raises_the_sends_error(wire: Wire) -> None:
    """A send cut off by a peer that neither answers nor closes: the read times out, and the reset is raised."""
    failure = ConnectionResetError(104, "Connection reset by peer")
    wire.fail_at(1, failure, hang_up=False)
    post(wire.conn, b"w" * 10)
    wire.sock.settimeout(0.05)  # nothing will come: the read is cut short rather than waited out
    with pytest.raises(urllib.error.URLError) as info:
        wire.conn.getresponse()
    assert info.value.reason is failure


def test_without_a_reset_a_missing_answer_raises_as_http_client_does(wire: Wire) -> None:
    """The peer hangs up after the whole body was sent: http.client's own error, not one made from no send error."""
    wire.on_send = lambda i: wire.peer.close() if i == 1 else None
    post(wire.conn, b"w" * 10)
    with pytest.raises(http.client.RemoteDisconnected):
        wire.conn.getresponse()


@pytest.mark.parametrize("error", [TimeoutError, ConnectionAbortedError, PermissionError])
def test_a_send_error_that_is_no_reset_is_raised_at_once(wire: Wire, error: Type[OSError]) -> None:
    """A send error after which no answer can be waiting (a timeout, a local failure) is raised by the send."""
    wire.fail_at(1, error("from the test"), hang_up=False)
    with pytest.raises(error, match="from the test"):
        post(wire.conn, b"w" * 10)


# -- an answer that comes while the body is being sent -------------------------------------------------------------


def test_an_early_answer_longer_than_the_first_read_is_read_whole(wire: Wire) -> None:
    """An answer that comes during the headers' send, its body partly behind: read in order, head then rest."""
    body = numbered(40 << 10)
    answer = http_answer(413, "Request Entity Too Large", body, close=False)
    early, late = answer[:20 << 10], answer[20 << 10:]  # 20 KiB: more than a BufferedReader's 8 KiB at once
    wire.answer_at(0, early)
    post(wire.conn, b"w" * 10)
    assert wire.events == ["look", wire.sent[0], "look"], "the body is not sent once the answer is there"
    wire.peer.sendall(late)  # the peer stays open: the response must stop at Content-Length, not wait for more
    res = wire.conn.getresponse()
    assert res.status == 413
    assert res.read() == body


def test_an_answer_between_two_chunks_stops_the_body(wire: Wire, monkeypatch: pytest.MonkeyPatch) -> None:
    """An answer that comes after the first chunk of the body: the look before the second finds it, and sending ends."""
    monkeypatch.setattr(_early_answer, "SEND_CHUNK", 4)
    wire.answer_at(0, http_answer(200, "OK", b"fine"))
    wire.conn.send(b"0123456789")
    assert wire.events == ["look", b"0123", "look"]
    wire.conn.send(b"more")
    assert wire.events == ["look", b"0123", "look"], "a send after the answer neither looks nor sends"
    res = wire.conn.getresponse()
    assert (res.status, res.read()) == (200, b"fine")


class RecordingResponse(http.client.HTTPResponse):
    """An HTTPResponse that counts its ``close`` calls."""

    closes = 0

    def close(self) -> None:
        """Counts, then closes."""
        RecordingResponse.closes += 1
        super().close()


@pytest.mark.parametrize("early, error", [(b"", http.client.RemoteDisconnected),
                                          (b"garbage\r\n\r\n", http.client.BadStatusLine)], ids=["closed", "garbage"])
def test_an_early_answer_that_is_no_http_is_raised_and_closed(
        wire: Wire, monkeypatch: pytest.MonkeyPatch, early: bytes, error: Type[Exception]) -> None:
    """Early bytes that are no HTTP answer (or the peer's close): http.client's error, and the response closed."""
    monkeypatch.setattr(RecordingResponse, "closes", 0)
    wire.conn.response_class = RecordingResponse
    wire.peer.sendall(early)
    wire.peer.close()
    post(wire.conn, b"w" * 10)
    assert wire.events == ["look"], "the answer was there before the headers: nothing is sent"
    with pytest.raises(error) as info:
        wire.conn.getresponse()
    # Asked while `info` holds the traceback, and with it the response: dropped, the response would close itself
    # when collected; held (as the client's ZpruneError holds it, `from` the error), only an explicit close ends it.
    assert RecordingResponse.closes == 1, "the response that failed to begin is closed"
    del info


def test_a_look_leaves_the_sockets_timeout(wire: Wire) -> None:
    """A look reads without blocking, then gives the socket back its timeout: the response's reads keep it."""
    wire.sock.settimeout(2.5)
    wire.peer.sendall(http_answer(200, "OK", b"fine"))
    wire.conn.send(b"0123")
    assert wire.events == ["look"]
    assert wire.sock.gettimeout() == 2.5


def test_a_readable_socket_with_nothing_to_read_is_no_answer(wire: Wire, monkeypatch: pytest.MonkeyPatch) -> None:
    """Readable but nothing behind it (a TLS session ticket): no answer, the chunk is sent, the timeout kept."""
    monkeypatch.setattr(_early_answer, "_readable", lambda sock: True)
    wire.sock.settimeout(2.5)
    wire.conn.send(b"0123")
    assert wire.events == ["look", b"0123"]
    assert wire.sock.gettimeout() == 2.5


# -- chunking --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"0123456789", bytearray(b"0123456789"), memoryview(b"0123456789"),
                                  array.array("H", b"0123456789")], ids=["bytes", "bytearray", "memoryview", "u16"])
def test_a_body_is_sent_in_chunks_with_a_look_before_each(
        wire: Wire, monkeypatch: pytest.MonkeyPatch, data: Any) -> None:
    """With SEND_CHUNK 4, 10 bytes go as 4, 4 and 2, each after a look; counted in bytes whatever the item size."""
    monkeypatch.setattr(_early_answer, "SEND_CHUNK", 4)
    wire.conn.send(data)
    assert wire.events == ["look", b"0123", "look", b"4567", "look", b"89"]


@pytest.mark.parametrize("data, chunks", [(b"012345678", [b"0123", b"4567", b"8"]), (b"0123", [b"0123"]),
                                          (b"0", [b"0"]), (b"", [])], ids=["9", "4", "1", "0"])
def test_every_byte_is_sent_once_whatever_the_length(
        wire: Wire, monkeypatch: pytest.MonkeyPatch, data: bytes, chunks: List[bytes]) -> None:
    """With SEND_CHUNK 4, lengths around a chunk's edge: every byte goes once, a short last chunk too."""
    monkeypatch.setattr(_early_answer, "SEND_CHUNK", 4)
    wire.conn.send(data)
    assert wire.sent == chunks and wire.events.count("look") == len(chunks)


def test_a_file_is_handed_to_http_client_whole(wire: Wire) -> None:
    """A body that is no bytes (a file) goes to http.client's own send as it is, once, with no look."""
    body = io.BytesIO(b"0123456789")
    wire.conn.send(body)
    assert wire.events == [body]


def test_a_send_connects_first() -> None:
    """A connection with no socket yet connects before its first look, and sends for real."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        conn = _EarlyAnswerConnection("127.0.0.1", server.getsockname()[1], timeout=10)
        try:
            conn.send(b"hello")
            accepted, _ = server.accept()
            with accepted:
                accepted.settimeout(10)
                assert accepted.recv(16) == b"hello"
        finally:
            conn.close()


# -- _Prefixed ---------------------------------------------------------------------------------------------------------


class Trickle(io.RawIOBase):
    """A raw stream that gives at most 3 bytes a read, as a socket gives what has come so far."""

    def __init__(self, data: bytes) -> None:
        """Holds ``data`` to trickle out."""
        super().__init__()
        self._data = data

    def readable(self) -> bool:
        """Always."""
        return True

    def readinto(self, buffer: Any) -> int:
        """Up to 3 bytes."""
        n = min(3, len(buffer), len(self._data))
        buffer[:n] = self._data[:n]
        self._data = self._data[n:]
        return n


def reads(stream: io.RawIOBase, sizes: List[int]) -> List[bytes]:
    """What ``readinto`` gives into buffers of ``sizes``, one read each."""
    got = []
    for size in sizes:
        buffer = bytearray(size)
        n = stream.readinto(buffer)
        assert n is not None
        got.append(bytes(buffer[:n]))
    return got


def test_prefixed_gives_the_head_then_the_rest_in_small_reads() -> None:
    """Reads of 4 bytes: the head in buffer-sized pieces (the last one short), then the rest, then the end."""
    stream = _Prefixed(b"abcdef", io.BufferedReader(io.BytesIO(b"ghij")))  # type: ignore[arg-type]
    assert reads(stream, [4, 4, 4, 4]) == [b"abcd", b"ef", b"ghij", b""]


def test_prefixed_gives_only_the_head_to_a_larger_buffer() -> None:
    """A read larger than the head gets the head alone; the next read gets the rest."""
    stream = _Prefixed(b"abcdef", io.BufferedReader(io.BytesIO(b"ghij")))  # type: ignore[arg-type]
    assert reads(stream, [100, 100, 100]) == [b"abcdef", b"ghij", b""]


def test_prefixed_reads_the_rest_once_rather_than_wait_for_a_full_buffer() -> None:
    """After the head, one read of the rest (what has come), not reads until the buffer is full: a keep-alive
    answer's end would wait for bytes that never come."""
    stream = _Prefixed(b"ab", io.BufferedReader(Trickle(b"cdefgh")))
    assert reads(stream, [100, 100, 100, 100]) == [b"ab", b"cde", b"fgh", b""]


def test_prefixed_is_a_readable_stream_that_closes_the_rest() -> None:
    """Buffered, it reads as the head and the rest joined; closing it closes the rest."""
    rest = io.BufferedReader(io.BytesIO(b"ghij"))  # type: ignore[arg-type]
    stream = io.BufferedReader(_Prefixed(b"abcdef", rest))
    assert stream.read(100) == b"abcdefghij"  # bounded: a head that never shrinks must fail, not fill the memory
    assert stream.read(100) == b""
    stream.close()
    assert rest.closed


# -- through the client ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("error", CUT_OFF_ERRORS, ids=CUT_OFF_IDS)
def test_a_reset_upload_without_an_answer_is_unreachable_after_retries(
    monkeypatch: pytest.MonkeyPatch, error: Callable[[], OSError]
) -> None:
    """A server that reads the headers and hangs up, the body's send reset (over TLS: the peer's EOF): "unreachable"
    with the reset as the reason, retried like any reset (max_retries + 1 tries)."""
    tries: List[bytes] = []
    done = threading.Event()
    # Released by each failed body send: the server hangs up after it, not before the look that precedes the body
    # (which would find the close, an early answer, instead of the reset).
    reset = threading.Semaphore(0)
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(30)
    address = server.getsockname()

    def hang_up_after_the_headers() -> None:
        """Accepts each try, reads its headers, and closes without an answer; ends on the connection after ``done``."""
        while True:
            peer, _ = server.accept()
            with peer:
                if done.is_set():
                    return
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = peer.recv(1 << 16)
                    if not chunk:
                        break
                    head += chunk
                tries.append(head)
                reset.acquire(timeout=30)

    real_send = http.client.HTTPConnection.send

    def reset_the_body(conn: http.client.HTTPConnection, data: Any) -> None:
        """Sends the headers; the body's send fails as on a server that reset the connection."""
        if bytes(data[:5]) == b"POST ":
            real_send(conn, data)
            return
        reset.release()
        raise error()

    monkeypatch.setattr(http.client.HTTPConnection, "send", reset_the_body)
    thread = threading.Thread(target=hang_up_after_the_headers, daemon=True)
    thread.start()
    try:
        client = ZpruneClient(f"http://127.0.0.1:{address[1]}", max_retries=2, timeout=30)
        waits: List[float] = []
        client.sleep = waits.append
        with pytest.raises(ZpruneError) as info:
            client.request("POST", "/v1/prune", b"w" * 100)
    finally:
        done.set()
        socket.create_connection(address, timeout=30).close()  # wakes the accept: closing the socket may not
        thread.join(30)
        server.close()
    err = info.value
    assert (err.code, err.status) == ("unreachable", 0), err
    assert type(error()).__name__ in err.message, "the reason is the send's error, not the read that found no answer"
    assert len(tries) == 3 and len(waits) == 2, "a reset is retried max_retries times"
    assert all(t.startswith(b"POST /v1/prune ") for t in tries)
