"""Qdrant snapshots over REST: create, list, download, upload, recover, delete, and copy.

Locations are the Qdrant ones (``vecferry.converters.qdrant.parse_location``):

* ``qdrant://HOST[:PORT]/COLLECTION`` (``qdrants://`` for HTTPS): that collection's snapshots;
  with ``shard=N`` the snapshots of one shard of it;
* ``qdrant://HOST[:PORT]`` (no collection): full-instance snapshots (``/snapshots``).

Snapshots only exist on the REST API, so ``?grpc=1`` is refused. The API key comes from
``QDRANT_API_KEY`` or the variable named by ``api_key_env``, goes in the ``api-key`` header and
nowhere else (never in a URL, message or report).

Endpoints (https://qdrant.tech/documentation/concepts/snapshots/ and
https://api.qdrant.tech/api-reference/snapshots):

* ``POST {base}?wait=true``: create; the result describes the snapshot
  (``name``, ``creation_time``, ``size``, ``checksum``);
* ``GET {base}``: list them, each with its SHA-256 ``checksum``;
* ``GET {base}/{name}``: the file (served with ``Accept-Ranges``: vecferry resumes with
  ``Range: bytes=N-``);
* ``DELETE {base}/{name}?wait=true``;
* ``POST {base}/upload?wait=true&priority=P&checksum=SHA256``: multipart, the file in the
  ``snapshot`` field (collections and shards only);
* ``PUT {base}/recover?wait=true`` with ``{"location", "priority", "checksum"}`` (collections
  and shards only);

where ``{base}`` is ``/collections/{name}/snapshots``, ``/collections/{name}/shards/{id}/
snapshots`` or ``/snapshots``. Qdrant restores a full-instance snapshot only when it starts
(``qdrant --storage-snapshot FILE``); there is no REST call for it, so upload and recover refuse
full snapshots with that hint.

Memory stays bounded: downloads are written chunk by chunk (``chunk_size``), uploads are sent
from a generator reading the file chunk by chunk, and checksums are computed incrementally.
A download goes to ``<out>.vfpart`` and is renamed to ``<out>`` only after its SHA-256 matches
the server's; an interrupted download leaves the ``.vfpart`` file, which the next attempt (in
the same run, after a dropped connection, or in a later run) continues with ``Range``; the
error of a download whose retries ran out names it. A server that lists no checksum (older
versions) gets the file kept unverified, with a warning in the result's ``warnings``.

Object storage (``vecferry.storage``): ``download(..., out="s3://BUCKET/KEY")`` streams the
HTTP body into one multipart upload to the key (memory bounded by one upload part), hashing
on the fly, and completes it only when the SHA-256 matches (else aborts it: nothing appears at
the key, and nothing is written locally). A connection dropped mid-download continues the same
upload stream with ``Range: bytes=N-`` (a server without Range support makes it start over);
there is no resume across runs for a bucket target, since a multipart upload cannot be
appended to later. ``upload("s3://BUCKET/KEY")`` reads the object twice by ranged streaming
reads, a first pass for its SHA-256 (unless ``checksum`` is given) and a second for the
upload, with ``Content-Length`` from the object's size.

Transient failures (connection errors, timeouts, 5xx, 429 with ``Retry-After``) are retried
through ``vecferry.retry.RetryPolicy``; anything else raises at once with the server's message.
The library never prints: progress goes to an optional callback ``progress(step, done, total)``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import orjson

from vecferry.converters.base import ScratchDir
from vecferry.errors import (
    InputError,
    Location,
    OutputExistsError,
    TargetError,
    TransientError,
    UsageError,
    VecferryError,
    VerificationError,
    add_notice,
)
from vecferry.retry import RetryPolicy, parse_retry_after, server_message

DEFAULT_TIMEOUT = 300.0
DEFAULT_CHUNK = 1 << 20
PART_SUFFIX = ".vfpart"
PRIORITIES = ("snapshot", "replica", "no_sync")

#: ``progress(step, done, total)``: ``step`` names the stage ("create", "download", ...),
#: ``done`` and ``total`` count bytes (or points for "count"); ``total`` may be None.
Progress = Callable[[str, int, int | None], None]


class ChecksumMismatchError(VerificationError):
    """The bytes received (or a file) do not have the SHA-256 the server reported."""


def _noop(step: str, done: int, total: int | None) -> None:
    pass


# ------------------------------------------------------------------------------ locations


@dataclass(frozen=True)
class SnapshotTarget:
    """Where snapshots live: a collection, one of its shards, or the whole instance."""

    base_url: str
    collection: str | None = None
    shard: int | None = None

    @property
    def kind(self) -> str:
        if self.collection is None:
            return "full"
        return "collection" if self.shard is None else "shard"

    @property
    def path(self) -> str:
        """The REST path of the snapshot list (``{base}`` in the module docstring)."""
        if self.collection is None:
            return "/snapshots"
        path = f"/collections/{quote(self.collection, safe='')}"
        if self.shard is not None:
            path += f"/shards/{self.shard}"
        return path + "/snapshots"

    def display(self) -> str:
        where = self.base_url.replace("https://", "qdrants://").replace("http://", "qdrant://")
        if self.collection is None:
            return f"{where} (full snapshots)"
        shard = f" shard {self.shard}" if self.shard is not None else ""
        return f"{where}/{self.collection}{shard}"

    def url_of(self, name: str) -> str:
        """The URL a server fetches to recover this snapshot (no key in it)."""
        return f"{self.base_url}{self.path}/{quote(name, safe='')}"


def parse_target(location: str, *, shard: int | None = None) -> SnapshotTarget:
    """A snapshot target from ``qdrant[s]://HOST[:PORT][/COLLECTION]``; ``UsageError`` else."""
    from vecferry.converters.qdrant import parse_location

    scheme, sep, _ = location.partition("://")
    scheme = scheme.lower()
    where = Location(source=location)
    if not sep or scheme not in ("qdrant", "qdrants"):
        raise UsageError("snapshots need a Qdrant server location", location=where,
                         hint="use qdrant://HOST[:PORT]/COLLECTION for a collection or "
                              "qdrant://HOST[:PORT] for full-instance snapshots")
    parts = urlsplit(location)
    if not parts.path.strip("/"):
        # full-instance: parse a stand-in collection to reuse the checks (credentials, keys,
        # parameters) and drop it again
        probe = location.split("?", 1)
        loc = parse_location(probe[0].rstrip("/") + "/_" + ("?" + probe[1] if len(probe) > 1
                                                             else ""))
        collection = None
    else:
        loc = parse_location(location)
        collection = loc.collection
    if loc.grpc:
        raise UsageError("snapshots are served over REST only", location=where,
                         hint="drop ?grpc=1 and give the REST port (6333 by default)")
    if shard is not None and collection is None:
        raise UsageError("--shard needs a collection", location=where,
                         hint="qdrant://HOST:PORT/COLLECTION")
    if shard is not None and shard < 0:
        raise UsageError("a shard id is a non-negative integer", location=where)
    http = "https" if loc.scheme == "qdrants" else "http"
    host = f"[{loc.host}]" if loc.host and ":" in loc.host else loc.host
    return SnapshotTarget(f"{http}://{host}:{loc.port}", collection, shard)


# ------------------------------------------------------------------------------- helpers


def sha256_file(path: str | os.PathLike[str], *, chunk_size: int = DEFAULT_CHUNK,
                progress: Progress | None = None, step: str = "checksum") -> str:
    """SHA-256 (hex) of a file, read ``chunk_size`` bytes at a time."""
    digest = hashlib.sha256()
    total = os.path.getsize(path)
    done = 0
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(step, done, total)
    return digest.hexdigest()


def _is_version_message(text: str) -> bool:
    low = text.lower()
    return "version" in low or "incompatible" in low or "not compatible" in low


def _is_space_message(text: str) -> bool:
    low = text.lower()
    return "no space left" in low or "not enough space" in low or "disk is full" in low \
        or ("insufficient" in low and "space" in low)


def _is_checksum_message(text: str) -> bool:
    return "checksum" in text.lower()


def _human(n: int | None) -> str:
    if n is None:
        return "?"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def _space_error(where: Location, need: int, free: int, what: str) -> TargetError:
    return TargetError(f"not enough disk space for {what}: needs {_human(need)}, "
                       f"{_human(free)} free", location=where,
                       hint="free some space or choose another directory")


# -------------------------------------------------------------------------------- client


#: an upload the server refused by its checksum: the bytes changed on the way
_SENT_OTHER = "the server received other bytes than were sent; download the snapshot again"

#: a download that keeps ending early: a flaky connection, or a file shorter than listed
_CUT_SHORT = ("the connection kept dropping, or the server's file is shorter than it lists: run "
              "the download again, or list the snapshots to check the size")


class SnapshotClient:
    """Snapshot calls against one ``SnapshotTarget``; see the module docstring.

    ``transport`` is an optional ``httpx`` transport (tests); ``retry`` a ``RetryPolicy``.
    """

    def __init__(self, target: SnapshotTarget | str, *, api_key_env: str | None = None,
                 timeout: float | None = None, max_retries: int | None = None,
                 retry: RetryPolicy | None = None, shard: int | None = None,
                 transport: Any = None):
        import httpx

        from vecferry.converters.qdrant import api_key_from_env

        self.target = target if isinstance(target, SnapshotTarget) else parse_target(
            target, shard=shard)
        if timeout is not None and timeout <= 0:
            raise UsageError(f"--timeout must be a positive number of seconds, not {timeout:g}")
        self.retry = retry or RetryPolicy(max_retries=6 if max_retries is None else max_retries)
        headers = {"user-agent": "vecferry-snapshots"}
        key = api_key_from_env(api_key_env)
        if key:
            headers["api-key"] = key
        seconds = timeout if timeout is not None else DEFAULT_TIMEOUT
        self.http = httpx.Client(base_url=self.target.base_url, headers=headers,
                                 timeout=httpx.Timeout(seconds, connect=min(seconds, 30.0)),
                                 transport=transport, follow_redirects=True)
        self.where = Location(source=self.target.display())

    # -- plumbing

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> SnapshotClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _fail(self, response: Any, what: str, checksum_hint: str = _SENT_OTHER) -> None:
        """Raise the right error for a non-2xx response (body already read);
        ``checksum_hint`` is what to do when the server refused the bytes' checksum."""
        status = response.status_code
        message = server_message(response.content) or response.reason_phrase or ""
        text = f"{what}: HTTP {status}: {message}".rstrip(": ")
        if status in (401, 403):
            raise TargetError(text, location=self.where,
                              hint="check the API key (QDRANT_API_KEY or --api-key-env); a "
                                   "read-only key can list and download but not create, "
                                   "upload, recover or delete")
        if _is_space_message(message):
            raise TargetError(text, location=self.where,
                              hint="the server is out of disk space; free some, or delete old "
                                   "snapshots (`vecferry snapshot delete`)")
        if _is_checksum_message(message) and status < 500:
            raise ChecksumMismatchError(text, location=self.where, hint=checksum_hint)
        if status == 429 or status >= 500:
            if _is_version_message(message):
                raise TargetError(text, location=self.where,
                                  hint="the snapshot was made by another Qdrant version; "
                                       "recover it into a server of the same version")
            # retried: the policy names the step when it gives up
            raise TransientError(f"HTTP {status}: {message}".rstrip(": "), location=self.where,
                                 retry_after=parse_retry_after(
                                     response.headers.get("retry-after")))
        if status == 404:
            raise InputError(text, location=self.where,
                             hint="check the collection and snapshot names "
                                  "(`vecferry snapshot list`)")
        if _is_version_message(message):
            raise TargetError(text, location=self.where,
                              hint="the snapshot was made by another Qdrant version; recover "
                                   "it into a server of the same version")
        raise TargetError(text, location=self.where)

    def _call(self, fn: Callable[[], Any], what: str) -> Any:
        try:
            return self.retry.call(fn, what=what)
        except TransientError as exc:
            # the last failure may know better than a generic "the server is down"
            hint = getattr(exc.__cause__, "hint", None) or \
                "the server kept failing; is it up and reachable?"
            raise TargetError(exc.message, location=self.where, hint=hint) from exc

    def _json(self, method: str, path: str, what: str, *,
              checksum_hint: str = _SENT_OTHER, **kw: Any) -> Any:
        def once() -> Any:
            response = self.http.request(method, path, **kw)
            if response.status_code >= 300:
                self._fail(response, what, checksum_hint)
            if not response.content:
                return None
            try:
                body = orjson.loads(response.content)
            except orjson.JSONDecodeError as exc:
                kind = response.headers.get("content-type", "").split(";")[0].strip()
                raise TargetError(f"{what}: the server answered HTTP {response.status_code} "
                                  f"with {kind or 'no content type'}, not JSON",
                                  location=self.where,
                                  hint="is this Qdrant's REST port (6333 by default)? a proxy "
                                       "or another service may be answering") from exc
            return body.get("result") if isinstance(body, dict) else body

        return self._call(once, what)

    def _refuse_full(self, what: str) -> None:
        if self.target.kind == "full":
            raise UsageError(f"Qdrant cannot {what} a full-instance snapshot over REST",
                             location=self.where,
                             hint="start Qdrant with `--storage-snapshot FILE` to restore a "
                                  "full snapshot, or restore each collection from its own "
                                  "snapshot")

    # -- calls

    def create(self, *, wait: bool = True) -> dict[str, Any] | None:
        """Create a snapshot; its description, or None when ``wait`` is false (accepted)."""
        result = self._json("POST", self.target.path, "creating a snapshot",
                            params={"wait": str(wait).lower()})
        return result if isinstance(result, dict) else None

    def list(self) -> list[dict[str, Any]]:
        """The snapshots with name, creation_time, size and checksum, newest first."""
        result = self._json("GET", self.target.path, "listing snapshots") or []
        return sorted(result, key=lambda s: s.get("creation_time") or "", reverse=True)

    def describe(self, name: str) -> dict[str, Any]:
        """One snapshot's description (``InputError`` naming the ones there are if missing)."""
        snaps = self.list()
        for s in snaps:
            if s.get("name") == name:
                return s
        known = ", ".join(s.get("name", "?") for s in snaps[:10]) or "none"
        raise InputError(f"no snapshot named {name!r}", location=self.where,
                         hint=f"snapshots here: {known}")

    def delete(self, name: str, *, wait: bool = True) -> bool:
        result = self._json("DELETE", f"{self.target.path}/{quote(name, safe='')}",
                            f"deleting snapshot {name}", params={"wait": str(wait).lower()})
        return bool(result) if result is not None else True

    def recover(self, location: str, *, priority: str | None = None,
                checksum: str | None = None, wait: bool = True, overwrite: bool = False) -> Any:
        """Have the server recover from ``location`` (an http(s) URL or a ``file://`` path on
        the server). ``OutputExistsError`` when the collection holds points, unless
        ``overwrite``: recovering replaces them."""
        self._refuse_full("recover")
        _check_priority(priority)
        self.refuse_replacing(overwrite)
        body: dict[str, Any] = {"location": location}
        if priority:
            body["priority"] = priority
        if checksum:
            body["checksum"] = checksum
        # nothing is sent: the server fetched the file itself
        return self._json("PUT", f"{self.target.path}/recover", "recovering from a snapshot",
                          params={"wait": str(wait).lower()}, content=orjson.dumps(body),
                          headers={"content-type": "application/json"},
                          checksum_hint="the file at that URL does not have the checksum "
                                        "given: check the URL and the checksum")

    def download(self, name: str, out: str | os.PathLike[str], *, overwrite: bool = False,
                 expected: dict[str, Any] | None = None, chunk_size: int = DEFAULT_CHUNK,
                 progress: Progress | None = None, resumable: bool = True) -> dict[str, Any]:
        """Download snapshot ``name`` to ``out``, verified; see the module docstring.

        ``expected`` is the snapshot's description when already known (else it is listed).
        Returns ``{"path", "name", "bytes", "sha256", "verified", "resumed_from" (bytes found
        from an earlier run), "resumed_at" (offsets this run resumed from after interruptions),
        "range_supported", "seconds", "warnings"}``; ``verified`` is false only when the server
        reported no checksum (older servers), in which case the file is kept unverified and
        ``warnings`` says so. ``UsageError`` before anything is fetched when ``out`` is a
        directory (or a link or special file, which the final rename would replace). When the
        retries run out, the error names the partial file kept for the next run, unless
        ``resumable`` is false (a caller that removes it, as ``copy_collection`` does).
        """
        progress = progress or _noop
        from vecferry import storage

        if storage.is_remote(out):
            return self._download_remote(name, storage.url_of(out), overwrite=overwrite,
                                         expected=expected, chunk_size=chunk_size,
                                         progress=progress)
        from vecferry.converters.base import _check_replaceable

        out_path = Path(out)
        where = Location(source=str(out_path))
        # the file is renamed into place at the end: what it would replace is checked before
        # gigabytes are fetched
        if out_path.is_dir():
            raise UsageError("the output is a directory; a snapshot downloads to a file",
                             location=where,
                             hint=f"name the file, e.g. --out {out_path / name}")
        if overwrite and (out_path.exists() or out_path.is_symlink()):
            _check_replaceable(out_path, directory=False)
        if out_path.exists() and not overwrite:
            raise OutputExistsError("output exists", location=where,
                                    hint="pass --overwrite, or choose another file")
        if not out_path.parent.is_dir():
            raise UsageError("output directory does not exist",
                             location=Location(source=str(out_path.parent)),
                             hint="create it first")
        info = expected or self.describe(name)
        want_sha = (info.get("checksum") or "").lower() or None
        want_size = info.get("size")
        part = out_path.with_name(out_path.name + PART_SUFFIX)
        started = time.monotonic()
        resumed_from = part.stat().st_size if part.exists() else 0
        if want_size is not None and resumed_from > want_size:
            part.unlink()
            resumed_from = 0
        need = (want_size or 0) - resumed_from
        free = shutil.disk_usage(out_path.parent).free
        if need > free:
            raise _space_error(where, need, free, f"snapshot {name}")
        state: dict[str, Any] = {"range": True}
        for attempt in (0, 1):
            try:
                digest = self._fetch(name, part, want_size, chunk_size, progress, state)
            except TargetError as exc:
                have = part.stat().st_size if part.exists() else 0
                if not (resumable and have and isinstance(exc.__cause__, TransientError)):
                    raise
                # the retries ran out: what was received stays for the next run
                kept = (f"the partial file {part} keeps the {have:,} bytes received: the same "
                        "command run again resumes from there")
                raise TargetError(exc.message, location=exc.location,
                                  hint=f"{exc.hint}; {kept}" if exc.hint else kept) from exc
            size = part.stat().st_size
            if want_size is not None and size != want_size:
                # cannot happen unless the server changed the file under us
                raise TargetError(f"downloaded {size} bytes, the server listed {want_size}",
                                  location=where, hint="run the download again")
            if want_sha is None or digest == want_sha:
                break
            part.unlink()
            if attempt == 0 and resumed_from:
                # the earlier partial may have come from other bytes: start afresh once
                resumed_from = 0
                continue
            raise ChecksumMismatchError(
                f"SHA-256 of the download is {digest}, the server reported {want_sha}",
                location=where,
                hint="the bytes were corrupted in transit or on disk; the partial file was "
                     "removed, run the download again")
        with contextlib.suppress(OSError):
            fd = os.open(part, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(part, out_path)
        return {"path": str(out_path), "name": name, "bytes": size, "sha256": digest,
                "verified": want_sha is not None, "resumed_from": resumed_from,
                "range_supported": state["range"], "resumed_at": state.get("resumed_at", []),
                "seconds": round(time.monotonic() - started, 3),
                "warnings": [] if want_sha is not None else [_unverified(name, digest)]}

    def _download_remote(self, name: str, url: str, *, overwrite: bool,
                         expected: dict[str, Any] | None, chunk_size: int,
                         progress: Progress) -> dict[str, Any]:
        """Stream snapshot ``name`` into the object at ``url`` (``s3://``, ``gs://``,
        ``az://``): one multipart upload (``storage.RemoteOutput``), SHA-256 computed on the
        fly, completed only when it matches the server's checksum (else aborted: nothing
        appears at the key). Nothing is written locally.

        A dropped connection does not restart the object: the same upload stream goes on and
        the rest is requested with ``Range: bytes=N-``. Only a server without Range support
        (it answers 200) makes the upload start over from byte 0; one that refuses the range
        (416: its file is shorter than it listed) ends the download, not retried.
        """
        from vecferry import storage

        where = Location(source=storage.redact(url))
        output = storage.RemoteOutput(url, overwrite=overwrite)
        try:
            info = expected or self.describe(name)
            want_sha = (info.get("checksum") or "").lower() or None
            want_size = info.get("size")
            started = time.monotonic()
            state: dict[str, Any] = {"range": True, "done": 0,
                                     "digest": hashlib.sha256(),
                                     "upload": output.temp.open_output()}
            path = f"{self.target.path}/{quote(name, safe='')}"
            what = f"downloading snapshot {name}"

            def once() -> None:
                done = state["done"]
                if want_size is not None and done == want_size:
                    return
                headers = {"range": f"bytes={done}-"} if done and state["range"] else {}
                with self.http.stream("GET", path, headers=headers) as response:
                    if response.status_code == 416 and headers:
                        response.read()
                        # the bytes already streamed cannot be taken back, and asking again
                        # would meet the same short file
                        listed = (f"of the {want_size} bytes it listed" if want_size is not None
                                  else "bytes, fewer than it announced")
                        raise TargetError(f"{what}: the server has only {done} {listed}",
                                          location=self.where,
                                          hint="the snapshot changed or is incomplete on the "
                                               "server; list it and download it again")
                    if response.status_code >= 300:
                        response.read()
                        self._fail(response, what)
                    if done and response.status_code == 206:
                        state.setdefault("resumed_at", []).append(done)
                    elif done:
                        # no Range support: the body is the whole file again, and a multipart
                        # upload cannot be rewound: start the object over
                        state["range"] = False
                        state["upload"].discard()
                        state["upload"] = output.temp.open_output()
                        state["digest"] = hashlib.sha256()
                        state["done"] = done = 0
                    length = want_size
                    if length is None:
                        with contextlib.suppress(TypeError, ValueError):
                            length = done + int(response.headers.get("content-length"))
                    progress("download", done, length)
                    upload, digest = state["upload"], state["digest"]
                    for chunk in response.iter_bytes(chunk_size):
                        upload.write(chunk)
                        digest.update(chunk)
                        done += len(chunk)
                        state["done"] = done
                        progress("download", done, length)
                    if length is not None and done < length:
                        raise TransientError(f"connection closed after {done} of {length} bytes",
                                             hint=_CUT_SHORT)

            self._call(once, what)
            size = state["done"]
            sha = state["digest"].hexdigest()
            if want_size is not None and size != want_size:
                raise TargetError(f"downloaded {size} bytes, the server listed {want_size}",
                                  location=where, hint="run the download again")
            if want_sha is not None and sha != want_sha:
                raise ChecksumMismatchError(
                    f"SHA-256 of the download is {sha}, the server reported {want_sha}",
                    location=where,
                    hint="the bytes were corrupted in transit; the upload was aborted and "
                         "nothing was written to the bucket, run the download again")
            output.commit()
        except BaseException:
            output.abort()
            raise
        return {"path": url, "name": name, "bytes": size, "sha256": sha,
                "verified": want_sha is not None, "resumed_from": 0,
                "range_supported": state["range"], "resumed_at": state.get("resumed_at", []),
                "seconds": round(time.monotonic() - started, 3),
                "warnings": [] if want_sha is not None else [_unverified(name, sha)]}

    def _fetch(self, name: str, part: Path, total: int | None, chunk_size: int,
               progress: Progress, state: dict[str, Any]) -> str:
        """Fill ``part`` with the snapshot, resuming with Range; returns its SHA-256."""
        path = f"{self.target.path}/{quote(name, safe='')}"
        what = f"downloading snapshot {name}"
        where = Location(source=str(part))

        def once() -> str:
            have = part.stat().st_size if part.exists() else 0
            digest = hashlib.sha256()
            if have:
                with open(part, "rb") as f:
                    while chunk := f.read(chunk_size):
                        digest.update(chunk)
            if total is not None and have == total:
                return digest.hexdigest()
            headers = {"range": f"bytes={have}-"} if have and state["range"] else {}
            with self.http.stream("GET", path, headers=headers) as response:
                if response.status_code == 416:
                    response.read()
                    # the partial covers the whole file already, or is bogus: start afresh
                    part.unlink(missing_ok=True)
                    raise TransientError("the server refused the resume range",
                                         hint="the partial file did not fit the server's file "
                                              "and was removed; run the download again to "
                                              "fetch it from the start")
                if response.status_code >= 300:
                    response.read()
                    self._fail(response, what)
                if have and response.status_code == 206:
                    state.setdefault("resumed_at", []).append(have)
                if have and response.status_code == 200:
                    # no Range support: the body is the whole file again
                    state["range"] = False
                    have = 0
                    digest = hashlib.sha256()
                length = total
                if length is None:
                    with contextlib.suppress(TypeError, ValueError):
                        length = have + int(response.headers.get("content-length"))
                mode = "ab" if have else "wb"
                try:
                    with open(part, mode) as f:
                        done = have
                        progress("download", done, length)
                        for chunk in response.iter_bytes():
                            f.write(chunk)
                            digest.update(chunk)
                            done += len(chunk)
                            progress("download", done, length)
                except OSError as exc:
                    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                        raise TargetError("disk full while downloading", location=where,
                                          hint="free space and run again: the download "
                                               "resumes where it stopped") from exc
                    raise TargetError(f"cannot write the download: {exc}",
                                      location=where) from exc
                if length is not None and done < length:
                    raise TransientError(f"connection closed after {done} of {length} bytes",
                                         hint=_CUT_SHORT)
            return digest.hexdigest()

        return self._call(once, what)

    def upload(self, file: str | os.PathLike[str], *, priority: str | None = None,
               wait: bool = True, checksum: str | None = None,
               chunk_size: int = DEFAULT_CHUNK, progress: Progress | None = None,
               overwrite: bool = False) -> dict[str, Any]:
        """Upload ``file`` and have the server recover from it (multipart, streamed).

        The SHA-256 is computed first (unless given) and sent as ``checksum``, so the server
        refuses a file that arrived damaged. Returns ``{"bytes", "sha256", "result",
        "seconds"}``. ``OutputExistsError`` when the collection holds points, unless
        ``overwrite``: recovering replaces them.
        """
        self._refuse_full("upload")
        _check_priority(priority)
        progress = progress or _noop
        from vecferry import storage

        started = time.monotonic()
        if storage.is_remote(file):
            # an object in a bucket: streamed twice with ranged reads, once for its SHA-256
            # (a stored object checksum is not a plain SHA-256 of multipart objects) and once
            # for the upload; nothing is written locally
            remote = storage.input_path(file)
            if remote.is_dir():
                raise InputError("is a prefix, not a snapshot object",
                                 location=Location(storage.redact(remote.url)))
            size = remote.stat().st_size
            file_name = remote.name

            def open_source() -> Any:
                return remote.open_input()

            self.refuse_replacing(overwrite)  # before a pass over the whole file
            sha = (checksum or "").lower() or _sha256_stream(open_source, size, chunk_size,
                                                             progress)
        else:
            path = Path(file)
            where = Location(source=str(path))
            if path.is_dir():
                raise InputError("is a directory, not a snapshot file", location=where,
                                 hint="pass the .snapshot file itself")
            if not path.is_file():
                raise InputError("no such file", location=where, hint="check the path")
            if not os.access(path, os.R_OK):
                raise InputError("permission denied", location=where,
                                 hint="check the file's permissions")
            self.refuse_replacing(overwrite)  # before a pass over the whole file
            sha = (checksum or "").lower() or sha256_file(path, chunk_size=chunk_size,
                                                          progress=progress)
            size = path.stat().st_size
            file_name = path.name

            def open_source() -> Any:
                return open(path, "rb")
        params = {"wait": str(wait).lower(), "checksum": sha}
        if priority:
            params["priority"] = priority
        what = f"uploading {file_name}"

        def once() -> Any:
            boundary = uuid.uuid4().hex
            head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"snapshot\"; "
                    f"filename=\"{_header_safe(file_name)}\"\r\n"
                    "Content-Type: application/octet-stream\r\n\r\n").encode()
            tail = f"\r\n--{boundary}--\r\n".encode()

            def body() -> Iterator[bytes]:
                yield head
                sent = 0
                with open_source() as f:
                    while chunk := f.read(chunk_size):
                        sent += len(chunk)
                        progress("upload", sent, size)
                        yield chunk
                yield tail

            response = self.http.post(
                f"{self.target.path}/upload", params=params, content=body(),
                headers={"content-type": f"multipart/form-data; boundary={boundary}",
                         "content-length": str(len(head) + size + len(tail))})
            if response.status_code >= 300:
                self._fail(response, what)
            try:
                return orjson.loads(response.content).get("result")
            except (orjson.JSONDecodeError, AttributeError):
                return None

        result = self._call(once, what)
        return {"bytes": size, "sha256": sha, "result": result,
                "seconds": round(time.monotonic() - started, 3)}

    def refuse_replacing(self, overwrite: bool) -> None:
        """``OutputExistsError`` when the target collection exists and holds points and
        ``overwrite`` is not set: a recovery replaces the collection whole, silently."""
        if overwrite or self.target.collection is None:
            return
        try:
            held = self.count()
        except InputError:  # 404: no such collection, nothing to replace
            return
        if held:
            raise OutputExistsError(
                f"the collection exists and holds {held:,} points, which recovering a snapshot "
                "replaces", location=self.where,
                hint="pass --overwrite to replace it, or recover into a new collection")

    def count(self) -> int:
        """Exact number of points of the target collection (for ``copy``)."""
        if self.target.collection is None:
            raise UsageError("counting needs a collection")
        result = self._json("POST", f"/collections/{quote(self.target.collection, safe='')}"
                            "/points/count", "counting points",
                            content=orjson.dumps({"exact": True}),
                            headers={"content-type": "application/json"})
        return int((result or {}).get("count", 0))


def _copy_left(left: dict[str, Any], source: SnapshotTarget, target: SnapshotTarget, *,
               interrupted: bool) -> str | None:
    """What a ``copy_collection`` that stopped at ``left["stage"]`` leaves that needs the user
    (None: nothing), for its error's hint or its interrupt's notice."""
    src, dst = source.display(), target.display()
    stage, name = left["stage"], left.get("name")
    if stage in ("count", "undescribed", "done") and not left.get("not_deleted"):
        return None
    if stage == "create":
        # a server goes on making a snapshot whose request was given up
        return (f"a snapshot the source server had begun making may still appear there: "
                f"`vecferry snapshot list {src}` shows it, `vecferry snapshot delete {src} "
                "NAME` removes it") if interrupted else None
    if left.get("not_deleted"):
        said = (f"the snapshot {name} is left on {src} (deleting it failed: "
                f"{left['not_deleted']}): `vecferry snapshot delete {src} {name}` removes it")
        return said if stage == "done" else said + "; the copy's download was removed"
    kept = left.get("kept")
    if kept is None:
        said = (f"the snapshot made on {src} was deleted and the copy's download removed: "
                "snapshot copy does not resume, the same command run again starts over")
    elif kept.exists():
        said = (f"the snapshot {name} is kept on {src}, and downloaded whole to {kept}: "
                f"`vecferry snapshot upload {kept} {dst}` finishes the copy")
    else:
        partial = kept.with_name(kept.name + PART_SUFFIX)
        have = partial.stat().st_size if partial.exists() else 0
        fetched = (f" (it resumes from the {have:,} bytes kept in {partial})" if have else "")
        said = (f"the snapshot {name} is kept on {src}: `vecferry snapshot download {src} "
                f"{name} --out {kept}` finishes its download{fetched}, and `vecferry snapshot "
                f"upload {kept} {dst}` then finishes the copy")
    if interrupted and stage == "upload":
        said += f"; a recovery {dst} had begun goes on there"
    return said


def _sha256_stream(open_source: Callable[[], Any], size: int, chunk_size: int,
                   progress: Progress) -> str:
    """SHA-256 (hex) of a stream, read ``chunk_size`` bytes at a time (a first pass)."""
    digest = hashlib.sha256()
    done = 0
    with open_source() as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
            done += len(chunk)
            progress("checksum", done, size)
    return digest.hexdigest()


def _unverified(name: str, sha: str) -> str:
    """The warning of a download the server listed no checksum for."""
    return (f"snapshot {name} was not verified: the server lists no checksum for it (older "
            f"Qdrant versions); its SHA-256 as received is {sha}")


def _header_safe(name: str) -> str:
    return "".join(c if c.isprintable() and c not in '"\\\r\n' else "_" for c in name)


def _check_priority(priority: str | None) -> None:
    if priority is not None and priority not in PRIORITIES:
        raise UsageError(f"unknown priority {priority!r}", hint=f"one of {', '.join(PRIORITIES)}")


# ---------------------------------------------------------------------------------- copy


def copy_collection(src: str, dst: str, *, priority: str = "snapshot",
                    workdir: str | os.PathLike[str] | None = None, keep: bool = False,
                    overwrite: bool = False,
                    api_key_env: str | None = None, dst_api_key_env: str | None = None,
                    timeout: float | None = None, max_retries: int | None = None,
                    progress: Progress | None = None,
                    transport: Any = None) -> dict[str, Any]:
    """Copy collection ``src`` to ``dst`` through a snapshot: count the source, create a
    snapshot, download it (verified), upload it to ``dst`` (checksum sent), count ``dst``.

    ``OutputExistsError`` first when ``dst`` holds points, unless ``overwrite`` (the recovery
    replaces it). ``VerificationError`` when the counts differ; the snapshot made on the source
    and the local file are removed unless ``keep`` (which keeps a download cut short too, as
    ``<file>.vfpart`` that ``download`` resumes). Returns a report with one entry per step and
    ``warnings`` (an unverified download, a snapshot the source would not delete). An error or
    interrupt once the snapshot exists says what was left (``errors.add_notice``): the snapshot
    deleted or kept (named, with the commands that finish the copy by hand), the download.
    """
    progress = progress or _noop
    source = parse_target(src)
    target = parse_target(dst)
    for t, loc in ((source, src), (target, dst)):
        if t.kind != "collection":
            raise UsageError("snapshot copy moves one collection", location=Location(loc),
                             hint="give qdrant://HOST:PORT/COLLECTION on both sides")
    _check_priority(priority)
    started = time.monotonic()
    report: dict[str, Any] = {"from": source.display(), "to": target.display(), "steps": {}}
    folder = Path(workdir) if workdir is not None else Path(tempfile.gettempdir())
    if not folder.is_dir():
        raise UsageError("work directory does not exist", location=Location(str(folder)))
    with SnapshotClient(source, api_key_env=api_key_env, timeout=timeout,
                        max_retries=max_retries, transport=transport) as a, \
            SnapshotClient(target, api_key_env=dst_api_key_env or api_key_env,
                           timeout=timeout, max_retries=max_retries, transport=transport) as b:
        b.refuse_replacing(overwrite)  # before a snapshot is made on the source
        # the download (often gigabytes) goes to a locked scratch directory, which the next
        # copy removes if this process is killed first; made before the snapshot is, so a
        # work directory that refuses it leaves no snapshot behind on the source
        scratch = ScratchDir("snapshot-copy", folder)
        #: how far the copy got, for what its error or interrupt says it left
        left: dict[str, Any] = {"stage": "count"}
        try:
            expected = a.count()
            progress("count", expected, expected)
            progress("create", 0, None)
            left["stage"] = "create"
            t0 = time.monotonic()
            snap = a.create(wait=True)
            if not snap or not snap.get("name"):
                left["stage"] = "undescribed"  # the error says what to do
                raise TargetError("the server did not describe the snapshot it created",
                                  location=a.where,
                                  hint="nothing was copied; a snapshot may be left on the source "
                                       f"(`vecferry snapshot list {source.display()}`): copy it by "
                                       f"hand with `vecferry snapshot download {source.display()} "
                                       "NAME --out FILE`, then `vecferry snapshot upload FILE "
                                       f"{target.display()}`")
            progress("create", 1, 1)
            left.update(stage="download", name=snap["name"])
            report["steps"]["create"] = {"name": snap["name"], "bytes": snap.get("size"),
                                         "seconds": round(time.monotonic() - t0, 3)}
            local = scratch.path / snap["name"]
            try:
                # the scratch directory goes with the run: no resume to promise
                report["steps"]["download"] = a.download(snap["name"], local, expected=snap,
                                                         progress=progress, resumable=False)
                left["stage"] = "upload"
                report["steps"]["upload"] = b.upload(local, priority=priority,
                                                     checksum=report["steps"]["download"]["sha256"],
                                                     progress=progress, overwrite=True)
                left["stage"] = "done"
            finally:
                if not keep:
                    try:
                        a.delete(snap["name"])
                    except VecferryError as exc:
                        left["not_deleted"] = exc.message
                else:
                    kept = folder / f".vecferry-copy-{uuid.uuid4().hex[:8]}-{snap['name']}"
                    partial = local.with_name(local.name + PART_SUFFIX)
                    with contextlib.suppress(OSError):
                        if local.exists():
                            local.rename(kept)
                        elif partial.exists():
                            # the download resumes from it: `snapshot download ... --out kept`
                            partial.rename(kept.with_name(kept.name + PART_SUFFIX))
                    left["kept"] = kept
                    report["kept"] = {"file": str(kept), "snapshot": snap["name"]}
        except BaseException as exc:
            add_notice(exc, _copy_left(left, source, target, interrupted=isinstance(
                exc, KeyboardInterrupt)))
            raise
        finally:
            scratch.remove()
        report["warnings"] = list(report["steps"]["download"].get("warnings", []))
        if left.get("not_deleted"):
            report["warnings"].append(_copy_left(left, source, target, interrupted=False))
        got = b.count()
        progress("count", got, expected)
    report["source_count"] = expected
    report["destination_count"] = got
    report["seconds"] = round(time.monotonic() - started, 3)
    report["ok"] = got == expected
    if got != expected:
        raise VerificationError(
            f"the destination holds {got} points, the source held {expected} when the "
            "snapshot was taken", location=Location(source=target.display()),
            hint="the source may have changed during the copy; run it again, or compare with "
                 "`vecferry verify`")
    return report
