"""Object storage locations: ``s3://``, ``gs://``, ``az://`` (read and write) and ``https://``
(read only), through fsspec.

Formats never see a provider: they get a ``StoragePath`` (from ``as_path`` / ``input_path``)
that answers the few ``pathlib`` questions they ask (``exists``, ``is_dir``, ``glob``, ``/``,
``name``, ``read_bytes``, ``stat``) and opens byte streams:

* reading is streamed with ranged requests (``open_input``, ``RangedArray`` for numpy rows);
* writing goes through an atomic ``RemoteOutput``: a single object is one multipart upload to
  the target key that is completed only on commit and aborted otherwise (memory bounded by
  one part), a directory is written under a hidden temporary prefix and moved on commit, and
  libraries that must seek back into their output (numpy header patching, FAISS) write a
  local staging copy that is uploaded on commit.

Credentials come from each provider's usual environment variables and config files (boto's
``AWS_*`` / ``~/.aws``, Google's application default credentials, Azure's ``AZURE_STORAGE_*``),
never from the location, and no error message carries a secret. Settings such as an endpoint
URL are ``storage_options`` (``--storage-option KEY=VALUE`` on the command line), active for
the duration of a ``using(...)`` block; fsspec's own ``FSSPEC_<PROTOCOL>_<KEY>`` variables work
too. fsspec and the provider packages are an extra: ``pip install 'vecferry[s3]'`` (``gcs``,
``azure``).
"""

from __future__ import annotations

import contextlib
import io
import os
import posixpath
import re
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from types import SimpleNamespace
from typing import Any

from vecferry.errors import (
    InputError,
    Location,
    MissingDependencyError,
    OutputExistsError,
    TargetError,
    UsageError,
    VecferryError,
)

#: URI scheme -> provider
SCHEMES: dict[str, str] = {
    "s3": "s3", "s3a": "s3",
    "gs": "gcs", "gcs": "gcs",
    "az": "azure", "abfs": "azure", "abfss": "azure",
    "http": "http", "https": "http",
}
READ_ONLY = frozenset({"http", "https"})

_EXTRA = {"s3": "s3", "gcs": "gcs", "azure": "azure", "http": "s3"}
_PACKAGE = {"s3": "s3fs", "gcs": "gcsfs", "azure": "adlfs", "http": "aiohttp"}
_PROVIDER = {"s3": "S3", "gcs": "Google Cloud Storage", "azure": "Azure Blob Storage",
             "http": "the web server"}
CREDENTIALS_HINT = {
    "s3": "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN), or "
          "AWS_PROFILE with ~/.aws/credentials; for an S3-compatible server also "
          "--storage-option endpoint_url=URL",
    "gcs": "set GOOGLE_APPLICATION_CREDENTIALS to a service-account JSON file, or run "
           "`gcloud auth application-default login`",
    "azure": "set AZURE_STORAGE_ACCOUNT_NAME with AZURE_STORAGE_ACCOUNT_KEY, "
             "AZURE_STORAGE_SAS_TOKEN or AZURE_STORAGE_CONNECTION_STRING, or sign in with "
             "`az login`",
    "http": "check the URL; vecferry sends no credentials to https:// locations",
}

#: storage option keys that hold secrets: refused on the command line (shell history, ``ps``)
SECRET_KEYS = frozenset({
    "key", "secret", "token", "password", "account_key", "sas_token", "connection_string",
    "client_secret", "credentials", "aws_access_key_id", "aws_secret_access_key",
    "aws_session_token", "session_token", "credential",
})
#: environment variables whose values must never appear in a message
_SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AZURE_STORAGE_ACCOUNT_KEY",
               "AZURE_STORAGE_SAS_TOKEN", "AZURE_STORAGE_CONNECTION_STRING",
               "AZURE_STORAGE_CLIENT_SECRET", "AZURE_CLIENT_SECRET")

#: read-ahead of input streams; each read is one ranged request of at least this many bytes
READ_BLOCK = 8 << 20

# "s3://b/k" after pathlib collapsed it ("s3:/b/k"): accepted back so Path() round trips work
_COLLAPSED = re.compile(r"\A([a-z][a-z0-9+.-]*):/(?!/)")


# ---------------------------------------------------------------------------------- options

_lock = threading.Lock()
_scopes: list[dict[str, Any]] = []


@contextlib.contextmanager
def using(options: dict[str, Any] | None) -> Iterator[None]:
    """Make ``options`` the storage options of every remote location opened inside the block.

    They are process-wide while the block runs (the reader's prefetch thread opens files too);
    nested blocks add to the outer ones.
    """
    with _lock:
        _scopes.append(dict(options or {}))
    try:
        yield
    finally:
        with _lock:
            _scopes.pop()


def with_storage_options(fn: Any) -> Any:
    """Give ``fn`` a ``storage_options`` keyword: the options of its remote locations."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, storage_options: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        if not storage_options:
            return fn(*args, **kwargs)
        with using(storage_options):
            return fn(*args, **kwargs)

    return wrapper


def current_options() -> dict[str, Any]:
    merged: dict[str, Any] = {}
    with _lock:
        for scope in _scopes:
            merged.update(scope)
    return merged


def _value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_storage_options(pairs: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs (``a.b=VALUE`` nests) into a dict; secrets are refused.

    Values ``true``/``false``/numbers become booleans/numbers. A key that holds a credential
    is a ``UsageError`` naming the key only, never its value.
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--storage-option takes KEY=VALUE, not {key or pair!r}"
                             if sep else "--storage-option takes KEY=VALUE",
                             hint="e.g. --storage-option endpoint_url=http://127.0.0.1:9000")
        if key.split(".")[-1].lower() in SECRET_KEYS:
            raise UsageError(f"storage option {key!r} holds a credential and is not taken from "
                             "the command line",
                             hint="use the provider's environment variables or config files: "
                             + "; ".join(f"{k}: {v}" for k, v in CREDENTIALS_HINT.items()
                                         if k != "http"))
        target = out
        *parents, leaf = key.split(".")
        for p in parents:
            target = target.setdefault(p, {})
        target[leaf] = _value(text)
    return out


# -------------------------------------------------------------------------------- locations


def scheme(location: Any) -> str | None:
    """The storage scheme of ``location`` (``s3``, ``gs``, ``https``, ...) or None if local."""
    if isinstance(location, StoragePath):
        return location.scheme
    text = os.fspath(location) if isinstance(location, os.PathLike) else str(location)
    head, sep, _ = text.partition("://")
    if sep:
        head = head.lower()
        return head if head in SCHEMES else None
    m = _COLLAPSED.match(text)
    return m.group(1) if m and m.group(1) in SCHEMES else None


def is_remote(location: Any) -> bool:
    return scheme(location) is not None


def url_of(location: Any) -> str:
    """The location as a URL (undoing pathlib's collapse of ``s3://`` into ``s3:/``)."""
    if isinstance(location, StoragePath):
        return location.url
    text = os.fspath(location) if isinstance(location, os.PathLike) else str(location)
    if "://" not in text:
        text = _COLLAPSED.sub(r"\1://", text, count=1)
    return text


def redact(url: str) -> str:
    """``url`` without user information (``s3://KEY:SECRET@bucket`` -> ``s3://***@bucket``)."""
    head, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, tail = rest.partition("/")
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    return f"{head}{sep}{netloc}{slash}{tail}"


def scrub(text: str) -> str:
    """``text`` with the values of secret environment variables and options replaced."""
    secrets = [os.environ.get(k) for k in _SECRET_ENV]

    def walk(d: dict[str, Any]) -> None:
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v)
            elif k.lower() in SECRET_KEYS and isinstance(v, str):
                secrets.append(v)

    walk(current_options())
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, "***")
    return text


def _provider(location: str) -> str:
    return SCHEMES[scheme(location) or "s3"]


def _check_location(url: str) -> None:
    netloc = url.partition("://")[2].partition("/")[0]
    if "@" in netloc and scheme(url) not in ("az", "abfs", "abfss"):
        # adlfs spells container@account; any other user part would be a credential
        raise UsageError("credentials in the location are not accepted",
                         location=Location(redact(url)),
                         hint=CREDENTIALS_HINT[_provider(url)])


def filesystem(url: str) -> tuple[Any, str]:
    """The fsspec filesystem and in-filesystem path of ``url``, with the active options."""
    _check_location(url)
    provider = _provider(url)
    options = {} if provider == "http" else current_options()
    try:
        import fsspec.core
    except ImportError as exc:
        raise MissingDependencyError(
            f"{scheme(url)}:// locations need fsspec, which is not installed",
            location=Location(redact(url)),
            hint=f"pip install 'vecferry[{_EXTRA[provider]}]'") from exc
    try:
        return fsspec.core.url_to_fs(url, **options)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{scheme(url)}:// locations need {_PACKAGE[provider]}, which is not installed",
            location=Location(redact(url)),
            hint=f"pip install 'vecferry[{_EXTRA[provider]}]'") from exc
    except (TypeError, ValueError) as exc:
        raise UsageError(f"bad storage options for {scheme(url)}://: {scrub(str(exc))}",
                         location=Location(redact(url)),
                         hint="check the --storage-option keys") from exc


def _names(exc: BaseException) -> set[str]:
    return {c.__name__ for c in type(exc).__mro__}


_AUTH_NAMES = {"NoCredentialsError", "PartialCredentialsError", "DefaultCredentialsError",
               "RefreshError", "ClientAuthenticationError", "CredentialUnavailableError",
               "InvalidClientTokenId"}


def translate(exc: BaseException, url: str, *, writing: bool) -> VecferryError:
    """A typed error for a failed storage request: what failed, where, and what to do."""
    if isinstance(exc, VecferryError):
        return exc
    cls = TargetError if writing else InputError
    provider = _provider(url)
    where = Location(redact(url))
    detail = scrub(str(exc))[:300]
    status = getattr(exc, "status", None) or getattr(exc, "code", None)
    if isinstance(exc, PermissionError) or _names(exc) & _AUTH_NAMES or status in (401, 403):
        return cls(f"{_PROVIDER[provider]} refused access: the credentials are missing, wrong, "
                   f"or not allowed to {'write' if writing else 'read'} here ({detail})",
                   location=where, hint=CREDENTIALS_HINT[provider])
    if isinstance(exc, FileNotFoundError) or status == 404:
        if writing:
            return TargetError("the bucket or container does not exist", location=where,
                               hint="create it first, or check the name")
        return InputError("no such object, bucket or container", location=where,
                          hint="check the location")
    return cls(f"storage request failed: {type(exc).__name__}: {detail}", location=where,
               hint="check the location, the network and --storage-option settings")


@contextlib.contextmanager
def _translated(url: str, *, writing: bool = False) -> Iterator[None]:
    try:
        yield
    except VecferryError:
        raise
    except Exception as exc:
        raise translate(exc, url, writing=writing) from exc


# -------------------------------------------------------------------------------- paths


class StoragePath:
    """A remote file or prefix answering the ``pathlib`` questions the formats ask."""

    __slots__ = ("_output", "fs", "path", "scheme", "url")

    def __init__(self, url: str, *, fs: Any = None, path: str | None = None,
                 output: RemoteOutput | None = None):
        url = url_of(url)
        self.url = url
        self.scheme = scheme(url)
        if fs is None:
            fs, path = filesystem(url)
        self.fs = fs
        self.path = path if path is not None else url
        self._output = output

    # -- naming ----------------------------------------------------------------------
    def _make(self, path: str, output: RemoteOutput | None = None) -> StoragePath:
        url = path if self.scheme in READ_ONLY else f"{self.scheme}://{path}"
        return StoragePath(url, fs=self.fs, path=path, output=output)

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"StoragePath({redact(self.url)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StoragePath) and other.url == self.url

    def __hash__(self) -> int:
        return hash(self.url)

    @property
    def name(self) -> str:
        return posixpath.basename(self.path.split("?", 1)[0].rstrip("/"))

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.name).suffix

    @property
    def suffixes(self) -> list[str]:
        return PurePosixPath(self.name).suffixes

    @property
    def stem(self) -> str:
        return PurePosixPath(self.name).stem

    @property
    def parent(self) -> StoragePath:
        return self._make(posixpath.dirname(self.path.rstrip("/")))

    def __truediv__(self, other: str) -> StoragePath:
        return self._make(f"{self.path.rstrip('/')}/{other}", self._output)

    def with_name(self, name: str) -> StoragePath:
        return self._make(f"{posixpath.dirname(self.path.rstrip('/'))}/{name}", self._output)

    def with_suffix(self, suffix: str) -> StoragePath:
        return self.with_name(str(PurePosixPath(self.name).with_suffix(suffix)))

    # -- questions -------------------------------------------------------------------
    def info(self) -> dict[str, Any] | None:
        """The object's metadata, None when nothing is there."""
        with _translated(self.url):
            try:
                return self.fs.info(self.path)
            except FileNotFoundError:
                return None

    def exists(self) -> bool:
        return self.info() is not None

    def is_dir(self) -> bool:
        info = self.info()
        return info is not None and info.get("type") == "directory"

    def is_file(self) -> bool:
        info = self.info()
        return info is not None and info.get("type") != "directory"

    def stat(self) -> SimpleNamespace:
        info = self.info()
        if info is None:
            raise InputError("no such object", location=Location(redact(self.url)))
        return SimpleNamespace(st_size=int(info.get("size") or 0))

    def iterdir(self) -> Iterator[StoragePath]:
        with _translated(self.url):
            names = self.fs.ls(self.path, detail=False)
        own = self.path.rstrip("/")
        for n in sorted(names):
            if n.rstrip("/") != own:
                yield self._make(n.rstrip("/"))

    def glob(self, pattern: str) -> Iterator[StoragePath]:
        with _translated(self.url):
            found = self.fs.glob(f"{self.path.rstrip('/')}/{pattern}")
        for n in sorted(found):
            yield self._make(n)

    # -- bytes -----------------------------------------------------------------------
    def open_input(self) -> Any:
        """A seekable binary reader doing ranged requests of ``READ_BLOCK`` bytes."""
        with _translated(self.url):
            raw = _ReadHandle(self.fs.open(self.path, "rb", block_size=READ_BLOCK), self.url)
        return io.BufferedReader(raw, buffer_size=1 << 20)

    def read_bytes(self) -> bytes:
        with _translated(self.url):
            return self.fs.cat_file(self.path)

    def read_range(self, start: int, end: int) -> bytes:
        """Bytes ``start..end`` of the object; ``InputError`` when the server sends more than
        that, which a web server that does not do HTTP ranges does (the whole object)."""
        with _translated(self.url):
            data = self.fs.cat_file(self.path, start=start, end=end)
        if len(data) > end - start:
            raise InputError(f"the server ignored a byte-range request (asked for "
                             f"{end - start:,} bytes from byte {start:,}, got {len(data):,})",
                             location=Location(redact(self.url)),
                             hint="serve the file from a server that supports HTTP range "
                                  "requests, or download it first")
        return data

    def open_output(self) -> Upload:
        """The upload of this path, which must belong to an atomic output being written."""
        if self._output is None:
            raise UsageError("not an output being written; remote files are written through "
                             "an atomic output", location=Location(redact(self.url)))
        return self._output.open(self)

    def write_bytes(self, data: bytes) -> int:
        with self.open_output() as fh:
            fh.write(data)
        return len(data)

    def unlink(self, missing_ok: bool = False) -> None:
        with _translated(self.url, writing=True):
            try:
                self.fs.rm_file(self.path)
            except FileNotFoundError:
                if not missing_ok:
                    raise


def as_path(location: Any) -> Path | StoragePath:
    """A ``StoragePath`` for a remote location, a ``Path`` for a local one."""
    if isinstance(location, StoragePath):
        return location
    if is_remote(location):
        return StoragePath(url_of(location))
    return Path(location)


def input_path(location: Any) -> StoragePath:
    """A remote input, with a clear error when nothing is there or access is refused."""
    path = as_path(location)
    assert isinstance(path, StoragePath)
    if not path.exists():
        raise InputError("no such object or prefix", location=Location(redact(path.url)),
                         hint="check the location (and --storage-option endpoint_url)")
    return path


def open_binary(path: Any) -> Any:
    """A binary reader for a local or remote file (remote: ranged reads)."""
    if is_remote(path):
        return as_path(path).open_input()  # type: ignore[union-attr]
    return open(path, "rb")


def arrow_source(path: Any) -> Any:
    """What ``pyarrow.parquet.ParquetFile`` opens: the local path, or a remote reader."""
    return open_binary(path) if is_remote(path) else path


def arrow_sink(path: Any) -> Any:
    """What ``pyarrow.parquet.ParquetWriter`` writes to: the local path, or the upload of a
    remote ``AtomicPath.temp`` (finished by the output's commit)."""
    if isinstance(path, StoragePath):
        return path.open_output()
    return path


def file_size(path: Any) -> int:
    if is_remote(path):
        return as_path(path).stat().st_size
    return os.path.getsize(path)


class LocalCopy:
    """A remote file (and named sidecars next to it) copied into a private temporary directory,
    for libraries that read local files only (FAISS maps its index). Removed by ``cleanup()``,
    or when the object is garbage collected."""

    def __init__(self, source: StoragePath, sidecars: tuple[str, ...] = ()):
        from vecferry.converters.base import ScratchDir

        self._scratch = ScratchDir("copy")
        self.dir = self._scratch.path
        self.path = self.dir / (source.name or "input")
        try:
            with _translated(source.url):
                source.fs.get_file(source.path, str(self.path))
                for suffix in sidecars:
                    side = StoragePath(source.url + suffix, fs=source.fs,
                                       path=source.path + suffix)
                    if side.exists():
                        source.fs.get_file(side.path, str(self.dir / (self.path.name + suffix)))
        except BaseException:
            self.cleanup()
            raise

    def cleanup(self) -> None:
        self._scratch.remove()


class _ReadHandle(io.RawIOBase):
    """An fsspec reader whose failures come out as ``InputError`` naming the location."""

    def __init__(self, fh: Any, url: str):
        super().__init__()
        self._fh, self._url = fh, url

    def readinto(self, b: Any) -> int:
        with _translated(self._url):
            data = self._fh.read(len(b))
        n = len(data)
        b[:n] = data
        return n

    def seek(self, offset: int, whence: int = 0) -> int:
        with _translated(self._url):
            return self._fh.seek(offset, whence)

    def tell(self) -> int:
        return self._fh.tell()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._fh.close()
        super().close()


class RangedArray:
    """Rows of a C-ordered array stored at ``offset`` in a remote object, read by range.

    Stands in for a memory map where there is no local file: ``arr[lo:hi]`` is one ranged
    request for exactly those rows.
    """

    def __init__(self, path: StoragePath, dtype: Any, offset: int, shape: tuple[int, ...]):
        import numpy as np

        self.path, self.dtype, self.offset, self.shape = path, np.dtype(dtype), offset, shape
        self.ndim = len(shape)
        self._row = int(np.prod(shape[1:], dtype=np.int64)) * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: slice) -> Any:
        import numpy as np

        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("a remote array is read by contiguous row slices only")
        lo, hi, _ = key.indices(self.shape[0])
        hi = max(lo, hi)
        if hi == lo:
            return np.empty((0, *self.shape[1:]), dtype=self.dtype)
        data = self.path.read_range(self.offset + lo * self._row, self.offset + hi * self._row)
        if len(data) != (hi - lo) * self._row:
            raise InputError(f"object is truncated: rows {lo}..{hi} are not all there",
                             location=Location(redact(self.path.url)),
                             hint="re-upload the file")
        return np.frombuffer(data, dtype=self.dtype).reshape((hi - lo, *self.shape[1:]))

    def __array__(self, dtype: Any = None, copy: Any = None) -> Any:
        arr = self[0:self.shape[0]]
        return arr if dtype is None else arr.astype(dtype)


# ------------------------------------------------------------------------------- outputs


class Upload:
    """A streamed upload (multipart past one block); finished by its output's commit.

    ``close()`` of a single-object output only marks the stream done: the object appears when
    the output commits, and an aborted output aborts the multipart upload, so no truncated
    object ever sits at the target key. Failures come out as ``TargetError``.
    """

    mode = "wb"

    def __init__(self, fh: Any, url: str, *, defer: bool):
        self._fh, self.url, self._defer = fh, url, defer
        self._closed = False
        self._finished = False

    def write(self, data: Any) -> int:
        if self._closed:
            raise ValueError("write to a closed upload")
        with _translated(self.url, writing=True):
            return self._fh.write(data)

    def tell(self) -> int:
        return self._fh.tell()

    def flush(self) -> None:
        if not self._closed:
            with _translated(self.url, writing=True):
                self._fh.flush()

    def close(self) -> None:
        self._closed = True
        if not self._defer:
            self.finish()

    def finish(self) -> None:
        """Upload what is buffered and complete the object (idempotent)."""
        if self._finished:
            return
        self._closed = self._finished = True
        with _translated(self.url, writing=True):
            self._fh.close()

    def discard(self) -> None:
        """Abort the multipart upload: nothing appears at the key."""
        if self._finished:
            return
        self._closed = self._finished = True
        with contextlib.suppress(Exception):
            discard = getattr(self._fh, "discard", None)
            if discard is not None:
                discard()
        # the handle must not complete the upload when it is garbage collected
        with contextlib.suppress(Exception):
            self._fh.closed = True

    @property
    def closed(self) -> bool:
        return self._closed

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def __enter__(self) -> Upload:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class RemoteOutput:
    """The remote side of ``AtomicPath``: ``temp`` to write, ``commit`` / ``abort``.

    * one object (default): ``temp`` is the target itself; its upload completes on commit.
    * ``directory``: files go under ``.<name>.vftmp-<random>/`` next to the target and are
      copied into place on commit (the temporary prefix is removed either way).
    * ``staged``: ``temp`` is a local file or directory (for writers that seek back into
      their output); commit uploads it, streamed from disk in parts.

    ``overwrite`` replaces what the local rules allow (``base._check_replaceable``): checked
    when the output is opened and again, on a fresh listing, before anything is deleted.
    """

    def __init__(self, target: Any, *, overwrite: bool = False, directory: bool = False,
                 staged: bool = False, block_size: int | None = None):
        url = url_of(target).rstrip("/") if directory else url_of(target)
        if scheme(url) in READ_ONLY:
            raise UsageError(f"{scheme(url)}:// locations are read-only",
                             location=Location(redact(url)),
                             hint="write to s3://, gs:// or az://, or to a local file")
        self.target = StoragePath(url)
        self.fs = self.target.fs
        self.directory, self.staged = directory, staged
        self.block_size = block_size
        self._uploads: list[Upload] = []
        info = self.target.info()
        if info is not None:
            if not overwrite:
                raise OutputExistsError("output exists", location=Location(redact(url)),
                                        hint="pass --overwrite to replace it, or choose another "
                                        "output")
            self._check_replaceable(info)
        self._check_bucket()
        self._local: Any = None  # a ScratchDir while staged output is being written
        if staged:
            from vecferry.converters.base import ScratchDir

            self._local = ScratchDir("stage")
            self.temp: Any = self._local.path / (self.target.name or "out")
            if directory:
                self.temp.mkdir()
        elif directory:
            temp = f".{self.target.name}.vftmp-{uuid.uuid4().hex[:8]}"
            self.temp = self.target.with_name(temp)
            self.temp._output = self
        else:
            self.temp = StoragePath(self.target.url, fs=self.fs, path=self.target.path,
                                    output=self)

    def _check_bucket(self) -> None:
        bucket = self.target.path.split("/", 1)[0]
        with _translated(self.target.url, writing=True):
            try:
                self.fs.info(bucket)
            except FileNotFoundError:
                raise TargetError(f"bucket or container {bucket!r} does not exist",
                                  location=Location(redact(self.target.url)),
                                  hint="create it first, or check the name") from None

    def open(self, path: StoragePath) -> Upload:
        kw = {"block_size": self.block_size} if self.block_size else {}
        with _translated(path.url, writing=True):
            fh = self.fs.open(path.path, "wb", **kw)
        up = Upload(fh, path.url, defer=not self.directory)
        self._uploads.append(up)
        return up

    def commit(self) -> None:
        try:
            for up in self._uploads:
                up.finish()
            if self.staged:
                self._upload_staged()
            elif self.directory:
                self._move_prefix()
        except BaseException:
            self.abort()
            raise

    def _check_replaceable(self, info: dict[str, Any]) -> None:
        """What ``--overwrite`` may replace, as for a local output (``base._check_replaceable``):
        a file output never goes over a prefix holding objects, and a directory output only
        over a prefix holding nothing but what vecferry writes. ``UsageError`` otherwise."""
        if info.get("type") != "directory":
            return
        if not self.directory:
            raise UsageError("the output is a directory, and this format writes a file",
                             location=Location(redact(self.target.url)),
                             hint="name a file, or remove the directory first")
        self._replaceable_keys()

    def _replaceable_keys(self) -> list[str]:
        """Every object at or under the target (an object at the target key, or the objects
        of the prefix), once none of them is foreign: what replacing the target deletes.

        Listed afresh (no cached listing), so objects put there since the output was opened
        are checked too, and only the objects listed are deleted, never the prefix as such:
        one put there between the listing and the deletion stays.
        """
        from vecferry.converters.base import foreign_keys, listing

        path = self.target.path.rstrip("/")
        with _translated(self.target.url, writing=True):
            self.fs.invalidate_cache(path)
            found = self.fs.find(path)
        foreign = foreign_keys([k[len(path) + 1:] for k in found if k.startswith(path + "/")])
        if foreign:
            raise UsageError("the output directory holds files vecferry did not write: "
                             f"{listing(foreign)}",
                             location=Location(redact(self.target.url)),
                             hint="--overwrite replaces a directory vecferry wrote; choose a new "
                                  "or empty directory, or move those files out first")
        return found

    def _replace_target(self) -> None:
        keys = self._replaceable_keys()
        objects = [k for k in keys if not k.endswith("/")]
        if objects:
            with _translated(self.target.url, writing=True):
                self.fs.rm(objects)
        for marker in (k for k in keys if k.endswith("/")):
            # s3fs's rm drops a folder marker's trailing slash (so misses it); rm_file takes
            # the key as it is. A marker is empty: one a provider keeps does no harm.
            with contextlib.suppress(Exception):
                self.fs.rm_file(marker)

    def _upload_staged(self) -> None:
        assert self._local is not None
        local = Path(self.temp)
        with _translated(self.target.url, writing=True):
            if self.directory:
                self._replace_target()
                for f in sorted(local.rglob("*")):
                    if f.is_file():
                        rel = f.relative_to(local).as_posix()
                        self.fs.put_file(str(f), f"{self.target.path}/{rel}")
            else:
                self.fs.put_file(str(local), self.target.path)
        self._local.remove()
        self._local = None

    def _move_prefix(self) -> None:
        src = self.temp.path.rstrip("/")
        with _translated(self.target.url, writing=True):
            found = self.fs.find(src)
            self._replace_target()
            for key in found:
                self.fs.copy(key, f"{self.target.path}/{key[len(src) + 1:]}")
            self.fs.rm(src, recursive=True)

    def abort(self) -> None:
        for up in self._uploads:
            up.discard()
        if self._local is not None:
            self._local.remove()
            self._local = None
        if self.directory and not self.staged:
            with contextlib.suppress(Exception):
                self.fs.rm(self.temp.path, recursive=True)
        with contextlib.suppress(Exception):
            self.fs.invalidate_cache()
