"""HTTP client for a zprune server: ``POST /v1/prune`` and the informational routes, over ``urllib``.

Errors the server answers become ``ZpruneError(code, message, status)``; ``busy`` (429) and ``unavailable`` (503)
are retried with exponential backoff, honouring ``Retry-After``.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import math
import numbers
import os
import random
import re
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import msgpack
import numpy as np

from . import __version__
from ._early_answer import HTTPHandler, HTTPSHandler
from .wire import ArrayLike, WireDType, decode_body, decode_tensor, encode_request, encode_tensor, unpack_mask

if TYPE_CHECKING:
    from numpy.typing import NDArray

#: Where the client looks when no ``url`` is given: ``$ZPRUNE_URL``, else this.
DEFAULT_URL = "http://127.0.0.1:8787"

#: Seconds one attempt may take by default: past the server's default deadline (600 s, ``ZPRUNE_DEADLINE_MS``), so
#: that a request the server is still working on gets the server's own answer (503 to retry or 504, naming where the
#: time went) rather than a client timeout that cannot tell a slow layer from a hung server.
DEFAULT_TIMEOUT = 660.0

#: HTTP statuses that are retried.
RETRY_STATUSES = (429, 503)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Leaves a 3xx answer as it is: urllib would follow a POST's 301-303 as a GET without the body, which then
    reads as the wrong route (404) instead of a server at another URL."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        return None


def _opener() -> urllib.request.OpenerDirector:
    """The default handlers (proxies from the environment as it is now included), redirects aside, and connections
    that read an answer that comes before the whole body is sent (a proxy's 413) rather than fail on the reset that
    follows it."""
    return urllib.request.build_opener(_NoRedirect, HTTPHandler, HTTPSHandler)


__all__ = [
    "DEFAULT_TIMEOUT",
    "DEFAULT_URL",
    "ZpruneError",
    "Layer",
    "LayerResult",
    "PruneResult",
    "ZpruneClient",
    "prune_layer",
    "prune_layers",
]


class ZpruneError(Exception):
    """An error answered by the server (or a failure to reach it).

    Attributes:
        code: the contract's snake_case code, e.g. ``"shape_mismatch"``, ``"busy"``; ``"unreachable"`` when no
            answer came (``status`` is then 0), ``"invalid_response"`` when the answer breaks the contract.
        message: the server's explanation.
        status: the HTTP status (0 when there was no answer).
        retry_after: seconds from the ``Retry-After`` header, when there was one.
        request_id: the answer's ``X-Request-Id``, under which the server logged the request, when there was one.
    """

    def __init__(
        self,
        code: str,
        message: str,
        status: int,
        *,
        retry_after: Optional[float] = None,
        request_id: Optional[str] = None,
    ) -> None:
        super().__init__(f"{code} ({status}): {message}")
        self.code = code
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.request_id = request_id

    def __reduce__(self) -> Any:  # keep pickling (e.g. across processes) working: the keyword-only attributes too
        state = {"retry_after": self.retry_after, "request_id": self.request_id}
        return (type(self), (self.code, self.message, self.status), state)


@dataclass
class Layer:
    """One layer of a request.

    Attributes:
        name: echoed back in the answer.
        weight: ``[rows, cols]`` (output features × input features, as ``torch.nn.Linear.weight``), f32/f16/bf16.
        act_norm_sq: ``[cols]``: per input feature, the sum over calibration tokens of x_j² divided by the number
            of calibration sequences. Sent as f32.
        inputs: ``[tokens, cols]`` raw calibration inputs instead of ``act_norm_sq`` (the server sums the squares).
        dtype: force the wire dtype of ``weight`` (and ``inputs``); required as ``"bf16"`` for a numpy uint16 array
            holding bfloat16 bits.
    """

    name: str
    weight: ArrayLike
    act_norm_sq: Optional[ArrayLike] = None
    inputs: Optional[ArrayLike] = None
    dtype: Optional[WireDType] = None

    def to_wire(self, *, copy: bool = True) -> Dict[str, Any]:
        """The layer's wire map. Raises ``ValueError`` naming the layer and field where a finite value would be sent
        as infinity (beyond the range of the dtype it is sent in), or where a tensor has another number of dimensions
        than API.md gives it (``weight`` [rows, cols], ``act_norm_sq`` [cols], ``inputs`` [tokens, cols]; a 0-d
        array included). With ``copy=False`` its tensors' data are views, of the layer's own arrays where they need
        no conversion (see ``encode_tensor``). A name with a lone surrogate, which UTF-8 cannot carry, raises
        ``ValueError`` too, as the TypeScript client refuses it."""
        if isinstance(self.name, str):
            try:
                self.name.encode("utf-8")
            except UnicodeEncodeError as e:
                raise ValueError(
                    f"layer {self.name!r}: its name holds a lone surrogate, which UTF-8 cannot carry"
                ) from e
        out: Dict[str, Any] = {"name": self.name, "weight": self._encode("weight", self.weight, self.dtype, copy)}
        if self.act_norm_sq is not None:
            out["actNormSq"] = self._encode("act_norm_sq", self.act_norm_sq, "f32", copy)
        if self.inputs is not None:
            out["inputs"] = self._encode("inputs", self.inputs, self.dtype, copy)
        return out

    def _encode(self, field: str, x: ArrayLike, dtype: Optional[WireDType], copy: bool) -> Dict[str, Any]:
        try:
            t = encode_tensor(x, dtype, copy=copy)
        except (ValueError, TypeError) as e:  # which of a request's tensors, as the server's messages say
            raise type(e)(f"layer {self.name!r}, {field}: {e}") from e
        # The server refuses these too (invalid_request, shape_mismatch), as it does the TypeScript client's tensors,
        # but only once the whole body is up, and naming the wire's field rather than the caller's.
        want = _RANKS[field]
        if len(t["shape"]) != len(want):
            raise ValueError(f"layer {self.name!r}, {field}: expected shape [{', '.join(want)}], got {t['shape']}")
        return t


#: The dimensions API.md gives each tensor of a layer, by ``Layer`` field.
_RANKS = {"weight": ("rows", "cols"), "act_norm_sq": ("cols",), "inputs": ("tokens", "cols")}


@dataclass
class LayerResult:
    """One pruned layer of an answer.

    Attributes:
        name: the request's name for it.
        shape: ``(rows, cols)``.
        mask: bool array of ``shape``; True where the weight is pruned (set to zero).
        stats: the server's statistics: ``pruned``, ``total``, ``sparsity``, ``threshold`` (layer pattern),
            ``alpha`` (zpruner), ``rowSparsity {min, max, mean}``, ``nonFinite``.
        weight: the pruned weights in the request's dtype (bf16 as uint16 bits), when asked for.
        score: the f32 importance score of every weight, when asked for.
            ``weight`` and ``score`` are read-only views of the bytes msgpack decoded them into, not copies of them:
            ``np.array(layer.weight)`` (or ``torch.tensor``) for one to write to.
        exact_path: why a WebGPU server computed this layer on its exact CPU path (same mask, slower); else None.
    """

    name: str
    shape: Tuple[int, int]
    mask: NDArray[np.bool_]
    stats: Dict[str, Any]
    weight: Optional[NDArray[Any]] = None
    score: Optional[NDArray[np.float32]] = None
    exact_path: Optional[str] = None


@dataclass
class PruneResult:
    """A whole answer of ``POST /v1/prune``: the layers in request order, and where and how fast they were pruned."""

    backend: str
    device: str
    timings: Dict[str, float]
    layers: List[LayerResult] = field(default_factory=list)

    def __getitem__(self, name: str) -> LayerResult:
        """The layer called ``name``."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)


LayerSpec = Union[Layer, Mapping[str, Any], Tuple[Any, ...]]


def _as_layer(spec: LayerSpec, index: int) -> Layer:
    if isinstance(spec, Layer):
        return spec
    if isinstance(spec, Mapping):
        d = dict(spec)
        if "actNormSq" in d:
            d["act_norm_sq"] = d.pop("actNormSq")
        d.setdefault("name", f"layer{index}")
        return Layer(**d)
    if isinstance(spec, tuple):
        return Layer(*spec)
    raise TypeError(f"layers[{index}]: expected a Layer, a dict or a (name, weight, act_norm_sq) tuple")


def _retry_after(value: Optional[str]) -> Optional[float]:
    if not value:
        return None
    try:
        seconds = float(value)
        return max(0.0, seconds) if math.isfinite(seconds) else None  # "inf" or "nan" says nothing usable
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _read_by(resp: http.client.HTTPResponse, deadline: float) -> bytearray:
    """The whole body of ``resp``, or ``TimeoutError`` past ``deadline`` (the socket's own timeout bounds each read
    only, so a server that trickles its answer would otherwise never be cut off).

    Read into one buffer of the answer's Content-Length where it has one: chunks joined at the end would hold a
    large answer twice.
    """
    length = resp.length  # None without a Content-Length (chunked, or ended by closing): the buffer grows
    body = bytearray(length or 0)
    at = 0
    while True:
        chunk = resp.read1(1 << 20)
        if not chunk:
            if resp.length:  # the connection ended before the Content-Length did (read1 does not raise it)
                raise http.client.IncompleteRead(bytes(body[:at]), resp.length)
            return body
        if length is None:
            body += chunk
        else:
            body[at : at + len(chunk)] = chunk  # read1 reads no further than the Content-Length
        at += len(chunk)
        del chunk  # not held while the next one is read
        # Cut off only an answer still coming: one whose last byte is here is kept, however late.
        if time.monotonic() > deadline and (resp.length is None or resp.length > 0):
            raise TimeoutError("the answer did not arrive within the client's timeout")


def _lower_keys(items: Iterable[Tuple[str, str]]) -> Dict[str, str]:
    """Header names are case-insensitive: keep them in lower case."""
    return {k.lower(): v for k, v in items}


#: What an error code looks like (the contract's codes are snake_case), in a body or in ``X-Zprune-Error``.
_ERROR_CODE = re.compile(r"[a-z][a-z0-9_]{0,63}")

#: The code of an error answer that names none (a proxy's page, a body cut short): the first of the contract's codes
#: with its status, as the TypeScript client picks it (codeOfStatus over ERROR_STATUS in contract/errors.ts). Not
#: 504: without the server's body it is a proxy's gateway timeout, not zprune's deadline_exceeded.
_CODE_OF_STATUS = {
    400: "bad_msgpack",
    401: "unauthorized",
    404: "not_found",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "busy",
    499: "client_closed_request",
    500: "internal",
    503: "unavailable",
}


def _error_map(content_type: str, body: bytes) -> Mapping[str, Any]:
    """The ``error`` map of a zprune error body (JSON or msgpack), or an empty map for any other body."""
    try:
        parsed = decode_body(body) if "msgpack" in content_type else json.loads(body.decode("utf-8"))
    except Exception:  # noqa: BLE001 - an unparsable body (a proxy's page, a body cut short) names no error
        return {}
    err = parsed.get("error") if isinstance(parsed, Mapping) else None
    return err if isinstance(err, Mapping) else {}


def _error_code(status: int, in_body: Any, in_header: Optional[str]) -> str:
    """The body's code where it looks like one, else the ``X-Zprune-Error`` header's, else the status's."""
    # The header repeats the code: a body cut short (or eaten by a proxy) still says what happened.
    for code in (in_body, (in_header or "").strip()):
        if isinstance(code, str) and _ERROR_CODE.fullmatch(code):
            return code
    return _CODE_OF_STATUS.get(status, f"http_{status}")


def _error_from(status: int, headers: Mapping[str, str], body: bytes) -> ZpruneError:
    """The ``ZpruneError`` of an error answer: its code, the server's message (else the body's start), its status."""
    err = _error_map((headers.get("content-type") or "").lower(), body)
    code = _error_code(status, err.get("code"), headers.get("x-zprune-error"))
    message = err.get("message")
    if not isinstance(message, str):
        message = body[:200].decode("utf-8", "replace") or f"HTTP {status} with no error body"
    retry_after = _retry_after(headers.get("retry-after"))
    return ZpruneError(code, message, status, retry_after=retry_after, request_id=headers.get("x-request-id"))


class _UnusableURL(http.client.InvalidURL, ValueError):
    """A base URL the client cannot use: ``http.client.InvalidURL`` as always, and a ``ValueError`` as the TypeScript
    client's ``TypeError`` is one of its kind."""


#: A URL's ``user:password@``, with or without a scheme before it.
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)?[^/?#]*@")


def _shown(url: str) -> str:
    """``url`` quoted for an error message, any ``user:password@`` in it masked: a password is never echoed."""
    return repr(_USERINFO.sub(lambda m: f"{m.group(1) or ''}***@", url, count=1))


def _checked_url(url: str) -> str:
    """``url`` if it is ``http(s)://host[:port][/path]``, else ``http.client.InvalidURL`` (a ``ValueError``) at once.

    urllib would take ``127.0.0.1:8787`` (no scheme) for an unknown scheme and ``ftp://...`` for an FTP transfer
    that waits out the whole timeout: both are mistyped server URLs, not network failures worth retrying. Paths are
    appended to the base as text, so a query or fragment would swallow them (a misleading 404), and a
    ``user:password@`` would go out as Basic auth beside the token: refused too, as the TypeScript client does.
    """
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise _UnusableURL(f"{_shown(url)}: a URL has no spaces or control characters")
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # raises ValueError for a port that is not a number in range
    except ValueError as e:
        raise _UnusableURL(f"{_shown(url)}: {e}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _UnusableURL(f"{_shown(url)}: expected http://host:port or https://host:port")
    if "@" in parts.netloc:
        raise _UnusableURL(f"{_shown(url)}: the base URL takes no user:password@ (give a token)")
    if "?" in url or "#" in url:
        raise _UnusableURL(f"{_shown(url)}: the base URL takes no query or fragment (paths are appended to it)")
    return url


class ZpruneClient:
    """A connection-less client for one zprune server.

    Args:
        url: the server's base URL, without query, fragment or ``user:password@``; defaults to ``$ZPRUNE_URL`` or
            ``http://127.0.0.1:8787``. One the client cannot use raises ``http.client.InvalidURL`` (a ``ValueError``).
        token: sent as ``Authorization: Bearer <token>``; defaults to ``$ZPRUNE_TOKEN`` when set; ``""`` sends none,
            whatever ``$ZPRUNE_TOKEN`` says.
        timeout: seconds one attempt may wait: for the connection, for each send, for the answer to begin; and an
            answer still arriving ``timeout`` seconds after the attempt began (its upload included, as the
            TypeScript client counts) is cut off. ``math.inf`` for no limit.
        max_retries: how often a 429 (busy) or 503 (unavailable) answer, or a connection refused, reset or closed
            before the whole answer came (a server restarting), is retried before it is raised.
        backoff: the first wait between retries, doubled each time (jittered by +-25 %); a server's ``Retry-After``
            is the least wait.
        max_backoff: the longest wait between two tries, a server's ``Retry-After`` included.

    Example:
        >>> client = ZpruneClient("http://127.0.0.1:8787")            # doctest: +SKIP
        >>> mask, stats = client.prune_layer(w, act, sparsity=0.5)    # doctest: +SKIP
    """

    def __init__(
        self,
        url: Optional[str] = None,
        token: Optional[str] = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
    ) -> None:
        # Surrounding whitespace (a URL read from a file ends with a newline) is dropped, as the token's is.
        self.url = _checked_url((url or os.environ.get("ZPRUNE_URL") or DEFAULT_URL).strip().rstrip("/"))
        # A token read from a secret file often ends with a newline, which no header may carry (the server trims too).
        raw = token if token is not None else os.environ.get("ZPRUNE_TOKEN")
        self.token = (raw or "").strip() or None
        # Proxies too are read from the environment when the client is made, not when the module was imported.
        self._opener = _opener()
        # Checked now, as the TypeScript client checks its options: 0 would fail every connection as "unreachable"
        # (a non-blocking socket), infinity at the first request (OverflowError), a negative backoff at the first
        # retry (time.sleep refuses it). NaN fails every comparison.
        # numbers.Real takes numpy's scalars too; a bool is an int to Python, never meant as seconds or a count.
        if not (isinstance(timeout, numbers.Real) and not isinstance(timeout, bool) and timeout > 0):
            raise ValueError(f"timeout must be a number of seconds over 0 (math.inf: no limit), got {timeout!r}")
        if not (isinstance(max_retries, numbers.Integral) and not isinstance(max_retries, bool) and max_retries >= 0):
            raise ValueError(f"max_retries must be a whole number from 0, got {max_retries!r}")
        for option, value in (("backoff", backoff), ("max_backoff", max_backoff)):
            if not (isinstance(value, numbers.Real) and not isinstance(value, bool) and 0 <= value < math.inf):
                raise ValueError(f"{option} must be a number of seconds from 0, got {value!r}")
        # As Python's own numbers: a numpy scalar would not do as a range() bound or a socket timeout.
        self.timeout: float = float(timeout)
        self.max_retries: int = int(max_retries)
        self.backoff: float = float(backoff)
        self.max_backoff: float = float(max_backoff)
        #: The sleep function between retries (replaceable in tests).
        self.sleep: Callable[[float], None] = time.sleep

    # -- transport -------------------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: Optional[bytes] = None,
        content_type: str = "application/msgpack",
    ) -> Tuple[int, Dict[str, str], bytearray]:
        """Sends one HTTP request, retrying 429, 503, and connections refused, reset or closed mid-answer; returns
        ``(status, headers, body)`` of a 2xx answer (header names in lower case; the body a ``bytearray``, read into
        one buffer).

        Raises ``ZpruneError`` for any other answer, and with code ``"unreachable"`` when the server cannot be
        reached (after the retries, for a refused, reset or cut-short connection; at once for a timeout, an unknown
        host or a peer that does not answer HTTP). A malformed URL raises ``http.client.InvalidURL`` (a ``ValueError``)
        at once.
        """
        headers = {
            "Accept": "application/msgpack, application/json",
            "User-Agent": f"zprune-client-python/{__version__}",
        }
        if body is not None:
            headers["Content-Type"] = content_type
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        attempt = 0
        while True:
            req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers)
            try:
                deadline = time.monotonic() + self.timeout
                # A socket takes None, not infinity, for no limit.
                with self._opener.open(req, timeout=None if math.isinf(self.timeout) else self.timeout) as resp:
                    return resp.status, _lower_keys(resp.headers.items()), _read_by(resp, deadline)
            except urllib.error.HTTPError as e:
                if 300 <= e.code < 400:
                    location = e.headers.get("Location") if e.headers else None
                    e.close()
                    raise ZpruneError(
                        "invalid_response",
                        f"{path} was redirected{f' to {location}' if location else ''} (HTTP {e.code}): give the "
                        "server's own URL as url",
                        e.code,
                    ) from None
                try:
                    raw = e.read()
                except (http.client.HTTPException, OSError):
                    raw = b""  # the error's body was cut short: its status and headers still say what happened
                err = _error_from(e.code, _lower_keys(e.headers.items()) if e.headers else {}, raw)
                e.close()
                if e.code not in RETRY_STATUSES or attempt >= self.max_retries:
                    raise err from None
            except http.client.InvalidURL:
                raise  # a mistyped URL: no network failure, and no retry will mend it
            # socket.timeout: a read timeout before Python 3.10, where it is not yet TimeoutError.
            except (urllib.error.URLError, ConnectionError, TimeoutError, socket.timeout,
                    http.client.HTTPException) as e:
                reason = e.reason if isinstance(e, urllib.error.URLError) else e
                err = ZpruneError("unreachable", f"cannot reach {self.url}: {reason!r}", 0)
                # A refused or reset connection, or one closed before the whole answer came (IncompleteRead), is
                # what a restarting server looks like: worth another try (the request is idempotent). Over TLS a
                # peer that hung up mid-upload may show as SSLEOFError instead of a reset: the same. A timeout
                # already waited `timeout`; an unknown host will not appear; a peer that does not speak HTTP
                # (BadStatusLine, LineTooLong) will not either, nor a certificate refused.
                retry = isinstance(reason, (ConnectionError, http.client.IncompleteRead, ssl.SSLEOFError))
                if not retry or attempt >= self.max_retries:
                    raise err from e
            # Doubling from `backoff`, jittered by +-25 % so that many clients do not return in lockstep. A server's
            # Retry-After is the least wait (zprune's says 1 s however long it stays busy: the growth is the
            # client's), stretched by up to 25 % for the same reason. Then capped: max_backoff holds, and a day's
            # Retry-After must not hang a notebook.
            # 2**attempt as a float overflows past attempt 1023 (max_retries may be any whole number): capped.
            delay = self.backoff * (2.0 ** min(attempt, 64)) * (0.75 + 0.5 * random.random())
            if err.retry_after is not None:
                delay = max(delay, err.retry_after * (1 + 0.25 * random.random()))
            delay = min(self.max_backoff, delay)
            self.sleep(delay)
            attempt += 1

    def _get_json(self, path: str) -> Dict[str, Any]:
        _, headers, body = self.request("GET", path)
        try:
            if "msgpack" in (headers.get("content-type") or ""):
                return dict(decode_body(body))
            return dict(json.loads(body.decode("utf-8")))
        except (ValueError, TypeError, msgpack.UnpackException) as e:  # JSON and UTF-8 errors are ValueErrors
            raise ZpruneError("invalid_response", f"{path} answered neither a JSON nor a msgpack map: {e}", 200) from e

    def health(self) -> Dict[str, Any]:
        """``GET /healthz``: ``{"status": "ok", "backend": ...}``; ``invalid_response`` for another answer."""
        answer = self._get_json("/healthz")
        if answer.get("status") != "ok" or answer.get("backend") not in _BACKENDS:
            raise ZpruneError("invalid_response", f"/healthz answered {answer!r}, not status ok and a backend", 200)
        return answer

    def info(self) -> Dict[str, Any]:
        """``GET /v1/info``: version, backend, device, limits, methods, patterns, dtypes and returns.

        Checked as the TypeScript client checks it (``invalid_response`` where a field is missing or of another type);
        the four lists may name methods, patterns, dtypes and returns this client does not know: a newer server may add
        them (API.md), and they change nothing this client sends.
        """
        answer = self._get_json("/v1/info")
        problem = _info_problem(answer)
        if problem:
            raise ZpruneError("invalid_response", f"/v1/info: {problem}", 200)
        return answer

    def prune_raw(self, body: Union[bytes, Mapping[str, Any]]) -> Dict[str, Any]:
        """Posts a ready request (msgpack bytes, or a map to encode) and returns the decoded answer map as is."""
        return self._prune_raw(body)[0]

    def _prune_raw(self, body: Union[bytes, Mapping[str, Any]]) -> Tuple[Dict[str, Any], Optional[str]]:
        """``prune_raw``'s answer and its ``X-Request-Id`` (an answer out of contract is raised with it)."""
        data = body if isinstance(body, (bytes, bytearray)) else encode_request(body)
        _, headers, answer = self.request("POST", "/v1/prune", bytes(data))
        del data  # a body encoded here is not held beside the answer and what msgpack decodes from it
        request_id = headers.get("x-request-id")
        try:
            decoded = decode_body(answer)
        except (ValueError, TypeError, msgpack.UnpackException) as e:
            # Some of msgpack's own exceptions carry no text (FormatError for 0xc1): their class names the fault.
            why = str(e) or type(e).__name__
            raise ZpruneError("invalid_response", f"the answer is not one msgpack value: {why}", 200,
                              request_id=request_id) from e
        if not isinstance(decoded, Mapping) or not isinstance(decoded.get("layers"), list):
            raise ZpruneError("invalid_response", "the answer is not a map with a layers array", 200,
                              request_id=request_id)
        return dict(decoded), request_id

    # -- pruning ---------------------------------------------------------------------------------------------

    def prune_layers(
        self,
        layers: Iterable[LayerSpec],
        *,
        method: str = "zpruner",
        pattern: str = "layer",
        sparsity: Optional[float] = None,
        exponent: Optional[float] = None,
        data_free: Optional[bool] = None,
        returns: Sequence[str] = ("mask",),
    ) -> PruneResult:
        """Prunes several layers in one request; each is pruned on its own.

        Args:
            layers: ``Layer`` objects, dicts with the same keys, or ``(name, weight, act_norm_sq)`` tuples.
            method: ``"zpruner"``, ``"wanda"``, ``"ria"`` or ``"magnitude"``.
            pattern: ``"layer"``, ``"row"`` or ``"N:M"`` such as ``"2:4"``.
            sparsity: fraction to prune, ``0 <= sparsity < 1``; required for ``layer`` and ``row``.
            exponent: activation exponent (defaults 1.5 zpruner, 1 wanda, 0.5 ria).
            data_free: let a method that wants activations run without them.
            returns: any of ``"mask"``, ``"weight"``, ``"score"``; one name alone is one item, not its letters.

        Returns:
            A ``PruneResult`` with one ``LayerResult`` per layer, in request order.
        """
        specs = [_as_layer(s, i) for i, s in enumerate(layers)]
        body: Dict[str, Any] = {
            "method": method,
            "pattern": pattern,
            "layers": [s.to_wire(copy=False) for s in specs],  # encoded at once: one copy of the weights, the body's
        }
        if sparsity is not None:
            body["sparsity"] = float(sparsity)
        options: Dict[str, Any] = {}
        if exponent is not None:
            options["exponent"] = float(exponent)
        if data_free is not None:
            options["dataFree"] = bool(data_free)
        if options:
            body["options"] = options
        # A str is a Sequence[str] of its letters: ["w", "e", ...] would come back as a server error about `return`.
        returns = (returns,) if isinstance(returns, str) else tuple(returns)
        if returns != ("mask",):
            body["return"] = list(returns)
        answer, request_id = self._prune_raw(body)
        expected = [(layer["name"], tuple(layer["weight"]["shape"])) for layer in body["layers"]]
        dtypes = [layer["weight"]["dtype"] for layer in body["layers"]]
        try:
            return parse_prune_answer(answer, expected, returns=returns, dtypes=dtypes, pattern=pattern,
                                      sparsity=sparsity)
        except ZpruneError as e:
            # An answer out of contract is worth asking the server's operator about, as an error answer is.
            e.request_id = e.request_id or request_id
            raise

    def prune_layer(
        self,
        weight: ArrayLike,
        act_norm_sq: Optional[ArrayLike] = None,
        *,
        method: str = "zpruner",
        pattern: str = "layer",
        sparsity: Optional[float] = None,
        name: str = "layer",
        dtype: Optional[WireDType] = None,
        inputs: Optional[ArrayLike] = None,
        exponent: Optional[float] = None,
        data_free: Optional[bool] = None,
    ) -> Tuple[NDArray[np.bool_], Dict[str, Any]]:
        """Prunes one layer; returns ``(mask, stats)``: a bool array of the weight's shape (True = pruned) and the
        server's statistics. See ``prune_layers`` for the arguments."""
        result = self.prune_layers(
            [Layer(name, weight, act_norm_sq, inputs, dtype)],
            method=method,
            pattern=pattern,
            sparsity=sparsity,
            exponent=exponent,
            data_free=data_free,
        )
        layer = result.layers[0]
        return layer.mask, layer.stats


#: The backends an answer may name (contract/api.ts's BACKEND_KINDS).
_BACKENDS = ("webgpu", "cpu")

#: ``/v1/info``'s limits that are counts (contract/api.ts's InfoResponseSchema).
_INFO_COUNTS = ("maxBodyBytes", "maxLayerElements", "maxQueue", "memoryBudgetBytes", "maxLayers", "maxNameLength",
                "maxM", "maxShapeDims")


def _info_problem(info: Mapping[str, Any]) -> Optional[str]:
    """What in a ``/v1/info`` answer breaks contract/api.ts's InfoResponseSchema (lists of any strings), or None."""
    def count(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    if info.get("name") != "zprune":
        return f"name is {info.get('name')!r}, not 'zprune'"
    for key in ("version", "device"):
        if not isinstance(info.get(key), str):
            return f"{key} is {info.get(key)!r}, not a string"
    if not (isinstance(info.get("apiVersion"), int) and not isinstance(info.get("apiVersion"), bool)):
        return f"apiVersion is {info.get('apiVersion')!r}, not an integer"
    if info.get("backend") not in _BACKENDS:
        return f"backend is {info.get('backend')!r}"
    limits = info.get("limits")
    if not isinstance(limits, Mapping):
        return f"limits is {limits!r}, not a map"
    for key in _INFO_COUNTS:
        if not count(limits.get(key)):
            return f"limits.{key} is {limits.get(key)!r}, not a count"
    msgpack_limits = limits.get("msgpack")
    if not (isinstance(msgpack_limits, Mapping) and all(count(msgpack_limits.get(k)) for k in ("maxDepth",
                                                                                                "maxValues"))):
        return f"limits.msgpack is {msgpack_limits!r}, not a map of maxDepth and maxValues counts"
    exponent = limits.get("exponent")
    if not (isinstance(exponent, Mapping) and all(_is_number(exponent.get(k)) for k in ("min", "max"))):
        return f"limits.exponent is {exponent!r}, not a map of min and max numbers"
    for key in ("methods", "patterns", "dtypes", "returns"):
        value = info.get(key)
        if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            return f"{key} is {value!r}, not a list of strings"
    return None


#: The stage timings every answer carries, in milliseconds (API.md's Response).
_TIMINGS = ("decodeMs", "computeMs", "encodeMs", "totalMs")


def _is_number(v: Any) -> bool:
    """A msgpack number (an int or float, not a bool)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def pruned_counts(pattern: str, sparsity: Optional[float], rows: int, cols: int) -> List[int]:
    """How many weights ``pattern`` prunes in a ``rows`` x ``cols`` layer, by API.md's Selection (as the TypeScript
    client's ``prunedCounts``): ``rows * floor(sparsity * cols)`` for ``"row"``, ``rows * (cols / M) * N`` for N:M, and
    for ``"layer"`` ``floor(sparsity * rows * cols)``, which may read either way: the product first (as the golden files
    and both backends take it) or left to right, which can be one less. Both are given (once where they agree).
    """
    if pattern in ("layer", "row"):
        s = float(sparsity or 0.0)
        if pattern == "row":
            return [rows * math.floor(s * cols)]
        product, literal = math.floor(s * (rows * cols)), math.floor(s * rows * cols)
        return [product] if product == literal else [product, literal]
    n, m = (int(x) for x in pattern.split(":"))
    return [rows * (cols // m) * n]


def parse_prune_answer(
    answer: Mapping[str, Any],
    expected: Optional[Sequence[Tuple[str, Tuple[int, ...]]]] = None,
    *,
    returns: Sequence[str] = (),
    dtypes: Optional[Sequence[str]] = None,
    pattern: Optional[str] = None,
    sparsity: Optional[float] = None,
) -> PruneResult:
    """Turns a decoded answer map into a ``PruneResult``, unpacking masks and tensors.

    With ``expected`` (the request's ``(name, shape)`` per layer), checks that the answer has the same layers in
    the same order; with ``returns`` (the request's ``return``), that each layer has the tensors it asked for; with
    ``dtypes`` (the request's weight dtype per layer), that returned weights come in it; with ``pattern`` (and
    ``sparsity``, the request's), that each mask prunes as many weights as the pattern does. A score is always f32. A
    mismatch raises ``ZpruneError("invalid_response")``, as the TypeScript client does; so does an answer without the
    contract's fields (``backend``, ``device``, ``timings``, each layer's ``stats``) or with one of another type.
    """
    if not isinstance(answer, Mapping):
        raise ZpruneError("invalid_response", f"the answer is {type(answer).__name__}, not a map", 200)
    if answer.get("backend") not in _BACKENDS:
        raise ZpruneError("invalid_response", f"the answer's backend is {answer.get('backend')!r}", 200)
    if not isinstance(answer.get("device"), str):
        raise ZpruneError("invalid_response", f"the answer's device is {answer.get('device')!r}", 200)
    timings = answer.get("timings")
    if not (isinstance(timings, Mapping) and all(_is_number(timings.get(k)) for k in _TIMINGS)):
        raise ZpruneError("invalid_response", f"the answer's timings are {timings!r}, not a map of {_TIMINGS}", 200)
    raw_layers = answer.get("layers")
    if not isinstance(raw_layers, list):
        raise ZpruneError("invalid_response", f"the answer's layers are {raw_layers!r}, not a list", 200)
    if expected is not None and len(raw_layers) != len(expected):
        raise ZpruneError("invalid_response", f"{len(raw_layers)} layers answered for {len(expected)} sent", 200)
    layers: List[LayerResult] = []
    for i, raw in enumerate(raw_layers):
        try:
            shape = tuple(int(s) for s in raw["shape"])
            if expected is not None and (raw["name"] != expected[i][0] or shape != tuple(expected[i][1])):
                raise ZpruneError(
                    "invalid_response",
                    f"layers[{i}] answered as {raw['name']!r} {list(shape)}, sent as {expected[i][0]!r} "
                    f"{list(expected[i][1])}",
                    200,
                )
            mask = unpack_mask(raw["mask"], shape)
            stats = dict(raw["stats"])
            for key in ("pruned", "total"):  # what every caller counts with (prune_model sums them)
                if isinstance(stats.get(key), bool) or not isinstance(stats.get(key), int):
                    raise ValueError(f"stats.{key} is {stats.get(key)!r}, not an integer")
            # API.md: pruned is the number of 1 bits in the mask, total rows * cols.
            ones = int(np.count_nonzero(mask))
            if stats["pruned"] != ones or stats["total"] != mask.size:
                raise ValueError(f"stats say {stats['pruned']} of {stats['total']} pruned, the mask {ones} of "
                                 f"{mask.size}")
            # API.md: exactly so many for the pattern, whichever weights they are.
            if pattern is not None and len(shape) == 2:
                counts = pruned_counts(pattern, sparsity, shape[0], shape[1])
                if ones not in counts:
                    at = f" at {sparsity}" if pattern in ("layer", "row") else ""
                    raise ValueError(f"{ones} of {mask.size} weights pruned, where {pattern}{at} prunes "
                                     f"{' or '.join(str(c) for c in counts)}")
            # The rest of API.md's stats, as the TypeScript client's schema has them.
            rows = stats.get("rowSparsity")
            if not (_is_number(stats.get("sparsity")) and isinstance(rows, Mapping)
                    and all(_is_number(rows.get(k)) for k in ("min", "max", "mean"))):
                raise ValueError(f"stats.sparsity or stats.rowSparsity is missing or not numbers: {stats!r}")
            for key in ("threshold", "alpha"):
                if key in stats and not _is_number(stats[key]):
                    raise ValueError(f"stats.{key} is {stats[key]!r}, not a number")
            if stats.get("nonFinite") != 0 or isinstance(stats.get("nonFinite"), bool):
                raise ValueError(f"stats.nonFinite is {stats.get('nonFinite')!r}, not 0")
            # The weights come back in the request's dtype, the scores in f32; each when `return` asks for it.
            want_dtype = {"weight": dtypes[i] if dtypes is not None else None, "score": "f32"}
            for k in ("weight", "score"):
                if raw.get(k) is None:
                    if k in returns:
                        raise ValueError(f"no {k}, which return asked for")
                elif want_dtype[k] is not None and raw[k]["dtype"] != want_dtype[k]:
                    raise ValueError(f"{k} is {raw[k]['dtype']}, not {want_dtype[k]}")
            tensors = {k: decode_tensor(raw[k]) if raw.get(k) is not None else None for k in ("weight", "score")}
            for k, t in tensors.items():
                if t is not None and t.shape != shape:
                    raise ValueError(f"{k} has shape {list(t.shape)}, the layer {list(shape)}")
            layers.append(
                LayerResult(
                    name=raw["name"],
                    shape=(shape[0], shape[1]),
                    mask=mask,
                    stats=stats,
                    weight=tensors["weight"],
                    score=tensors["score"],
                    exact_path=str(raw["exactPath"]) if raw.get("exactPath") is not None else None,
                )
            )
        except (KeyError, ValueError, TypeError, IndexError, AttributeError) as e:
            # A missing field, a mask or tensor of the wrong length, a shape that is not two numbers...
            raise ZpruneError("invalid_response", f"layers[{i}] of the answer is malformed: {e!r}", 200) from e
    return PruneResult(
        backend=answer["backend"],
        device=answer["device"],
        timings=dict(timings),
        layers=layers,
    )


def prune_layers(
    layers: Iterable[LayerSpec],
    *,
    url: Optional[str] = None,
    token: Optional[str] = None,
    timeout: float = DEFAULT_TIMEOUT,
    max_retries: int = 5,
    **kwargs: Any,
) -> PruneResult:
    """Prunes several layers in one request to the server at ``url``. See ``ZpruneClient.prune_layers``."""
    client = ZpruneClient(url, token, timeout=timeout, max_retries=max_retries)
    return client.prune_layers(layers, **kwargs)


def prune_layer(
    weight: ArrayLike,
    act_norm_sq: Optional[ArrayLike] = None,
    *,
    method: str = "zpruner",
    pattern: str = "layer",
    sparsity: Optional[float] = None,
    url: Optional[str] = None,
    token: Optional[str] = None,
    timeout: float = DEFAULT_TIMEOUT,
    max_retries: int = 5,
    **kwargs: Any,
) -> Tuple[NDArray[np.bool_], Dict[str, Any]]:
    """Prunes one layer on the server at ``url``; returns ``(mask, stats)``.

    ``weight`` is a numpy array or torch tensor ``[rows, cols]`` in float32, float16 or bfloat16 (a numpy uint16
    array of bf16 bits with ``dtype="bf16"``); ``act_norm_sq`` is ``[cols]``. ``mask`` is a bool array of the
    weight's shape, True where the weight is pruned. Other keywords as ``ZpruneClient.prune_layer``.

    Example:
        >>> mask, stats = prune_layer(w, act, sparsity=0.5, url="http://127.0.0.1:8787")  # doctest: +SKIP
        >>> apply_mask(w, mask)  # numpy array or torch tensor, in place                  # doctest: +SKIP
    """
    client = ZpruneClient(url, token, timeout=timeout, max_retries=max_retries)
    return client.prune_layer(weight, act_norm_sq, method=method, pattern=pattern, sparsity=sparsity, **kwargs)
