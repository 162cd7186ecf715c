"""The docstore LangChain's FAISS vector store saves beside its index, read without LangChain.

``FAISS.save_local(folder, index_name="index")`` (``langchain_community.vectorstores``, and
``langchain.vectorstores`` before it) writes two files: ``index.faiss``, a plain FAISS index,
and ``index.pkl``, a pickle of the tuple ``(docstore, index_to_docstore_id)``. The docstore is an
``InMemoryDocstore`` whose ``_dict`` maps docstore ids to ``Document`` objects (``page_content``,
``metadata``); ``index_to_docstore_id`` maps each FAISS id (a position, for LangChain's flat
indexes) to a docstore id. Without that file an export holds vectors and nothing else.

A pickle can name any callable to run while it loads, which is why LangChain asks for
``allow_dangerous_deserialization=True``. ``load`` never runs what a pickle names: its unpickler
resolves LangChain's docstore and document classes (under any ``langchain*`` module, pydantic
1 and 2 alike) to inert stand-ins; value types to themselves (``datetime``, ``Decimal``,
``UUID``, sets, ``OrderedDict``, numpy scalars and arrays); time zones (``zoneinfo``, ``pytz``)
and pandas timestamps to what they stand for, through small functions of its own; and any
other class or function to an inert ``_Foreign`` that keeps nothing. A document holding one is a
bad record naming the class and where it sits, so one odd value costs its document, not the
store. LangChain itself need not be installed.

Stream mapping (the shape ``langchain_qdrant.QdrantVectorStore`` reads by default, so a
collection loaded from it is ready for LangChain):

* id: the docstore id; id kind ``uuid`` when every id is a UUID string (LangChain's own ids are
  ``uuid4``), else ``string`` (``mixed`` with integers);
* payload: ``{"page_content": text, "metadata": {...}}``; metadata values as JSON holds them
  (datetimes as ISO 8601 text, numpy's to the nanosecond; timedeltas as seconds; decimals as
  their digits; bytes as base64; sets (in a fixed order), tuples and numpy arrays as lists; a
  Document inside metadata as its own payload shape).

Bad records (``why``): a FAISS id with no entry in ``index_to_docstore_id``, a docstore id
that cannot be a point id or has no document, a document holding a class vecferry does not
load, NaN or infinity (JSON cannot), or text with a lone surrogate (UTF-8 cannot). So is a
document whose payload cannot be written at all (``_unwritable``; the bad record has no
payload): one that would take more than ``MAX_PAYLOAD_BYTES`` as JSON (a pickle refers to a
value it already holds in a few bytes, so a small file can stand for a payload of any size,
which writing it would build whole), nests deeper than ``MAX_DEPTH``, contains itself, or holds
an integer too long for Python to write as text. Documents no FAISS id reaches come out of
``unused`` once the whole index was read.

The pickle is read whole, as LangChain reads it, then kept as Arrow arrays (about the size of
the texts). The FAISS reader reads a store in one process (it offers no partitions): each
process would load all of it.
"""

from __future__ import annotations

import collections
import datetime as dt
import decimal
import importlib
import pickle
import sys
import uuid
from collections.abc import Iterator
from typing import IO, Any

import numpy as np
import orjson
import pyarrow as pa

from vecferry.errors import InputError, Location
from vecferry.fileio import gc_paused, loads_exact
from vecferry.mapping import has_surrogate, jsonable, non_finite, surrogate_at
from vecferry.points import dumps_payload
from vecferry.stream import decode_ids, encode_id, id_arrow_type, kind_of_id, merge_id_kinds

#: the payload keys ``langchain_qdrant`` reads by default (content_payload_key,
#: metadata_payload_key)
CONTENT_KEY = "page_content"
METADATA_KEY = "metadata"

_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("datetime", "datetime"): dt.datetime,
    ("datetime", "date"): dt.date,
    ("datetime", "time"): dt.time,
    ("datetime", "timedelta"): dt.timedelta,
    ("datetime", "timezone"): dt.timezone,
    ("decimal", "Decimal"): decimal.Decimal,
    ("uuid", "UUID"): uuid.UUID,
    ("uuid", "SafeUUID"): uuid.SafeUUID,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex,
}
#: documents turned into Arrow text at a time
_CHUNK = 65536
#: the most JSON text a document's payload may take, in bytes; ``_unwritable`` counts from
#: below (each value at its shortest), so only a payload surely bigger is refused. Qdrant takes
#: requests of up to 32 MB by default: no real document comes near it.
MAX_PAYLOAD_BYTES = 64 << 20
#: the most levels of lists and dicts a payload may nest: orjson's limit, which every payload
#: of the run is written with
MAX_DEPTH = 254
#: segments of a path a message shows (a payload nested hundreds deep has as many)
_PATH_SEGMENTS = 12
_PLAIN_VALUES = ("str, numbers, lists, dicts, datetime (with zoneinfo or pytz zones), Decimal, "
                 "UUID, sets, numpy and pandas values")


class _Document:
    """Stands in for ``langchain_core.documents.Document`` (pydantic 2: ``__dict__`` plus
    ``__pydantic_*`` keys in the state; pydantic 1: ``__dict__`` and ``__fields_set__``)."""

    page_content: Any = None
    metadata: Any = None

    def __setstate__(self, state: Any) -> None:
        fields = state.get("__dict__", state) if isinstance(state, dict) else {}
        if isinstance(fields, dict):
            self.page_content = fields.get("page_content")
            self.metadata = fields.get("metadata")


class _Docstore:
    """Stands in for ``InMemoryDocstore``: its pickled state is ``{"_dict": {id: Document}}``."""

    _dict: Any = None


class _Foreign:
    """Stands in for any other class or function a pickle names. It takes whatever the pickle
    hands it (arguments, state, items) and keeps none of it, so nothing of the named code runs;
    a document holding one is a bad record naming it (``_plain``)."""

    qualname = "?"

    def __init__(self, *args: Any, **kwargs: Any):
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> _Foreign:
        return self  # a function the pickle reached through another (getattr(cls, name))

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, value: Any) -> None:
        pass

    def extend(self, values: Any) -> None:
        pass


_FOREIGN: dict[str, type[_Foreign]] = {}


def _foreign(qualname: str) -> type[_Foreign]:
    if qualname not in _FOREIGN:
        _FOREIGN[qualname] = type("_Foreign", (_Foreign,), {"qualname": qualname})
    return _FOREIGN[qualname]


class _ZoneInfo:
    """Marks ``zoneinfo.ZoneInfo``, which pickles as ``getattr(ZoneInfo, "_unpickle")(key,
    flag)``: ``_getattr`` answers that one lookup and nothing else."""


def _bytearray(source: Any = b"", *args: Any) -> bytearray:
    """``bytearray`` for a pickle, which builds one from the bytes (or text and encoding) it
    holds; never from a size, which would fill that much memory with zeros from a few bytes of
    file. Raises ``_Refused`` for one."""
    if isinstance(source, int):
        raise _Refused(f"it asks for a bytearray of {source} zero bytes, which no pickled "
                       "bytearray does (a pickle holds the bytes themselves)")
    return bytearray(source, *args)


class _Refused(pickle.UnpicklingError):
    """A pickle asking for what no pickled value needs (``load`` names the file)."""


def _getattr(obj: Any, name: str) -> Any:
    """``builtins.getattr`` for a pickle: only ``ZoneInfo._unpickle`` (a zone built from the
    system's time zone data by its key). Any other lookup would reach past the allowed
    classes, so it gives an inert stand-in."""
    if obj is _ZoneInfo and name == "_unpickle":
        return _zone
    return _foreign(f"getattr({getattr(obj, 'qualname', type(obj).__name__)}, {name!r})")()


def _zone(key: Any, *flags: Any) -> Any:
    import zoneinfo

    try:
        return zoneinfo.ZoneInfo(str(key))
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return _foreign(f"zoneinfo.ZoneInfo({key!r}), unknown here")()


def _pytz_zone(zone: Any, utcoffset: Any = None, dst: Any = None, tzname: Any = None) -> Any:
    """``pytz._p``: a pytz zone, as the fixed offset it had (what ``isoformat`` writes)."""
    if utcoffset is None:
        return dt.timezone.utc if zone == "UTC" else _zone(zone)
    return dt.timezone(dt.timedelta(seconds=int(utcoffset)), str(tzname) if tzname else None)


def _pandas_timestamp(value: Any, freq: Any = None, tz: Any = None, reso: Any = 10) -> Any:
    """``pandas.Timestamp`` (``_unpickle_timestamp``): its ISO 8601 text (the nanoseconds too),
    which is what a datetime in the payload becomes."""
    unit = {7: "s", 8: "ms", 9: "us", 10: "ns"}.get(int(reso) if isinstance(reso, int) else 10,
                                                     "ns")
    stamp = np.datetime64(int(value), unit)
    if not isinstance(tz, dt.tzinfo):
        return str(np.datetime_as_string(stamp, unit="auto"))
    # the instant is stored in UTC: shown in its zone, to the microsecond datetime holds
    utc = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(
        microseconds=int(stamp.astype("datetime64[us]").astype(np.int64)))
    return utc.astimezone(tz).isoformat()


_CALLABLES: dict[tuple[str, str], Any] = {
    ("builtins", "getattr"): _getattr,
    ("builtins", "bytearray"): _bytearray,
    ("zoneinfo", "ZoneInfo"): _ZoneInfo,
    ("pytz", "_p"): _pytz_zone,
    ("pytz", "_UTC"): lambda: dt.timezone.utc,
    ("pandas._libs.tslibs.timestamps", "_unpickle_timestamp"): _pandas_timestamp,
}


class _Unpickler(pickle.Unpickler):
    """Resolves LangChain's docstore and document classes to stand-ins, value types to
    themselves, and anything else to an inert ``_Foreign``; ``langchain`` tells whether a
    LangChain class came up (a docstore, not some other pickle)."""

    def __init__(self, fh: IO[bytes]):
        super().__init__(fh)
        self.langchain = False

    def find_class(self, module: str, name: str) -> Any:
        if module.split(".")[0].startswith("langchain"):
            if name == "InMemoryDocstore":
                self.langchain = True
                return _Docstore
            if name == "Document":
                self.langchain = True
                return _Document
        if module == "__builtin__":  # Python 2's name, in protocol 0-2 pickles
            module = "builtins"
        found = _SAFE_GLOBALS.get((module, name)) or _CALLABLES.get((module, name))
        if found is not None:
            return found
        if module == "numpy" and name in ("dtype", "ndarray"):
            return getattr(np, name)
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name in (
                "scalar", "_reconstruct"):
            return getattr(_multiarray(), name)
        return _foreign(f"{module}.{name}")


def _multiarray() -> Any:
    """numpy's pickle entry points for scalars and arrays (they build values from bytes and run
    nothing else): ``numpy._core`` in numpy 2, ``numpy.core`` before; a pickle may name either."""
    try:
        return importlib.import_module("numpy._core.multiarray")
    except ImportError:
        return importlib.import_module("numpy.core.multiarray")


class _ForeignValue(Exception):
    def __init__(self, qualname: str, path: str):
        super().__init__(qualname)
        self.qualname, self.path = qualname, path


def _key(k: Any) -> str:
    """A dict key as JSON writes it (``json.dumps``: None -> "null", True -> "true")."""
    if isinstance(k, str):
        return k
    return "null" if k is None else "true" if k is True else "false" if k is False else str(k)


def _order(value: Any) -> tuple[str, str]:
    return type(value).__name__, repr(value)


def _plain(value: Any, path: str = "", strict: bool = True) -> Any:
    """Metadata as JSON holds it (``mapping.jsonable`` after the types only a pickle has).

    A ``_Foreign`` raises ``_ForeignValue`` naming it and where it is; unless not ``strict``
    (a rejects-file line), which shows it as ``"<name object>"`` text.
    """
    if isinstance(value, dict):
        return {_key(k): _plain(v, f"{path}.{_key(k)}" if path else _key(k), strict)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{path}[{j}]", strict) for j, v in enumerate(value)]
    if isinstance(value, (set, frozenset)):
        items = [_plain(v, f"{path}[]", strict) for v in value]
        try:
            return sorted(items)
        except TypeError:  # mixed kinds (None among strings): an order that does not vary
            return sorted(items, key=_order)
    if isinstance(value, _Document):
        return {CONTENT_KEY: _plain(value.page_content, f"{path}.{CONTENT_KEY}", strict),
                METADATA_KEY: _plain(value.metadata, f"{path}.{METADATA_KEY}", strict)}
    if isinstance(value, _Foreign) or (isinstance(value, type) and issubclass(value, _Foreign)):
        if strict:
            raise _ForeignValue(value.qualname, path)
        return f"<{value.qualname} object>"
    if isinstance(value, np.ndarray):
        return _plain(value.tolist(), path, strict)
    if isinstance(value, np.datetime64):
        return None if np.isnat(value) else str(np.datetime_as_string(value, unit="auto"))
    if isinstance(value, np.timedelta64):
        return None if np.isnat(value) else float(value / np.timedelta64(1, "s"))
    if isinstance(value, np.generic):
        item = value.item()
        if isinstance(item, np.generic):  # long double: no Python type holds it exactly
            item = complex(item) if np.iscomplexobj(item) else float(item)
        return _plain(item, path, strict)
    if isinstance(value, complex):
        return [value.real, value.imag]
    if isinstance(value, str) and not strict and has_surrogate(value):
        return value.encode("utf-8", "backslashreplace").decode()
    return jsonable(value, keep_non_finite=True)  # datetimes, Decimal, bytes, UUID


class _Unwritable(Exception):
    """Why a payload cannot be written (``why`` goes before the path in the message, ``note``
    after it), and where: ``segments`` is the path below the root value, which ``_measure``
    fills in (innermost first) as it unwinds; ``ancestor`` is the depth of the value that a
    value containing itself refers back to."""

    def __init__(self, why: str, note: str = "", ancestor: int = 0):
        super().__init__(why)
        self.why, self.note, self.ancestor = why, note, ancestor
        self.segments: list[str] = []

    def where(self, root: str, depth: int | None = None) -> str:
        """The path to the value (to its enclosing value at ``depth``, the root being at 1),
        shortened past ``_PATH_SEGMENTS`` segments."""
        segments = self.segments[::-1]
        if depth is not None:
            segments = segments[:depth - 1]
        more = "..." if len(segments) > _PATH_SEGMENTS else ""
        return root + "".join(segments[:_PATH_SEGMENTS]) + more


#: the text Python writes an integer as is refused past this many digits (0: no limit)
_INT_DIGITS = getattr(sys, "get_int_max_str_digits", lambda: 0)()


def _too_big() -> _Unwritable:
    return _Unwritable(f"holds more than {MAX_PAYLOAD_BYTES >> 20} MB of JSON",
                       " (counting a value once for each reference to it in the pickle; a "
                       f"payload may take up to {MAX_PAYLOAD_BYTES >> 20} MB)")


#: the size ``_measure`` gives the leaves of a type whose value does not change it much
_FLAT: dict[type, int] = {float: 5, bool: 5, type(None): 5, dt.datetime: 8, dt.date: 8,
                          dt.time: 8, dt.timedelta: 8, uuid.UUID: 8}


def _measure(value: Any, depth: int, sizes: dict[int, int]) -> int:
    """The bytes ``value``'s JSON text takes at least, at ``depth`` (the lists and dicts
    around it, the payload's own dict included); raises ``_Unwritable`` as soon as it passes
    ``MAX_PAYLOAD_BYTES`` or ``MAX_DEPTH``, or meets a value that contains itself.

    A value reached again counts again, as it will be written again, but is walked once:
    ``sizes`` keeps each container's size by ``id`` (negative, its depth, while it is walked:
    met then, it contains itself). So a pickle doubling one list thirty times costs thirty
    steps, not 2**30. The caller keeps the values alive while ``sizes`` lives (an id is reused
    once its value is gone).
    """
    if isinstance(value, str):
        return len(value) + 3
    flat = _FLAT.get(type(value))
    if flat is not None:
        return flat
    if isinstance(value, int):
        if _INT_DIGITS and value.bit_length() > 3 * _INT_DIGITS:
            try:
                return len(str(value)) + 1
            except ValueError as exc:  # past the limit: every writer of the run would fail
                raise _Unwritable(f"holds an integer of more than {_INT_DIGITS} digits",
                                  ", more than Python writes as text") from exc
        return 2
    if not isinstance(value, (dict, list, tuple, set, frozenset, _Document, np.ndarray)):
        return _leaf_size(value, depth, sizes)
    known = sizes.get(id(value))
    if known is not None:
        if known < 0:
            raise _Unwritable("holds a value that contains itself", ", which JSON cannot "
                              "express", ancestor=-known)
        return known
    levels = value.ndim if isinstance(value, np.ndarray) else 1
    if depth + levels > MAX_DEPTH:
        raise _Unwritable(f"nests lists and dicts more than {MAX_DEPTH} levels deep",
                          ", deeper than vecferry writes JSON")
    sizes[id(value)] = -depth
    size = 2
    inner = depth + 1
    segment: Any = None  # the path segment of the item being measured
    try:
        if isinstance(value, dict):
            for segment, v in value.items():
                if type(segment) is str:
                    size += len(segment) + 3
                else:
                    # written as its text (``_key``), which its own size bounds: a tuple key
                    # can refer to values again too
                    key, segment = segment, _KeyOf(segment)
                    size += _measure(key, inner, sizes) + 3
                    segment = segment.key
                # the common leaves here, not through a call: the walk is per node
                t = type(v)
                item = (len(v) + 3 if t is str else 2 if t is int and v.bit_length() < 64
                        else _FLAT.get(t) or _measure(v, inner, sizes))
                size += item
                if size > MAX_PAYLOAD_BYTES:
                    if item <= MAX_PAYLOAD_BYTES:
                        segment = None  # this dict is the one, not the item that tipped it
                    raise _too_big()
        elif isinstance(value, _Document):
            for segment, v in ((CONTENT_KEY, value.page_content),
                               (METADATA_KEY, value.metadata)):
                size += len(segment) + 3 + _measure(v, inner, sizes)
            if size > MAX_PAYLOAD_BYTES:
                raise _too_big()
        elif isinstance(value, np.ndarray) and value.dtype != object:
            # two bytes an item at least ("0,"); the items are not looked at: an array a
            # pickle only shaped is not even in memory
            size += 2 * value.size
            if size > MAX_PAYLOAD_BYTES:
                raise _too_big()
        else:
            if isinstance(value, np.ndarray):  # of objects: the items, as a flat list
                if 2 * value.size > MAX_PAYLOAD_BYTES:
                    raise _too_big()
                items: Any = value.ravel()
                inner += levels - 1
            else:
                items = value
            for segment, v in enumerate(items):
                t = type(v)
                item = (len(v) + 3 if t is str else 2 if t is int and v.bit_length() < 64
                        else _FLAT.get(t) or _measure(v, inner, sizes))
                size += item + 1
                if size > MAX_PAYLOAD_BYTES:
                    if item <= MAX_PAYLOAD_BYTES:
                        segment = None
                    raise _too_big()
    except _Unwritable as exc:
        if isinstance(segment, _KeyOf):
            exc.segments.append("{a key}")  # the key itself: its text is what cannot be made
        elif isinstance(segment, int) and not isinstance(value, dict):
            exc.segments.append("[]" if isinstance(value, (set, frozenset)) else f"[{segment}]")
        elif segment is not None:
            exc.segments.append(f".{_key(segment)}")
        raise
    sizes[id(value)] = size
    return size


class _KeyOf:
    """A dict key that is not text, while ``_measure`` measures it."""

    def __init__(self, key: Any):
        self.key = key


def _leaf_size(value: Any, depth: int, sizes: dict[int, int]) -> int:
    """``_measure`` of a value that holds no others (numpy scalars aside)."""
    if isinstance(value, (bytes, bytearray)):
        return len(value) * 4 // 3 + 4  # base64
    if isinstance(value, decimal.Decimal):
        _, digits, exponent = value.as_tuple()
        # written with all its digits: 1E+9 as a one and nine zeros
        return len(digits) + (abs(exponent) if isinstance(exponent, int) else 0) + 3
    if isinstance(value, complex):  # written as a list of two numbers: one level more
        if depth >= MAX_DEPTH:
            raise _Unwritable(f"nests lists and dicts more than {MAX_DEPTH} levels deep",
                              ", deeper than vecferry writes JSON")
        return 12
    if isinstance(value, np.generic):
        item = value.item()
        return 40 if isinstance(item, np.generic) else _measure(item, depth, sizes)
    return 8


def _unwritable(doc: Any) -> str | None:
    """Why a document's payload cannot be written (see ``_measure``), or None. Checked before
    anything writes it: orjson and ``_plain`` would build a payload bigger than memory, or
    recurse without end."""
    sizes: dict[int, int] = {}
    if isinstance(doc, _Document):
        roots: tuple[tuple[str, Any], ...] = ((CONTENT_KEY, doc.page_content),
                                              (METADATA_KEY, doc.metadata))
    else:
        roots = ((CONTENT_KEY, doc),)
    total = 0
    for root, value in roots:
        try:
            total += len(value) + 3 if type(value) is str else _measure(value, 1, sizes)
            if total > MAX_PAYLOAD_BYTES:
                raise _too_big()
        except _Unwritable as exc:
            if exc.ancestor:
                return (f"{exc.why} at {exc.where(root)} (it refers back to "
                        f"{exc.where(root, exc.ancestor)}){exc.note}")
            return f"{exc.why} at {exc.where(root)}{exc.note}"
    return None


def _payload_or_none(doc: Any) -> dict[str, Any] | None:
    """The payload of a bad record (``_payload``, not ``strict``), or None where it cannot be
    written (``_unwritable``)."""
    return None if _unwritable(doc) is not None else _payload(doc, strict=False)


_REBUILD = ("save the store again with FAISS.save_local, or move the file away to read the "
            "index without texts and metadata")


class LangchainDocstore:
    """The documents of ``index.pkl``, looked up by FAISS id a batch at a time.

    ``load`` raises ``InputError`` (naming the file) for a pickle that cannot be read, is not a
    LangChain docstore, or holds a class other than LangChain's and plain values, or asks for
    more memory than there is (or for a bytearray by its size, which no pickle does).
    """

    #: what the store holds, in messages
    entry = "document"
    #: what to do about a bad record
    hint = ("fix the store in LangChain and save it again, or use --on-error skip to write "
            "such points (with their vectors) to the rejects file and carry on")

    def __init__(self, location: str, docs: dict[Any, Any], index_to_docstore_id: dict[Any, Any]):
        self.location = location
        self.documents = len(docs)
        # FAISS id -> (reason, docstore id or None, payload or None) of each bad record
        self._problems: dict[int, tuple[str, Any, Any]] = {}
        good: list[tuple[int, Any]] = []
        kinds: set[str] = set()
        reached: set[Any] = set()  # documents some entry names
        for fid, doc_id in index_to_docstore_id.items():
            if not isinstance(fid, (int, np.integer)) or isinstance(fid, bool):
                raise InputError(
                    f"index_to_docstore_id has the key {fid!r}, not a FAISS id",
                    location=Location(source=location),
                    hint="the file is not a LangChain FAISS docstore, or was changed by hand")
            fid = int(fid)
            try:
                kinds.add(kind_of_id(doc_id))
            except ValueError as exc:
                try:
                    doc = docs.get(doc_id)
                except TypeError:  # unhashable: no document can have it
                    doc = None
                if doc is not None:
                    reached.add(doc_id)
                self._problems[fid] = (f"docstore id {doc_id!r} of FAISS id {fid} cannot be a "
                                       f"point id: {exc}", None,
                                       None if doc is None else _payload_or_none(doc))
                continue
            if doc_id not in docs:
                self._problems[fid] = (f"the docstore has no document {doc_id!r} "
                                       f"(index_to_docstore_id names it for FAISS id {fid})",
                                       doc_id, None)
                continue
            good.append((fid, doc_id))
        self.id_kind = merge_id_kinds(kinds)
        reached.update(doc_id for _, doc_id in good)
        # documents no entry of index_to_docstore_id names, kept for the rejects file (with
        # why a payload is left out)
        self._orphans: list[tuple[Any, Any, str | None]] = []
        for k, d in docs.items():
            if k not in reached:
                why = _unwritable(d)
                self._orphans.append((k, None if why else _payload(d, strict=False), why))
        good.sort(key=lambda p: p[0])
        # Each document is dropped once its last FAISS id has its text, and the texts go to
        # Arrow a chunk at a time: the peak stays near the unpickled objects alone.
        refs = collections.Counter(doc_id for _, doc_id in good)
        fids: list[int] = []
        id_chunks: list[pa.Array] = []
        text_chunks: list[pa.Array] = []
        ids: list[Any] = []
        texts: list[str] = []
        mixed = self.id_kind == "mixed"
        for fid, doc_id in good:
            doc = docs[doc_id]
            refs[doc_id] -= 1
            if not refs[doc_id]:
                del docs[doc_id]
            why = _unwritable(doc)
            if why is not None:
                self._problems[fid] = (f"document {doc_id!r} {why}", doc_id, None)
                continue
            text = _dumps(doc)
            if text is None:
                text, reason = _careful_text(doc)
                if reason is not None:
                    self._problems[fid] = (f"document {doc_id!r} {reason}", doc_id,
                                           _payload(doc, strict=False))
                    continue
            if mixed:
                try:
                    doc_id = encode_id(doc_id, "mixed")
                except ValueError as exc:  # "12" among integer ids: cannot be told apart
                    self._problems[fid] = (f"docstore id {doc_id!r} of FAISS id {fid} cannot be "
                                           f"a point id: {exc}", None, _payload_or_none(doc))
                    continue
            ids.append(doc_id)  # the kinds were checked above: only "mixed" ids change
            fids.append(fid)
            texts.append(text)
            if len(texts) == _CHUNK:
                id_chunks.append(pa.array(ids, type=id_arrow_type(self.id_kind)))
                text_chunks.append(pa.array(texts, type=pa.string()))
                ids, texts = [], []
        id_chunks.append(pa.array(ids, type=id_arrow_type(self.id_kind)))
        text_chunks.append(pa.array(texts, type=pa.string()))
        self.rows = len(fids)
        self._fid = np.array(fids, dtype=np.int64)
        self._ids = pa.concat_arrays(id_chunks)
        self._payloads = pa.concat_arrays(text_chunks)
        self._used = np.zeros(self.rows, dtype=bool)

    @classmethod
    def load(cls, fh: IO[bytes], location: str) -> LangchainDocstore | None:
        """Read the pickle in ``fh``; None when it is a pickle but not LangChain's docstore (an
        unrelated file that happens to sit beside the index)."""
        unpickler = _Unpickler(fh)
        try:
            with gc_paused():  # millions of objects that stay alive: nothing for it to find
                data = unpickler.load()
        except _Refused as exc:
            raise InputError(f"cannot read the LangChain docstore: {exc}",
                             location=Location(source=location), hint=_REBUILD) from exc
        except MemoryError as exc:
            # a value of a size the pickle names (numpy's arrays are made before their bytes
            # are read): a damaged or hostile file asks for more than there is
            raise InputError(
                f"cannot read the LangChain docstore: it asks for more memory than there is "
                f"({type(exc).__name__}: {exc})", location=Location(source=location),
                hint=_REBUILD) from exc
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
                IndexError, KeyError, ArithmeticError, RecursionError) as exc:
            # damaged bytes can reach any value's constructor: a Decimal's digits, a date's
            # fields, nesting without end
            raise InputError(
                f"cannot read the LangChain docstore, the file is truncated or corrupt: "
                f"{type(exc).__name__}: {exc}", location=Location(source=location),
                hint=_REBUILD) from exc
        if not (isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], _Docstore)
                and isinstance(data[0]._dict, dict) and isinstance(data[1], dict)):
            if not unpickler.langchain:
                return None
            raise InputError(
                "not a LangChain FAISS docstore: FAISS.save_local writes the pair "
                "(InMemoryDocstore, index_to_docstore_id)", location=Location(source=location),
                hint="move the file away to read the index without texts and metadata")
        # the memo holds every object the pickle built (the documents' whole states among
        # them) for as long as the unpickler lives
        unpickler.memo.clear()
        del unpickler
        with gc_paused():
            return cls(location, data[0]._dict, data[1])

    def why(self, fid: int) -> tuple[str, Any, Any]:
        """(reason, the point's id for the rejects file, its payload or None) of a bad FAISS
        id; a FAISS id with no entry at all says so."""
        if fid in self._problems:
            reason, doc_id, payload = self._problems[fid]
            return reason, fid if doc_id is None else doc_id, payload
        return (f"FAISS id {fid} has no entry in index_to_docstore_id, so it has no docstore "
                "id or document", fid, None)

    def known(self, faiss_ids: np.ndarray) -> np.ndarray:
        """Whether each FAISS id has a good document."""
        pos = np.minimum(np.searchsorted(self._fid, faiss_ids), max(self.rows - 1, 0))
        return (self._fid[pos] == faiss_ids) if self.rows else np.zeros(len(faiss_ids), bool)

    def lookup(self, faiss_ids: np.ndarray) -> tuple[dict[str, pa.Array], np.ndarray]:
        """``id`` and ``payload`` columns for FAISS ids (null where ``known`` is False), and
        ``known``; the documents found count as used."""
        found = self.known(faiss_ids)
        pos = np.minimum(np.searchsorted(self._fid, faiss_ids), max(self.rows - 1, 0))
        self._used[pos[found]] = True
        take = pa.array(pos, mask=~found)
        return {"id": self._ids.take(take), "payload": self._payloads.take(take)}, found

    def mark(self, faiss_ids: np.ndarray) -> None:
        """Count the documents of ``faiss_ids`` as used (rows an earlier run read)."""
        found = self.known(faiss_ids)
        pos = np.searchsorted(self._fid, faiss_ids[found])
        self._used[pos] = True

    def unused(self) -> Iterator[tuple[Any, dict[str, Any], str]]:
        """(docstore id, payload, why) of each document no FAISS id read reached."""
        for k, payload, why in self._orphans:
            yield k, payload, "no entry of index_to_docstore_id names it" + (
                f" (its payload is left out: it {why})" if why else "")
        for row in np.flatnonzero(~self._used):
            fid = int(self._fid[row])
            yield (decode_ids(self._ids.slice(row, 1), self.id_kind)[0],
                   loads_exact(self._payloads[row].as_py().encode()),
                   f"index_to_docstore_id names it for FAISS id {fid}, which the index does "
                   "not hold")

    def facts(self) -> dict[str, Any]:
        return {"format": "langchain", "ids": "LangChain docstore ids (index_to_docstore_id)",
                "location": self.location, "unit": "documents", "documents": self.documents,
                "payload_keys": [CONTENT_KEY, METADATA_KEY]}

    def close(self) -> None:
        self._ids = self._payloads = pa.array([], pa.string())
        self._orphans = []


def _fallback(value: Any) -> Any:
    """What orjson meets and cannot write itself: done as ``_plain`` does it."""
    if isinstance(value, (set, frozenset, np.ndarray, np.generic, complex, decimal.Decimal,
                          bytes, bytearray, dt.datetime, dt.date, dt.time, dt.timedelta,
                          _Document)):
        return _plain(value)
    raise TypeError(type(value).__name__)  # a stand-in: the careful path names it


def _dumps(doc: Any) -> str | None:
    """A document's payload as JSON text on orjson's fast path, or None where ``_payload``
    must do it: a non-string key, an integer past 64 bits, and any null (orjson writes NaN
    and infinity as null; the slow path tells them apart). Datetimes go through ``_plain``
    too (``isoformat``, which orjson's own writing differs from)."""
    if not isinstance(doc, _Document):
        return None
    try:
        data = orjson.dumps({CONTENT_KEY: doc.page_content, METADATA_KEY: doc.metadata},
                            default=_fallback, option=orjson.OPT_PASSTHROUGH_DATETIME)
    except (TypeError, orjson.JSONEncodeError, _ForeignValue):
        return None
    if b"null" in data or b"NaN" in data or b"Infinity" in data:
        return None
    return data.decode()


def _careful_text(doc: Any) -> tuple[str, str | None]:
    """(payload text, None), or ("", why the document is a bad record): it holds a class
    vecferry does not load, NaN or infinity, or text UTF-8 cannot encode."""
    try:
        payload = _payload(doc)
    except _ForeignValue as exc:
        return "", (f"holds a {exc.qualname} object at {exc.path}, which vecferry does not "
                    f"load from a pickle (loading a class runs its code); it loads "
                    f"{_PLAIN_VALUES}")
    bad = non_finite(payload)
    if bad is not None:
        return "", f"holds {bad[0]} at {bad[1]}, which JSON cannot express"
    text = dumps_payload(payload)
    if has_surrogate(text):
        return "", (f"holds text that is not valid Unicode at {surrogate_at(payload)} (a lone "
                    "surrogate, which UTF-8 cannot encode)")
    return text, None


def _payload(doc: Any, strict: bool = True) -> dict[str, Any]:
    """The payload of a document; see ``_plain`` for ``strict``."""
    if not isinstance(doc, _Document):
        return {CONTENT_KEY: _plain(doc, CONTENT_KEY, strict), METADATA_KEY: None}
    return {CONTENT_KEY: _plain(doc.page_content, CONTENT_KEY, strict),
            METADATA_KEY: _plain(doc.metadata, METADATA_KEY, strict)}
