"""urllib handlers whose connections notice an answer that comes while the request body is still being sent.

A proxy refuses a body over its limit as soon as it has the headers (nginx's ``client_max_body_size``: 413, then the
connection closed with the body unread, which resets it). http.client sends the whole body before it reads a byte,
so the reset surfaces as a connection error, the 413 is never seen, and the request is retried in vain. These
connections send the body in chunks and look for an answer before each one; when one is there, or the send fails
with a reset, the answer is read instead of the rest of the body.
"""

from __future__ import annotations

import http.client
import io
import selectors
import socket
import ssl
import urllib.error
import urllib.request
from typing import Any, Optional, cast

#: Bytes sent between two looks for an early answer: small beside a layer's weights, large beside a syscall.
SEND_CHUNK = 1 << 20

#: Send errors after which the server may still have answered: a peer that closed with the body unread.
_CUT_OFF = (BrokenPipeError, ConnectionResetError, ssl.SSLEOFError)


def _readable(sock: socket.socket) -> bool:
    """Whether a read of ``sock`` would find something (bytes, a TLS record, the peer's close) without waiting."""
    if isinstance(sock, ssl.SSLSocket) and sock.pending() > 0:
        return True
    with selectors.DefaultSelector() as sel:  # not select.select: it fails for a descriptor past FD_SETSIZE
        sel.register(sock, selectors.EVENT_READ)
        return bool(sel.select(0))


def _answer_so_far(sock: socket.socket) -> Optional[bytes]:
    """The bytes the peer has sent so far (``b""`` when it has closed), or None when nothing has come.

    Readable is not enough on TLS: a TLS 1.3 session ticket makes the socket readable with no answer behind it. So the
    socket is read without blocking, and what it gives is put back in front of the answer (``_Prefixed``).
    """
    if not _readable(sock):
        return None
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        return sock.recv(1 << 16)
    except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
        return None
    finally:
        sock.settimeout(timeout)


class _Prefixed(io.RawIOBase):
    """A stream that yields ``head`` first, then what ``rest`` gives: bytes read ahead put back in front."""

    def __init__(self, head: bytes, rest: io.BufferedReader) -> None:
        super().__init__()
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        """Always: it is a reading stream."""
        return True

    def readinto(self, buffer: Any) -> int:
        """Fills ``buffer`` from the bytes put back, then with one read of the rest (which may be short)."""
        if not self._head:
            return self._rest.readinto1(buffer)
        n = min(len(buffer), len(self._head))
        buffer[:n] = self._head[:n]
        self._head = self._head[n:]
        return n

    def close(self) -> None:
        """Closes the stream underneath too."""
        self._rest.close()
        super().close()


class _EarlyAnswerConnection(http.client.HTTPConnection):
    """Sends in chunks of ``SEND_CHUNK``, and stops at the first sign of an answer (see the module's docstring)."""

    #: What arrived while sending, once something did (then the rest of the body is not sent).
    _early: Optional[bytes] = None
    #: The error that ended the sending, where the server may have answered before it.
    _cut_off: Optional[OSError] = None

    def send(self, data: Any) -> None:
        """Sends ``data`` (the headers, then the body), unless an answer or a reset has ended the sending."""
        if self._early is not None or self._cut_off is not None:
            return  # the server has answered or hung up: the rest would go nowhere
        try:
            view = memoryview(data).cast("B")
        except TypeError:
            super().send(data)  # a file or an iterable, which this client never sends
            return
        if self.sock is None:
            self.connect()
        sock = cast(socket.socket, self.sock)  # connected now
        try:
            for start in range(0, len(view), SEND_CHUNK):
                self._early = _answer_so_far(sock)
                if self._early is not None:
                    return
                super().send(view[start:start + SEND_CHUNK])
        except _CUT_OFF as e:
            self._cut_off = e

    def getresponse(self) -> http.client.HTTPResponse:
        """The answer, also one that came while sending; a cut-off send without one raises as urllib would have."""
        if self._early is None:
            try:
                return super().getresponse()
            except (OSError, http.client.HTTPException):
                if self._cut_off is None:
                    raise
                # No answer behind the reset: the send's own error, as urllib reports one (a connection error).
                raise urllib.error.URLError(self._cut_off) from None
        # The answer began while the body was being sent, and its first bytes are read: the response reads them first.
        response = self.response_class(self.sock, method=self._method)  # type: ignore[attr-defined]
        response.fp = io.BufferedReader(_Prefixed(self._early, response.fp))
        try:
            response.begin()
        except BaseException:
            response.close()
            raise
        return response


class _EarlyAnswerHTTPSConnection(_EarlyAnswerConnection, http.client.HTTPSConnection):
    """The same over TLS."""


class HTTPHandler(urllib.request.HTTPHandler):
    """urllib's handler for ``http://``, with connections that notice an early answer."""

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        """Opens ``req`` as urllib does, on an ``_EarlyAnswerConnection``."""
        return self.do_open(_EarlyAnswerConnection, req)


class HTTPSHandler(urllib.request.HTTPSHandler):
    """urllib's handler for ``https://``, with connections that notice an early answer."""

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        """Opens ``req`` as urllib does, with the handler's TLS context, on an ``_EarlyAnswerHTTPSConnection``."""
        # typeshed's protocol for the class takes `timeout` third, HTTPSConnection `key_file`: urllib passes keywords.
        context = getattr(self, "_context", None)
        return self.do_open(_EarlyAnswerHTTPSConnection, req, context=context)  # type: ignore[arg-type]
