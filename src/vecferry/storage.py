"""Object storage locations: ``s3://``, ``gs://``, ``az://`` (read and write) and ``https://``
(read only), through fsspec.

Formats never see a provider: they get a ``StoragePath`` (from ``as_path`` / ``input_path``)
that answers the few ``pathlib`` questions they ask (``exists``, ``is_dir``, ``glob``, ``/``,
``name``, ``read_bytes``, ``stat``) and opens byte streams:

* reading is streamed with ranged requests (``open_input``, ``RangedArray`` for numpy rows);
* writing goes through an atomic ``RemoteOutput``: a single object is one multipart upload to
  the target key that is completed only on commit and aborted (or, completed, deleted)
  otherwise (memory bounded by one part), and without ``overwrite`` completed only where no
  object is (another run's is not replaced), a directory is written under a hidden temporary
  prefix and moved into place on commit, manifest last, and libraries that must seek back
  into their output (numpy header patching, FAISS) write a local staging copy that is
  streamed up on commit. ``RemoteOutput`` says what an interrupted run leaves.

Credentials come from each provider's usual environment variables and config files (boto's
``AWS_*`` / ``~/.aws``, Google's application default credentials, Azure's ``AZURE_STORAGE_*``),
never from the location, and no error message carries a secret. Settings such as an endpoint
URL are ``storage_options`` (``--storage-option KEY=VALUE`` on the command line), active for
the duration of a ``using(...)`` block, in the thread that entered it; fsspec's own
``FSSPEC_<PROTOCOL>_<KEY>`` variables work too. fsspec and the provider packages are an extra:
``pip install 'vecferry[s3]'`` (``gcs``, ``azure``).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
import inspect
import io
import os
import posixpath
import re
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path, PurePosixPath
from types import MappingProxyType, SimpleNamespace
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

#: the ``storage_options`` scopes active in this context, outermost first. A context
#: variable, not a process-wide list: two threads converting with different options (two S3
#: endpoints) each see their own, and the threads a run starts for itself are started in a copy
#: of its context (``in_this_context``). Each scope is a read-only mapping in an immutable tuple,
#: so a copied context shares nothing that can change under it.
_SCOPES: contextvars.ContextVar[tuple[Mapping[str, Any], ...]] = contextvars.ContextVar(
    "vecferry_storage_options", default=())


@contextlib.contextmanager
def using(options: Mapping[str, Any] | None) -> Iterator[None]:
    """Make ``options`` the storage options of every remote location opened inside the block.

    They hold in the calling thread (its ``contextvars`` context) and in the threads vecferry
    starts for the run (``in_this_context``), not in other threads; nested blocks add to the
    outer ones. ``UsageError`` when ``options`` is not a mapping of option names to values.
    """
    if options is not None and not isinstance(options, Mapping):
        raise UsageError(f"storage_options must be a dict of option names to values, not "
                         f"{type(options).__name__}",
                         hint='e.g. storage_options={"endpoint_url": "http://127.0.0.1:9000"}')
    outer = _SCOPES.get()
    token = _SCOPES.set((*outer, MappingProxyType(dict(options or {}))))
    try:
        yield
    finally:
        try:
            _SCOPES.reset(token)
        except ValueError:
            # left in another context than it was entered in (a generator closed elsewhere):
            # what this context saw before the block is still what it should see after it
            _SCOPES.set(outer)


def with_storage_options(fn: Any) -> Any:
    """Give ``fn`` a ``storage_options`` keyword: the options of its remote locations."""

    @functools.wraps(fn)
    def wrapper(*args: Any, storage_options: Mapping[str, Any] | None = None,
                **kwargs: Any) -> Any:
        if storage_options is None:
            return fn(*args, **kwargs)
        with using(storage_options):
            return fn(*args, **kwargs)

    return wrapper


def current_options() -> dict[str, Any]:
    """The storage options in force here: the active scopes merged, inner ones winning."""
    merged: dict[str, Any] = {}
    for scope in _SCOPES.get():
        merged.update(scope)
    return merged


def in_this_context(target: Callable[..., Any]) -> Callable[..., Any]:
    """``target`` bound to a copy of the calling thread's context, for a thread to run: a
    new thread starts with an empty one, and would open remote locations without the
    caller's storage options."""
    return functools.partial(contextvars.copy_context().run, target)


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
    """The fsspec filesystem and in-filesystem path of ``url``, with the active options.

    An option the provider's filesystem does not take is a ``UsageError`` naming it and the
    ones it takes, here rather than as a ``TypeError`` from deep inside the first request.
    """
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
        if options:
            _check_options(fsspec.get_filesystem_class(scheme(url)), options, url)
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


#: settings fsspec itself takes for every filesystem (its instance and listings caches)
_FSSPEC_SETTINGS = frozenset({"skip_instance_cache", "use_listings_cache",
                              "listings_expiry_time", "max_paths"})
#: where a filesystem hands the settings it does not name itself: s3fs gives them to
#: botocore's session (``profile``, ...), so they are settings of s3:// too
_FORWARDED = {"s3fs.core.S3FileSystem": ("aiobotocore.session", "AioSession")}
#: settings for Python callers (objects, not text), left out of the hint
_PYTHON_ONLY = frozenset({"loop", "asynchronous", "session", "kwargs"})


def _keywords(fn: Any) -> tuple[set[str], bool]:
    """The keyword parameter names of ``fn``, and whether it takes ``**kwargs`` too."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return set(), True  # not introspectable: take it on trust
    names = {p.name for p in params if p.name != "self"
             and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return names, any(p.kind is p.VAR_KEYWORD for p in params)


@functools.cache
def accepted_options(cls: type) -> frozenset[str]:
    """The top-level storage options filesystem class ``cls`` takes: its own parameters and
    its base classes' (while each passes the rest on), fsspec's, and those it forwards."""
    names = set(_FSSPEC_SETTINGS)
    for klass in cls.__mro__:
        init = vars(klass).get("__init__")
        if init is None:
            continue
        own, more = _keywords(init)
        names |= own
        if not more:
            break  # nothing beyond these reaches its base classes
    forward = _FORWARDED.get(f"{cls.__module__}.{cls.__qualname__}")
    if forward is not None:
        with contextlib.suppress(ImportError, AttributeError):
            target = getattr(importlib.import_module(forward[0]), forward[1])
            names |= _keywords(target.__init__)[0]
    return frozenset(names)


def _check_options(cls: type, options: dict[str, Any], url: str) -> None:
    """Refuse top-level options ``cls`` does not take (nested ones, such as
    ``client_kwargs.region_name``, are the provider client's: see ``translate``)."""
    accepted = accepted_options(cls)
    unknown = sorted(k for k in options if k not in accepted)
    if not unknown:
        return
    flags = ", ".join(f"--storage-option {k}" for k in unknown)
    verb = "is not a setting" if len(unknown) == 1 else "are not settings"
    shown = sorted(accepted - SECRET_KEYS - _PYTHON_ONLY - {"username"})
    package = _PACKAGE[_provider(url)]
    raise UsageError(f"{flags} {verb} of {scheme(url)}:// locations",
                     location=Location(redact(url)),
                     hint=f"{package} takes {', '.join(shown)} (see its documentation; a "
                          "nested setting is written like client_kwargs.region_name=VALUE, "
                          "storage_options in Python)")


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
    if isinstance(exc, TypeError) and "unexpected keyword argument" in str(exc):
        # the provider passes storage options on to its client at the first request (a nested
        # one such as client_kwargs.x=...): a wrong call, not a failed transfer
        return UsageError(f"a storage option is not taken by {_PACKAGE[provider]}: {detail}",
                          location=where,
                          hint="check the --storage-option keys (see the provider's "
                               "documentation)")
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
    """A remote file or prefix answering the ``pathlib`` questions the formats ask.

    A destination (``writing``: from ``output_path``, or a path of an output being written)
    reports a refused question as a ``TargetError`` about writing there; any other location
    as an ``InputError`` about reading it.
    """

    __slots__ = ("_output", "_writing", "fs", "path", "scheme", "url")

    def __init__(self, url: str, *, fs: Any = None, path: str | None = None,
                 output: RemoteOutput | None = None, writing: bool = False):
        url = url_of(url)
        self.url = url
        self.scheme = scheme(url)
        if fs is None:
            fs, path = filesystem(url)
        self.fs = fs
        self.path = path if path is not None else url
        self._output = output
        self._writing = writing

    @property
    def writing(self) -> bool:
        """Whether this is a destination (its failures are ``TargetError``)."""
        return self._writing or self._output is not None

    # -- naming ----------------------------------------------------------------------
    def _make(self, path: str, output: RemoteOutput | None = None) -> StoragePath:
        url = path if self.scheme in READ_ONLY else f"{self.scheme}://{path}"
        return StoragePath(url, fs=self.fs, path=path, output=output, writing=self._writing)

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
        with _translated(self.url, writing=self.writing):
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
        with _translated(self.url, writing=self.writing):
            names = self.fs.ls(self.path, detail=False)
        own = self.path.rstrip("/")
        for n in sorted(names):
            if n.rstrip("/") != own:
                yield self._make(n.rstrip("/"))

    def glob(self, pattern: str) -> Iterator[StoragePath]:
        with _translated(self.url, writing=self.writing):
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


def output_path(location: Any) -> Path | StoragePath:
    """``as_path`` for a destination: a remote one's questions (``exists``, ``is_dir``) that
    the store refuses are a ``TargetError`` saying it may not be written, not an
    ``InputError`` about reading a source. Writers ask through this before they open their
    output."""
    if isinstance(location, StoragePath):
        return StoragePath(location.url, fs=location.fs, path=location.path,
                           output=location._output, writing=True)
    if is_remote(location):
        return StoragePath(url_of(location), writing=True)
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


#: the manifest of a directory output (parts' ``_manifest.json``, numpy's ``manifest.json``,
#: VDF's ``VDF_META.json``), by its name relative to the prefix: moved into place last
_MANIFESTS = re.compile(r"(_?manifest\.json|VDF_META\.json)\Z")
#: bytes of a staged local file read per write into its upload (which sends whole parts)
_STREAM_CHUNK = 8 << 20


#: schemes whose filesystem (s3fs) writes an object only if none is at its key (mode "xb":
#: ``If-None-Match: *`` on the PUT or on the completion of the multipart upload); elsewhere
#: the check at commit is all there is (see ``RemoteOutput._check_still_absent``)
_EXCLUSIVE_SCHEMES = frozenset({"s3", "s3a"})


#: what ``RemoteOutput.abort_notice`` says of a directory output whose move into place an
#: interrupt cut short and ``abort`` finished: the output is this run's, whole (the command
#: line tells it apart from the notices of what is left broken by these words)
MOVE_FINISHED = "the move into place was finished"


def _direct(fn: Any, *args: Any) -> Any:
    return fn(*args)


def _appeared(url: str) -> OutputExistsError:
    """What a run hears when another run wrote its output first: the same words as a local
    output's (``base.AtomicPath.commit``)."""
    return OutputExistsError(
        "output appeared while this run was writing it (another run to the same place?); it is "
        "left as it is", location=Location(redact(url)),
        hint="pass --overwrite to replace it, or choose another output")


class Upload:
    """A streamed upload (multipart past one block); finished by its output's commit.

    ``close()`` of a single-object output only marks the stream done: the object appears when
    the output commits, and an aborted output aborts the multipart upload, so no truncated
    object ever sits at the target key. Failures come out as ``TargetError``.

    ``completed`` turns true once the request that makes the object appear (the one-shot PUT
    or the completion of the multipart upload) has been answered; ``call`` runs that request
    (``RemoteOutput._call``: an interrupt stops the waiting, not the request).

    ``exclusive``: ``fh`` was opened to write only where no object is (mode ``xb``); the store
    refusing the completion because one is there now is an ``OutputExistsError`` (the upload
    is then not completed, and ``discard`` aborts it).
    """

    mode = "wb"

    def __init__(self, fh: Any, url: str, *, defer: bool, call: Any = None,
                 exclusive: bool = False):
        self._fh, self.url, self._defer = fh, url, defer
        self.exclusive = exclusive
        self._call = call or _direct
        self._closed = False
        self._finished = False
        self.completed = False

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

    def _complete(self) -> None:
        self._fh.close()
        self.completed = True  # set by the thread that saw the answer, even after an interrupt

    def finish(self) -> None:
        """Upload what is buffered and complete the object (idempotent)."""
        if self._finished:
            return
        self._closed = self._finished = True
        with _translated(self.url, writing=True):
            try:
                self._call(self._complete)
            except FileExistsError as exc:
                # s3fs's word for "PreconditionFailed (If-None-Match)": another run's object
                # landed at the key between our check and this completion
                if not self.exclusive:
                    raise
                raise _appeared(self.url) from exc

    def discard(self) -> None:
        """Abort the multipart upload: nothing appears at the key. A completed object is left
        to its output (``RemoteOutput.abort`` removes it)."""
        if self.completed:
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
      moved into place on commit (below).
    * ``staged``: ``temp`` is a local file or directory (for writers that seek back into
      their output); commit streams it up in parts: one object into the target's upload, a
      directory's files under the hidden prefix, then moved into place as above.

    ``overwrite`` replaces what the local rules allow (``base._check_replaceable``): checked
    when the output is opened and again, on a fresh listing, before anything is deleted.

    Without ``overwrite``, an output another run wrote meanwhile is not replaced: the commit
    raises ``OutputExistsError`` (as a local output's does) and ``abort`` leaves that output
    as it is. A directory finds it on the fresh listing before its move. A single object is
    checked again just before its upload completes and, on S3 (``_EXCLUSIVE_SCHEMES``), the
    completion itself is conditional (``If-None-Match: *``), so of two runs racing to one new
    key exactly one completes. Elsewhere (GCS, Azure) two completions landing between each
    other's check and completion can still both succeed, the later winning; so can two empty
    objects on S3 (s3fs creates an empty object with a plain PUT).

    What an interrupted or failed run leaves. An interrupt (Ctrl-C, SIGTERM as the command
    line raises it) stops only the waiting for a request: the request has been sent and may
    still succeed, so ``abort`` first waits for the answer of each request that makes,
    copies or deletes an object, then cleans up after what it did.

    * One object: it appears when its upload completes on commit (a store replaces an
      object whole), and only then. A run that does not finish after that (its sidecar, a
      separate output committed next, was refused or interrupted) has ``abort`` delete it:
      readers take a JSONL or FAISS file without its manifest sidecar for a foreign one.
      Under ``overwrite`` the object it replaced is gone with it (a store keeps no old
      version); the old sidecar, which the run did not replace, stays.
    * A directory: nothing at the target changes until every file is uploaded under the
      hidden prefix (an interrupt or failure until then leaves the old output as it was, and
      ``abort`` removes the prefix). Then the move: an old manifest is deleted first, the new
      data objects copied in (server side), old objects the new output lacks deleted, the new
      manifest copied in last, the prefix removed. A store has no atomic rename of a prefix,
      so while the move runs a reader finds the prefix without a manifest (never an old
      manifest beside new data, nor a new manifest before its data). An interrupt or failure
      during the move has ``abort`` finish it from the prefix when an old output was being
      replaced (its manifest is already gone: the new output is the whole one left; the run
      still ends with its error or interrupt), or delete what was copied in when nothing was
      there. What ``abort`` cannot repair (a second interrupt, a store refusing the copies
      again) leaves the prefix without a manifest, data without the record of what it should
      hold; ``abort_notice`` then says so.
    * A SIGKILL skips ``abort``: an upload never completed is an unfinished multipart upload
      (invisible), and the hidden prefix stays; one killed during a move leaves the prefix
      without a manifest as above, one killed between completing a single object and its
      sidecar leaves the object without it (a window of one small PUT).
    """

    def __init__(self, target: Any, *, overwrite: bool = False, directory: bool = False,
                 staged: bool = False, block_size: int | None = None):
        url = url_of(target).rstrip("/") if directory else url_of(target)
        if scheme(url) in READ_ONLY:
            raise UsageError(f"{scheme(url)}:// locations are read-only",
                             location=Location(redact(url)),
                             hint="write to s3://, gs:// or az://, or to a local file")
        # a destination: a refused probe says the credentials may not write here
        self.target = StoragePath(url, writing=True)
        self.fs = self.target.fs
        self.directory, self.staged, self.overwrite = directory, staged, overwrite
        self.block_size = block_size
        #: what ``abort`` could not put right, for the run's error message (None: nothing)
        self.abort_notice: str | None = None
        self._uploads: list[Upload] = []
        self._inflight: list[threading.Event] = []
        self._state = "writing"  # then "moving" (directory), "done" or "aborted"
        self._move: SimpleNamespace | None = None
        info = self.target.info()
        if info is not None:
            if not overwrite:
                raise OutputExistsError("output exists", location=Location(redact(url)),
                                        hint="pass --overwrite to replace it, or choose another "
                                        "output")
            self._check_replaceable(info)
        self._check_bucket()
        self._local: Any = None  # a ScratchDir while staged output is being written
        self._prefix: StoragePath | None = None
        if directory:
            self._prefix = self.target.with_name(
                f".{self.target.name}.vftmp-{uuid.uuid4().hex[:8]}")
            self._prefix._output = self
        if staged:
            from vecferry.converters.base import ScratchDir

            self._local = ScratchDir("stage")
            self.temp: Any = self._local.path / (self.target.name or "out")
            if directory:
                self.temp.mkdir()
        elif directory:
            self.temp = self._prefix
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

    # -- requests --------------------------------------------------------------------
    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)``, a request that makes, copies or deletes an object, run in
        a helper thread this one waits for. fsspec runs requests in its event loop thread,
        and an interrupt of the waiting thread does not stop them: a PUT sent may land after
        the run has cleaned up. Here the request stays known until ``_settle`` saw it end."""
        box: dict[str, Any] = {}
        # An event, not Thread.join: a join cut short by an interrupt marks the thread as
        # stopped (CPython 3.11, bpo-45274), and joining it again returns at once.
        done = threading.Event()

        def run() -> None:
            try:
                box["value"] = fn(*args, **kwargs)
            except BaseException as exc:  # handed to the waiting thread
                box["error"] = exc
            finally:
                done.set()

        self._inflight.append(done)
        threading.Thread(target=in_this_context(run), name="vecferry-storage",
                         daemon=True).start()
        done.wait()  # an interrupt here leaves ``done`` in _inflight for abort()
        self._inflight.remove(done)
        if "error" in box:
            raise box["error"]
        return box.get("value")

    def _settle(self) -> None:
        """Wait for the requests an interrupt left without an answer (a second interrupt stops
        the waiting: what they do is then not cleaned up)."""
        while self._inflight:
            self._inflight[0].wait()
            self._inflight.pop(0)

    def _url(self, path: str) -> str:
        return self.target._make(path).url

    def open(self, path: StoragePath) -> Upload:
        return self._open(path.path, path.url, defer=not self.directory)

    def _open(self, path: str, url: str, *, defer: bool) -> Upload:
        kw = {"block_size": self.block_size} if self.block_size else {}
        # the object at the target key itself, not one under a directory's hidden prefix
        exclusive = (not self.overwrite and not self.directory and path == self.target.path
                     and self.target.scheme in _EXCLUSIVE_SCHEMES)
        with _translated(url, writing=True):
            fh = self.fs.open(path, "xb" if exclusive else "wb", **kw)
        up = Upload(fh, url, defer=defer, call=self._call, exclusive=exclusive)
        self._uploads.append(up)
        return up

    # -- commit ----------------------------------------------------------------------
    def commit(self) -> None:
        if self._state != "writing":
            return
        try:
            if self.staged:
                self._upload_staged()
            if not self.directory:
                self._check_still_absent()
            for up in list(self._uploads):
                up.finish()  # one object: this is where it appears
            if self.directory:
                self._publish()
            self._state = "done"
        except BaseException:
            self.abort()
            raise
        if self._local is not None:
            self._local.remove()
            self._local = None

    def _check_still_absent(self) -> None:
        """Before a single object's upload completes: ``OutputExistsError`` when, without
        ``overwrite``, an object appeared at the key since the output was opened (another run
        to the same place); with it, what is there is checked again as at open."""
        self.fs.invalidate_cache(self.target.path)  # asked afresh, not from a listing
        info = self.target.info()
        if info is None:
            return
        if not self.overwrite:
            raise _appeared(self.target.url)
        self._check_replaceable(info)

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

    def _upload_staged(self) -> None:
        """Stream the local staging copy up: one object into the target's (deferred) upload,
        a directory's files under the hidden prefix. Parts go one at a time, so an interrupt
        leaves at most one in flight, of an upload never completed."""
        local = Path(self.temp)
        if not self.directory:
            self._stream(local, self.target.path, defer=True)
            return
        assert self._prefix is not None
        for f in sorted(local.rglob("*")):
            if f.is_file():
                rel = f.relative_to(local).as_posix()
                self._stream(f, f"{self._prefix.path}/{rel}", defer=False)

    def _stream(self, local: Path, path: str, *, defer: bool) -> None:
        up = self._open(path, self._url(path), defer=defer)
        with open(local, "rb") as fh:
            while chunk := fh.read(_STREAM_CHUNK):
                up.write(chunk)
        up.close()

    def _publish(self) -> None:
        """Move the hidden prefix's objects into place (see the class docstring)."""
        assert self._prefix is not None
        src = self._prefix.path.rstrip("/")
        dst = self.target.path.rstrip("/")
        with _translated(self.target.url, writing=True):
            self.fs.invalidate_cache(src)
            new = sorted(k[len(src) + 1:] for k in self.fs.find(src)
                         if k.startswith(src + "/") and not k.endswith("/"))
        old = self._replaceable_keys()  # refuses objects put there meanwhile that are not ours
        old_objects = [k for k in old if not k.endswith("/")]
        if old_objects and not self.overwrite:
            # another run wrote the same output while this one ran: it is not replaced
            raise _appeared(self.target.url)
        rel_old = {k[len(dst) + 1:]: k for k in old_objects if k.startswith(dst + "/")}
        manifests = [r for r in new if _MANIFESTS.match(r)]
        self._move = SimpleNamespace(
            src=src, dst=dst, new=new,
            data=[r for r in new if r not in manifests],
            manifests=manifests,
            old_manifests=[k for r, k in rel_old.items() if _MANIFESTS.match(r)],
            stale=[k for r, k in rel_old.items() if r not in new and not _MANIFESTS.match(r)]
            + [k for k in old_objects if k == dst],  # an object at the key itself
            markers=[k for k in old if k.endswith("/")],
            replacing=bool(old_objects))
        self._state = "moving"
        self._move_in()
        self._state = "done"
        with contextlib.suppress(Exception):
            # the output is whole: a prefix left over here is hidden and harms nothing
            self._call(self.fs.rm, src, recursive=True)

    def _move_in(self) -> None:
        """The move itself; run again by ``abort`` to finish one that was cut short, so each
        step may find its work done already."""
        m = self._move
        assert m is not None
        with _translated(self.target.url, writing=True):
            # the old manifest first: from here until the new one is in, a reader finds none,
            # never the old manifest describing new data
            self._remove(m.old_manifests)
            for rel in m.data:
                self._call(self.fs.cp_file, f"{m.src}/{rel}", f"{m.dst}/{rel}")
            self._remove(m.stale)
            # last: a manifest is only ever there with all of its data
            for rel in m.manifests:
                self._call(self.fs.cp_file, f"{m.src}/{rel}", f"{m.dst}/{rel}")
        for marker in m.markers:
            # s3fs's rm drops a folder marker's trailing slash (so misses it); rm_file takes
            # the key as it is. A marker is empty: one a provider keeps does no harm.
            with contextlib.suppress(Exception):
                self._call(self.fs.rm_file, marker)

    def _remove(self, keys: list[str]) -> None:
        if keys:
            with contextlib.suppress(FileNotFoundError):  # gone already
                self._call(self.fs.rm, keys)

    # -- abort -----------------------------------------------------------------------
    def abort(self) -> None:
        """Undo what the run wrote (see the class docstring); idempotent, and a second call
        (after an interrupt of the first) does nothing more."""
        if self._state == "aborted":
            return
        state, self._state = self._state, "aborted"
        self._settle()
        for up in self._uploads:
            up.discard()
        if self._local is not None:
            self._local.remove()
            self._local = None
        if self.directory:
            if state == "moving":
                self._finish_or_undo_move()
            if self._prefix is not None:
                with contextlib.suppress(Exception):
                    self._call(self.fs.rm, self._prefix.path, recursive=True)
        elif any(up.completed for up in self._uploads):
            # the object is complete but the run is not (its sidecar is missing): remove it
            with contextlib.suppress(Exception):
                self._call(self.fs.rm_file, self.target.path)
        with contextlib.suppress(Exception):
            self.fs.invalidate_cache()

    def _finish_or_undo_move(self) -> None:
        m = self._move
        assert m is not None
        where = redact(self.target.url)
        if not m.replacing:
            # nothing was there: take back what was copied in, and the run leaves nothing
            try:
                self._remove([f"{m.dst}/{rel}" for rel in m.new])
            except Exception as exc:
                self.abort_notice = (f"{where} holds part of this run's output, without its "
                                     f"manifest ({scrub(str(exc))[:200]}); remove it, or run "
                                     "again with --overwrite")
            return
        try:
            # the old output lost its manifest first: the whole one left is the new one
            self._move_in()
            self.abort_notice = (f"{where} holds this run's whole output: the run was stopped "
                                 f"while its output replaced the earlier one, and {MOVE_FINISHED}")
        except Exception as exc:
            self.abort_notice = (f"{where} was being replaced and is left without a manifest "
                                 f"({scrub(str(exc))[:200]}); run again with --overwrite")
