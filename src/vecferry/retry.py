"""Retrying transient failures: exponential backoff with full jitter, honouring Retry-After.

Used by the Qdrant writer and reader (``vecferry.converters.qdrant``). The policy follows the
"full jitter" scheme (https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/):
attempt ``n`` sleeps a uniform random time in ``[0, min(cap, base * 2**n)]``, unless the server
said how long to wait (HTTP 429/503 ``Retry-After``), in which case that wait is honoured
(capped by ``cap``). Qdrant's REST API documents 429 with Retry-After under rate limiting:
https://qdrant.tech/documentation/guides/administration/#strict-mode

``classify`` is the single place that decides what is transient:

* qdrant-client ``ResponseHandlingException`` (transport errors: timeouts, refused or reset
  connections, truncated responses) -> transient; a timeout is marked as such, because a batch
  that keeps timing out is split by the caller rather than retried forever at the same size;
* qdrant-client ``ResourceExhaustedResponse`` (its 429 / RESOURCE_EXHAUSTED with Retry-After)
  -> transient, waiting what the server asked; the bare ``QdrantException`` it raises instead
  for a 429 whose Retry-After is an HTTP date or a fraction -> transient too, waiting what
  that value says (backing off when it cannot be read);
* qdrant-client ``UnexpectedResponse`` with a 5xx or 429 status -> transient; any other status
  (4xx) -> terminal, carrying the server's own message;
* ``grpc.RpcError`` UNAVAILABLE / DEADLINE_EXCEEDED / RESOURCE_EXHAUSTED / ABORTED -> transient;
* ``TimeoutError``, ``ConnectionError`` and ``httpx.TransportError`` -> transient;
* anything else -> not classified (the caller re-raises it untouched).

The base delay defaults to 0.5 s and can be lowered with ``VECFERRY_RETRY_BASE_DELAY`` (seconds),
which the test suite uses so fault-injection tests stay quick.
"""

from __future__ import annotations

import datetime
import email.utils
import math
import os
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson

from vecferry.errors import TransientError

T = TypeVar("T")

DEFAULT_MAX_RETRIES = 6
DEFAULT_BASE_DELAY = 0.5
DEFAULT_MAX_DELAY = 30.0

_GRPC_TRANSIENT = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED"}


@dataclass
class Failure:
    """What ``classify`` made of an exception."""

    transient: bool
    message: str
    timeout: bool = False
    status: int | None = None
    retry_after: float | None = None


def server_message(content: bytes | str | None) -> str:
    """The human part of a Qdrant error body (``{"status": {"error": "..."}}``), else the text."""
    if not content:
        return ""
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        text = content.decode(errors="replace") if isinstance(content, bytes) else content
        # a proxy's error page (nginx's 413, a gateway's 502): its title says it all
        title = re.search(r"<title>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
        if title and title.group(1).strip():
            return " ".join(title.group(1).split())[:500]
        return text.strip()[:500]
    if isinstance(body, dict):
        status = body.get("status")
        if isinstance(status, dict) and status.get("error"):
            return str(status["error"])
        if isinstance(status, str):
            return status
    return str(body)[:500]


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header: delta-seconds (a fraction too, which some
    proxies send) or an HTTP date (RFC 9110 10.2.3), counted from ``now`` (``time.time()``);
    a date gone by is 0. None when the value is neither, so the caller backs off instead."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # RFC 9110 dates are GMT; an obsolete form may say none
            when = when.replace(tzinfo=datetime.timezone.utc)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


#: qdrant-client turns a 429 whose ``Retry-After`` is not a whole number of seconds (an HTTP
#: date, ``1.5``) into a bare ``QdrantException`` with this text, the status gone with it
_UNREAD_RETRY_AFTER = "Retry-After header value is not a valid integer: "


def classify(exc: BaseException) -> Failure | None:
    """Decide whether ``exc`` is worth retrying; None when this module does not know it."""
    if isinstance(exc, TransientError):
        return Failure(True, exc.message, retry_after=exc.retry_after,
                       timeout="timed out" in exc.message)
    try:
        from qdrant_client.common.client_exceptions import (
            QdrantException,
            ResourceExhaustedResponse,
        )
        from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse
    except ImportError:  # pragma: no cover - qdrant-client is an extra
        ResponseHandlingException = UnexpectedResponse = ()  # type: ignore[assignment,misc]
        ResourceExhaustedResponse = QdrantException = ()  # type: ignore[assignment,misc]
    if QdrantException and isinstance(exc, QdrantException):
        text = str(exc)
        if text.startswith(_UNREAD_RETRY_AFTER):
            # only a 429 gets there (qdrant-client raises it while building its 429
            # exception); the value is read again here rather than the request refused
            value = text[len(_UNREAD_RETRY_AFTER):]
            return Failure(True, f"HTTP 429: rate limited (Retry-After: {value})", status=429,
                           retry_after=parse_retry_after(value))
    if ResourceExhaustedResponse and isinstance(exc, ResourceExhaustedResponse):
        # qdrant-client's own exception for a 429 / RESOURCE_EXHAUSTED with Retry-After
        return Failure(True, f"HTTP 429: {exc.message}", status=429,
                       retry_after=float(exc.retry_after_s))
    if UnexpectedResponse and isinstance(exc, UnexpectedResponse):
        status = exc.status_code or 0
        message = server_message(exc.content) or exc.reason_phrase or f"HTTP {status}"
        if status == 429 or status >= 500:
            retry_after = parse_retry_after(exc.headers.get("retry-after")
                                            if exc.headers is not None else None)
            return Failure(True, f"HTTP {status}: {message}", status=status,
                           retry_after=retry_after)
        return Failure(False, f"HTTP {status}: {message}", status=status)
    if ResponseHandlingException and isinstance(exc, ResponseHandlingException):
        source = getattr(exc, "source", None)
        return _transport(source if source is not None else exc)
    grpc_failure = _grpc(exc)
    if grpc_failure is not None:
        return grpc_failure
    return _transport(exc)


#: TLS failures no retry can mend: a plain-HTTP port asked for TLS (qdrants:// on 6333
#: without TLS), a certificate the client does not trust, no protocol version in common
_TLS_TERMINAL = {
    "WRONG_VERSION_NUMBER": "the server does not speak TLS there (is it plain HTTP? use "
                            "qdrant:// instead of qdrants://)",
    "CERTIFICATE_VERIFY_FAILED": "the server's certificate is not trusted",
    "UNSUPPORTED_PROTOCOL": "no TLS version in common with the server",
    "TLSV1_ALERT_PROTOCOL_VERSION": "no TLS version in common with the server",
}


def _tls_terminal(exc: BaseException) -> Failure | None:
    """A TLS handshake failure that will fail the same way again (see ``_TLS_TERMINAL``)."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        text = f"{getattr(e, 'reason', '')} {e}"
        for reason, why in _TLS_TERMINAL.items():
            if reason in text:
                return Failure(False, f"TLS handshake failed: {why} ({reason})")
        e = e.__cause__ or e.__context__
    return None


def _transport(exc: BaseException) -> Failure | None:
    tls = _tls_terminal(exc)
    if tls is not None:
        return tls
    timeout = isinstance(exc, TimeoutError)
    try:
        import httpx

        if isinstance(exc, httpx.TimeoutException):
            timeout = True
        elif isinstance(exc, httpx.TransportError):
            return Failure(True, f"connection error: {type(exc).__name__}: {exc}")
    except ImportError:  # pragma: no cover
        pass
    if timeout:
        return Failure(True, f"request timed out ({type(exc).__name__})", timeout=True)
    if isinstance(exc, (ConnectionError, EOFError)):
        return Failure(True, f"connection error: {type(exc).__name__}: {exc}")
    return None


def _grpc(exc: BaseException) -> Failure | None:
    try:
        import grpc
    except ImportError:  # pragma: no cover
        return None
    if not isinstance(exc, grpc.RpcError):
        return None
    code = exc.code() if hasattr(exc, "code") else None
    name = getattr(code, "name", str(code))
    details = exc.details() if hasattr(exc, "details") else str(exc)
    if name in _GRPC_TRANSIENT:
        return Failure(True, f"gRPC {name}: {details}", timeout=name == "DEADLINE_EXCEEDED")
    return Failure(False, f"gRPC {name}: {details}")


@dataclass
class RetryPolicy:
    """How often and how long to retry; counts what it did for the run report.

    ``sleep`` and ``rng`` are injectable so tests need not wait or can assert the schedule.
    """

    max_retries: int = DEFAULT_MAX_RETRIES
    base_delay: float = field(default_factory=lambda: float(
        os.environ.get("VECFERRY_RETRY_BASE_DELAY", DEFAULT_BASE_DELAY)))
    max_delay: float = DEFAULT_MAX_DELAY
    sleep: Callable[[float], Any] = time.sleep
    rng: random.Random = field(default_factory=random.Random)
    retries: int = 0
    slept: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based)."""
        if retry_after is not None:
            # The server knows when it will have capacity again; waiting less only earns
            # another 429. Honour it, within the cap.
            return min(self.max_delay, retry_after)
        return self.rng.uniform(0, min(self.max_delay, self.base_delay * (2 ** attempt)))

    def wait(self, attempt: int, retry_after: float | None = None) -> None:
        with self._lock:  # several upload threads share one policy
            seconds = self.delay(attempt, retry_after)
            self.retries += 1
            self.slept += seconds
        if seconds > 0:
            self.sleep(seconds)

    def call(self, fn: Callable[[], T], *, what: str = "request",
             on_terminal: Callable[[Failure, BaseException], BaseException] | None = None) -> T:
        """Run ``fn``, retrying transient failures up to ``max_retries`` times.

        Raises ``TransientError`` (chained to the last failure) when retries run out;
        a terminal failure is raised as ``on_terminal(failure, exc)`` when given, else as is.
        """
        attempt = 0
        while True:
            try:
                return fn()
            except Exception as exc:
                failure = classify(exc)
                if failure is None:
                    raise
                if not failure.transient:
                    if on_terminal is not None:
                        raise on_terminal(failure, exc) from exc
                    raise
                if attempt >= self.max_retries:
                    raise TransientError(
                        f"{what} failed after {attempt + 1} attempt(s): {failure.message}",
                        retry_after=failure.retry_after,
                    ) from exc
                self.wait(attempt, failure.retry_after)
                attempt += 1
