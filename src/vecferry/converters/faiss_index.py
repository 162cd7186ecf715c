"""FAISS index files (``.faiss``, ``.index``) as point streams.

Format: the binary serialization of ``faiss.write_index`` / ``faiss.write_index_binary``
(https://github.com/facebookresearch/faiss/wiki/Index-IO,-cloning-and-hyper-parameter-tuning).
An index stores vectors (or codes for them) and int64 ids; it has no payloads, so payloads travel
in a sidecar.

Reading (``FaissReader``) never calls ``reconstruct`` per id. Each supported index type is read on
its own fast path, in stream order:

* ``IndexFlat`` (any metric) and ``IndexBinaryFlat``: the codes buffer, sliced per batch;
* ``IndexIDMap`` / ``IndexIDMap2`` (and the binary ones) around any supported index: ids from
  ``id_map``;
* ``IndexHNSWFlat`` / ``IndexBinaryHNSW``: the flat ``storage``; ``IndexRefineFlat``: its flat
  refinement index;
* ``IndexIVFFlat`` / ``IndexBinaryIVF``: each inverted list walked once (codes and ids together),
  a long list cut into batches;
* lossy encodings, only with ``allow_lossy=True`` (a warning, and ``lossy`` in the manifest):
  ``IndexPQ``, ``IndexScalarQuantizer``, ``IndexResidualQuantizer``, ``IndexIVFPQ``,
  ``IndexIVFScalarQuantizer``, ``IndexHNSWSQ`` / ``IndexHNSWPQ`` and ``IndexPreTransform`` (PCA,
  OPQ, ...) around any supported index. Codes are decoded per batch with ``sa_decode`` (IVF codes
  get their list number prepended, the standalone code layout) and the transforms reversed.

Files are memory-mapped, read-only: flat codes with ``IO_FLAG_MMAP_IFC`` (zero-copy views),
inverted lists with ``IO_FLAG_MMAP`` (which also checks every list lies inside the file). Inverted
lists already on disk (``OnDiskInvertedLists``: faiss's ``merge_ondisk`` and its ``.ivfdata``
file, at the path the index records, a relative one opened from the working directory) are
mapped by faiss as it reads the index, and checked here to lie inside that file; one that cannot
be found or is too short is an ``InputError``. Only one batch is ever copied out at a time.

An ``IDMap`` / ``IDMap2`` around an IVF index whose lists hold a position past its id map, or one
position twice (faiss's ``remove_ids`` there leaves the index so), is an ``InputError`` when read.

Stream mapping:

* ids: the id map (or the ids stored in the inverted lists); positions 0..n-1 otherwise. Id kind
  ``int``. A negative id is a bad record (``context.reject``).
* one unnamed dense vector, ``float32[d]``. Binary indexes: ``uint8[d/8]``, the packed bits exactly
  as FAISS stores them (bit ``j`` of a vector is bit ``j % 8`` of byte ``j // 8``), marked by
  ``Manifest.extra["faiss"]["binary_bits"] = d``; the writer rebuilds a binary index from that.
* distance: L2 -> Euclid, L1 -> Manhattan, inner product -> Cosine when every vector of a sample
  has unit length (|norm - 1| <= 1e-4), Dot otherwise; ``extra["faiss"]["distance_decided_by"]``
  says how. An index of another metric (Linf, Lp, Canberra, ...) is an ``UnsupportedError`` at
  open: no Qdrant distance ranks as it does.
* payloads: ``payloads=FILE`` joined by id (see ``load_payloads``; a ``UsageError`` beside a
  sidecar below that holds payloads, which it would replace), or the sidecar below, or
  LangChain's docstore (``<name>.pkl`` beside ``<name>.faiss``, see
  ``vecferry.langchain_docstore``) or LlamaIndex's stores (``docstore.json`` and
  ``index_store.json`` beside ``default__vector_store.json``, see
  ``vecferry.llamaindex_store``), which give the ids too. A folder is read as its
  ``index.faiss`` (LangChain's default name), its only ``*.faiss``, or LlamaIndex's
  ``default__vector_store.json``.

Writing (``FaissWriter``) builds ``index_factory`` (default ``IDMap2,Flat``; an index that cannot
take ids is wrapped in ``IDMap2``), training it on a bounded sample first when it needs training.
The metric follows the stream's distance, or ``distance=`` when the stream has none, else L2
(Euclid, with a warning); the manifest sidecar records the distance used. An index the
reader has no path for is refused before writing; one the reader reads as lossy needs
``allow_lossy=True`` (a warning, and ``lossy`` in the manifest). Sidecars next to ``<index>``:

* ``<index>.manifest.json``: the stream manifest (vector name, distance, datatype, id kind,
  source, Qdrant collection config) plus what the writer did (``extra["faiss_writer"]``);
* ``<index>.payloads.parquet``: columns ``faiss_id`` (int64), ``payload`` (JSON text) and, when
  ids were not unsigned integers below 2^63, ``id`` (the original id as text; the mapping is
  ``faiss_id`` = 0, 1, 2, ... in stream order), else ``position`` (int64: the point's place in
  the order points were added, 0, 1, 2, ...; one row per point with a payload).

Integer ids are the FAISS ids, and an id may be given to several points (duplicate ids are
data): the reader joins the sidecar on ``position`` wherever its read tells it (flat storage,
also under HNSW or Refine, holds the points in the order added; an id map's storage holds
positions into it), so each point gets its own payload. Bare inverted lists (``IVF...``, not
inside an ``IDMap``) are read list by list, where only the id tells points apart: writing one,
a later point of an id already written is a bad record (``context.reject``) when it or the
written point has a payload; points without one on either side are written. A sidecar without
``position`` (written before it was recorded) is joined by FAISS id, the first row of an id
counting, with a warning when an id has several rows; a row at a position that names another
FAISS id than the index holds there is an ``InputError``.

A manifest sidecar that describes another number of points (or dimensions) than the index holds
(the index changed after vecferry wrote it) is ignored with a warning where nothing else goes
with it; where a payload sidecar is there, or the manifest records one or mapped ids, it is an
``InputError``: read on, the points would get FAISS ids and no payloads.

The reader applies both when they are present and describe the same number of points, so
FAISS -> anything -> FAISS -> anything restores ids, payloads, distance and names, and the
float16 or uint8 datatype of exact indexes (the index stores float32: a uint8 vector that is
not whole numbers 0..255 is a bad point, and vectors normalized for Cosine stay float32). A payload
sidecar the manifest says exists but is missing, short, or without the original ids, or one
without its manifest, is an ``InputError`` at open: read on, it would give ids 0..n-1 and no
payloads.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from vecferry.converters.base import (
    AtomicPath,
    ClosingReader,
    ClosingWriter,
    Context,
    fsync_path,
    input_path,
    reject_unknown_options,
)
from vecferry.digest import StreamDigest
from vecferry.errors import (
    InputError,
    Location,
    RecordError,
    SchemaError,
    UnsupportedError,
    UsageError,
    VecferryError,
)
from vecferry.fileio import (
    NAN_HINT,
    PARQUET_NAN_HINT,
    UTF8_BOM,
    float_columns,
    has_long_number,
    iter_lines,
    loads_exact,
    loads_reject_line,
    non_finite_column,
    nonstandard_constant,
    open_read,
    without_bom,
)
from vecferry.langchain_docstore import LangchainDocstore
from vecferry.llamaindex_store import (
    INDEX_STORE_FILE,
    VECTOR_STORE_FILE,
    LlamaIndexNodes,
    is_llamaindex_index,
    vector_store_kind,
)
from vecferry.payloadjoin import PayloadTable
from vecferry.plan import pack, row_blocks
from vecferry.points import dumps_payload, non_finite_rows, point_from_row, reject_from_row
from vecferry.storage import LocalCopy, as_path, is_remote, output_path
from vecferry.stream import (
    ID_COLUMN,
    PAYLOAD_COLUMN,
    Manifest,
    VectorSpec,
    decode_ids,
    manifest_of,
    record_error,
)

#: a vector counts as unit length when its L2 norm is within this of 1
UNIT_TOLERANCE = 1e-4
#: vectors looked at to tell Cosine from Dot on an inner-product index too big to look at all
DISTANCE_SAMPLE = 1024
#: an inner-product index decoding to at most this many bytes has every vector's length
#: checked: one vector off unit length makes it Dot (Cosine would normalize it in Qdrant)
NORM_CHECK_BYTES = 8 << 30
MANIFEST_SUFFIX = ".manifest.json"
PAYLOADS_SUFFIX = ".payloads.parquet"
#: the payload sidecar's column of each point's place in the order points were added to the
#: index (0, 1, 2, ...): written for integer ids, where an id may be given to several points
POSITION_COLUMN = "position"

EXACT_TYPES = (
    "IndexFlat (L2, IP, L1)", "IndexIDMap", "IndexIDMap2", "IndexHNSWFlat", "IndexIVFFlat",
    "IndexRefineFlat", "IndexBinaryFlat", "IndexBinaryIDMap", "IndexBinaryIDMap2",
    "IndexBinaryHNSW", "IndexBinaryIVF",
)
LOSSY_TYPES = (
    "IndexPQ", "IndexScalarQuantizer", "IndexResidualQuantizer", "IndexIVFPQ",
    "IndexIVFScalarQuantizer", "IndexHNSWSQ", "IndexHNSWPQ", "IndexPreTransform",
)
_FLAT = ("IndexFlat", "IndexFlatL2", "IndexFlatIP", "IndexFlat1D")
_LOSSY_FLAT_CODES = ("IndexPQ", "IndexScalarQuantizer", "IndexResidualQuantizer")
_LOSSY_IVF = ("IndexIVFPQ", "IndexIVFScalarQuantizer")
_IDMAPS = ("IndexIDMap", "IndexIDMap2", "IndexBinaryIDMap", "IndexBinaryIDMap2")
_INVLISTS = ("ArrayInvertedLists", "OnDiskInvertedLists")
_METRICS = {
    faiss.METRIC_L2: ("L2", "Euclid"),
    faiss.METRIC_INNER_PRODUCT: ("inner_product", "Dot"),
    faiss.METRIC_L1: ("L1", "Manhattan"),
}
#: FAISS's own names of its metrics (METRIC_Linf -> "Linf"), for naming the ones refused
_METRIC_NAMES = {getattr(faiss, name): name.removeprefix("METRIC_")
                 for name in dir(faiss) if name.startswith("METRIC_")}
_MAX_INT64 = 2**63 - 1


def _supported_hint() -> str:
    return (f"supported: {', '.join(EXACT_TYPES)}; with --allow-lossy also "
            f"{', '.join(LOSSY_TYPES)}")


def _faiss_message(exc: BaseException) -> str:
    """The useful last line of a FAISS C++ exception (its first lines are a C++ signature)."""
    text = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    marker = "Error: "
    text = text.split(marker, 1)[-1] if marker in text else text.rsplit(": ", 1)[-1]
    # a failed FAISS_THROW_IF_NOT_FMT check starts with its C++ condition: "'f' failed: ..."
    return re.sub(r"^'[^']*' failed: ", "", text)


# ---------------------------------------------------------------------------------- storage


@dataclass
class _Piece:
    """Consecutive stream rows from one place: their local ids (None = positions), codes."""

    position: int           # first row's position in the storage (flat) or -1 (IVF)
    ids: np.ndarray | None  # int64 ids stored with the codes (IVF), None for positional storage
    codes: np.ndarray       # (rows, code_size) uint8 view into the index; never kept
    listno: int | None      # inverted list the rows come from (IVF), for standalone codes


class _FlatStorage:
    """A contiguous codes buffer (``IndexFlatCodes.codes`` / ``IndexBinaryFlat.xb``)."""

    def __init__(self, buffer: Any, ntotal: int, code_size: int):
        self.ntotal = ntotal
        self.code_size = code_size
        if ntotal == 0:
            self.codes = np.zeros((0, code_size), dtype=np.uint8)
        else:
            if buffer.size() < ntotal * code_size:
                raise ValueError(f"codes buffer holds {buffer.size()} bytes, "
                                 f"{ntotal * code_size} expected")
            flat = faiss.rev_swig_ptr(buffer.data(), ntotal * code_size)
            self.codes = flat.reshape(ntotal, code_size)

    def pieces(self, start: int, size: int) -> Iterator[_Piece]:
        for lo in range(start, self.ntotal, size):
            hi = min(lo + size, self.ntotal)
            yield _Piece(lo, None, self.codes[lo:hi], None)

    def sample_codes(self, k: int) -> np.ndarray:
        if self.ntotal == 0:
            return self.codes
        rows = np.unique(np.linspace(0, self.ntotal - 1, num=min(k, self.ntotal)).astype(np.int64))
        return self.codes[rows]


class _Positions:
    """Positions into an id map met so far, a bit each: an IVF index inside an IDMap holds
    each point's position in its lists, and one met twice is two vectors given one id."""

    def __init__(self, n: int):
        self.bits = np.zeros((n + 7) // 8, dtype=np.uint8)

    def add(self, positions: np.ndarray) -> int | None:
        """Mark ``positions`` (each in 0..n-1); the first met before or twice here, else None."""
        byte = positions >> 3
        bit = np.left_shift(1, positions & 7).astype(np.uint8)
        met = (self.bits[byte] & bit) != 0
        if met.any():
            return int(positions[np.argmax(met)])
        values, counts = np.unique(positions, return_counts=True)
        if (counts > 1).any():
            return int(values[np.argmax(counts > 1)])
        np.bitwise_or.at(self.bits, byte, bit)
        return None


class _IvfStorage:
    """Inverted lists, walked once in list order; list sizes give random access for ``start``.

    ``OnDiskInvertedLists`` (faiss's ``merge_ondisk``: the lists in a separate ``.ivfdata``
    file the index names) are checked when opened: mapped (not skipped, as
    ``IO_FLAG_SKIP_IVF_DATA`` leaves them), their file at least as long as the index says, and
    each list inside it; an ``InputError`` otherwise, since faiss hands out pointers past the
    mapping (or NULL) without a word, and reading one crashes the process.
    """

    def __init__(self, invlists: Any, nlist: int, code_size: int):
        self.invlists = invlists
        self.code_size = code_size
        #: the index file, for errors (set by the reader; ``_plan`` does not know it)
        self.source: str | None = None
        if type(invlists).__name__ == "OnDiskInvertedLists":
            self.sizes = self._check_on_disk(invlists, nlist, code_size)
        else:
            self.sizes = np.array([invlists.list_size(i) for i in range(nlist)], dtype=np.int64)
        self.ends = np.cumsum(self.sizes)
        self.ntotal = int(self.ends[-1]) if nlist else 0

    @staticmethod
    def _check_on_disk(invlists: Any, nlist: int, code_size: int) -> np.ndarray:
        """The list sizes of on-disk lists, after checking they can be read (see the class)."""
        lists = [invlists.lists.at(i) for i in range(nlist)]
        sizes = np.array([one.size for one in lists], dtype=np.int64)
        if not sizes.any():
            return sizes
        data = str(invlists.filename)
        if invlists.ptr is None:
            raise InputError(
                "cannot read FAISS index: its inverted lists were not opened (read with "
                "faiss.IO_FLAG_SKIP_IVF_DATA)", hint="read the index without that flag")
        if not data:
            return sizes  # the index file itself, mapped by IO_FLAG_MMAP, which checked it
        hint = f"put back, whole, the {data} that faiss's merge_ondisk wrote with the index"
        totsize = int(invlists.totsize)
        try:
            have = Path(data).stat().st_size  # relative: from the working directory, as faiss
        except OSError as exc:
            raise InputError(f"cannot read FAISS index: its inverted-list data file {data} "
                             f"cannot be read: {exc.strerror}", hint=hint) from exc
        if have < totsize:
            raise InputError(
                f"cannot read FAISS index: its inverted-list data file {data} holds {have} "
                f"bytes, the index says {totsize}: the file is truncated or not this index's",
                hint=hint)
        for listno, one in enumerate(lists):
            end = int(one.offset) + int(one.capacity) * (code_size + 8)
            if one.size > one.capacity or end > totsize:
                raise InputError(
                    f"cannot read FAISS index: inverted list {listno} ({one.size} entries at "
                    f"byte {one.offset}) lies outside its data file {data} ({totsize} bytes)",
                    hint=hint)
        return sizes

    def _list(self, listno: int) -> tuple[np.ndarray, np.ndarray]:
        n = int(self.sizes[listno])
        codes_ptr = self.invlists.get_codes(listno)
        ids_ptr = self.invlists.get_ids(listno)
        if codes_ptr is None or ids_ptr is None:
            # wrapped, a NULL pointer is a view of address 0: reading it kills the process
            raise InputError(f"cannot read FAISS index: FAISS gives no data for inverted list "
                             f"{listno} of {n} entries", location=Location(source=self.source),
                             hint="the file is corrupt")
        codes = faiss.rev_swig_ptr(codes_ptr, n * self.code_size)
        ids = faiss.rev_swig_ptr(ids_ptr, n)
        return codes.reshape(n, self.code_size), ids

    def pieces(self, start: int, size: int) -> Iterator[_Piece]:
        if start >= self.ntotal:
            return
        first = int(np.searchsorted(self.ends, start, side="right"))
        for listno in range(first, len(self.sizes)):
            n = int(self.sizes[listno])
            if n == 0:
                continue
            codes, ids = self._list(listno)
            lo = start - int(self.ends[listno] - n) if listno == first else 0
            for a in range(max(lo, 0), n, size):
                b = min(a + size, n)
                yield _Piece(-1, ids[a:b], codes[a:b], listno)

    def sample_codes(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Up to ``k`` codes spread over the non-empty lists, with their list numbers."""
        nonempty = np.flatnonzero(self.sizes)
        if len(nonempty) == 0:
            return np.zeros((0, self.code_size), np.uint8), np.zeros(0, np.int64)
        lists = nonempty[np.unique(np.linspace(0, len(nonempty) - 1,
                                               num=min(k, len(nonempty))).astype(np.int64))]
        per = max(1, k // len(lists))
        codes, listnos = [], []
        for listno in lists:
            c, _ = self._list(int(listno))
            codes.append(c[:per].copy())
            listnos.append(np.full(len(codes[-1]), listno, dtype=np.int64))
        return np.concatenate(codes), np.concatenate(listnos)


@dataclass
class _Plan:
    """How to read one index: where its codes are, how to decode them, how ids map."""

    storage: Any = None
    decode: Callable[[np.ndarray, int | None], np.ndarray] | None = None
    id_maps: list[np.ndarray] = field(default_factory=list)  # outermost first
    chain: list[str] = field(default_factory=list)           # type names, outermost first
    lossy: list[str] = field(default_factory=list)
    binary_bits: int | None = None
    dim: int = 0
    metric: int = faiss.METRIC_L2
    keep: list[Any] = field(default_factory=list)            # FAISS objects the views rely on


def _standalone(index: Any, codes: np.ndarray, listno: int | None) -> np.ndarray:
    """IVF codes in the ``sa_decode`` layout: the list number (little endian) then the code."""
    if listno is None:
        return np.ascontiguousarray(codes)
    nb = index.coarse_code_size()
    prefix = np.frombuffer(int(listno).to_bytes(8, "little")[:nb], dtype=np.uint8)
    out = np.empty((len(codes), nb + codes.shape[1]), dtype=np.uint8)
    out[:, :nb] = prefix
    out[:, nb:] = codes
    return out


def _plan(index: Any, plan: _Plan) -> _Plan:
    """Fill ``plan`` for ``index`` (recursing into wrappers); ``UnsupportedError`` otherwise."""
    name = type(index).__name__
    plan.chain.append(name)
    plan.keep.append(index)
    if name in _IDMAPS:
        id_map = index.id_map
        n = id_map.size()
        plan.id_maps.append(faiss.rev_swig_ptr(id_map.data(), n) if n else
                            np.zeros(0, dtype=np.int64))
        inner = (faiss.downcast_IndexBinary(index.index) if name.startswith("IndexBinary")
                 else faiss.downcast_index(index.index))
        return _plan(inner, plan)
    if name in ("IndexHNSWFlat", "IndexHNSWSQ", "IndexHNSWPQ"):
        return _plan(faiss.downcast_index(index.storage), plan)
    if name == "IndexBinaryHNSW":
        return _plan(faiss.downcast_IndexBinary(index.storage), plan)
    if name == "IndexRefineFlat":
        return _plan(faiss.downcast_index(index.refine_index), plan)
    if name == "IndexPreTransform":
        plan.lossy.append("IndexPreTransform (" + ", ".join(
            type(faiss.downcast_VectorTransform(index.chain.at(i))).__name__
            for i in range(index.chain.size())) + ")")
        transforms = [faiss.downcast_VectorTransform(index.chain.at(i))
                      for i in range(index.chain.size())]
        plan.keep.extend(transforms)
        _plan(faiss.downcast_index(index.index), plan)
        inner_decode = plan.decode

        def decode(codes: np.ndarray, listno: int | None) -> np.ndarray:
            x = inner_decode(codes, listno)
            for vt in reversed(transforms):
                x = vt.reverse_transform(np.ascontiguousarray(x, dtype=np.float32))
            return x

        plan.decode = decode
        plan.dim = index.d
        plan.metric = index.metric_type
        return plan
    if name in _FLAT:
        plan.storage = _FlatStorage(index.codes, index.ntotal, index.code_size)
        d = index.d
        plan.decode = lambda codes, _l: codes.view(np.float32).reshape(len(codes), d)
    elif name == "IndexBinaryFlat":
        plan.storage = _FlatStorage(index.xb, index.ntotal, index.code_size)
        plan.decode = lambda codes, _l: codes
        plan.binary_bits = index.d
    elif name in _LOSSY_FLAT_CODES:
        plan.storage = _FlatStorage(index.codes, index.ntotal, index.code_size)
        plan.decode = lambda codes, _l: index.sa_decode(np.ascontiguousarray(codes))
        plan.lossy.append(name)
    elif name in ("IndexIVFFlat", "IndexBinaryIVF", *_LOSSY_IVF):
        invlists = faiss.downcast_InvertedLists(index.invlists)
        kind = type(invlists).__name__
        if kind not in _INVLISTS:
            raise UnsupportedError(
                f"{name} with inverted lists of type {kind} is not supported",
                hint=f"supported inverted lists: {', '.join(_INVLISTS)}")
        plan.keep.append(invlists)
        plan.storage = _IvfStorage(invlists, index.nlist, index.code_size)
        if name == "IndexIVFFlat":
            d = index.d
            plan.decode = lambda codes, _l: codes.view(np.float32).reshape(len(codes), d)
        elif name == "IndexBinaryIVF":
            plan.decode = lambda codes, _l: codes
            plan.binary_bits = index.d
        else:
            plan.decode = lambda codes, listno: index.sa_decode(
                _standalone(index, codes, listno))
            plan.lossy.append(name)
    else:
        raise UnsupportedError(f"FAISS index type {name} is not supported",
                               hint=_supported_hint())
    plan.dim = index.code_size if plan.binary_bits else index.d
    plan.metric = getattr(index, "metric_type", faiss.METRIC_L2)
    return plan


def _describe(chain: list[str]) -> str:
    return "(".join(chain) + ")" * (len(chain) - 1)


# ----------------------------------------------------------------------------------- payloads


def _id_key(value: Any) -> str | None:
    """The join key of an id: canonical decimal text for integers, the text itself otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value:
        return str(int(value)) if value.isdigit() and value == str(int(value)) else value
    return None


#: a ``.json`` payloads file up to this size is parsed whole (fast); a bigger one is streamed
#: entry by entry through ijson (the ``faiss`` extra), so it never sits in memory
WHOLE_JSON_BYTES = 64 << 20


#: what to do about a payload that is not a JSON object
NOT_OBJECT_HINT = "make the payload a JSON object"


def bad_payload_entry(text: str) -> tuple[str, Any, dict[str, Any], str] | None:
    """(reason, payload as read, line / row, hint) of a payload table entry ``load_payloads``
    kept for a bad payload; None for a good entry (a JSON object's text)."""
    if text.startswith("{"):
        return None
    reason, payload, where, hint = loads_reject_line(text.encode())
    return reason, payload, where, hint


def load_payloads(path: str, context: Context, *, keep_bad: bool = False) -> PayloadTable:
    """Payloads by id key (``_id_key``) as JSON text, from a JSON, JSONL or Parquet file.

    * ``.json``: an object keyed by id (``{"17": {...}, ...}``, the usual ``metadata.json``) or
      an array of records with an ``id`` field;
    * ``.jsonl`` / ``.ndjson``: one record per line with an ``id`` field;
    * ``.parquet``: a table with an ``id`` column; with only ``id`` and a string ``payload``
      column (vecferry's layout) the payload is that JSON text, a null cell none.

    A record's payload is its ``payload`` field when that is an object, else the record without
    ``id``. Bad entries (no id, payload not an object, a Parquet row holding NaN or infinity,
    an id given twice) go to ``context.reject``; an unreadable file is an ``InputError``. With
    ``keep_bad``, a payload that is not a JSON object (or JSON text that does not parse, or a
    row JSON cannot hold) is kept in the table instead, as an entry ``bad_payload_entry`` tells
    apart, for the reader to reject together with the point of its id. The payloads go to an
    on-disk ``PayloadTable`` as the file is read (integers of any size kept exact), so memory
    does not grow with the file; the caller closes the table.
    """
    source = payloads_file(path)
    copy = LocalCopy(source) if is_remote(path) else None  # type: ignore[arg-type]
    p = copy.path if copy is not None else Path(source)
    suffix = p.suffix.lower()
    out = PayloadTable()
    skipping = context.on_error == "skip"

    def bad(message: str, raw: Any, *, line: int | None = None, row: int | None = None,
            point_id: Any = None, hint: str | None = None) -> None:
        context.reject(record_error(message, source=path, line=line, row=row,
                                    point_id=point_id, hint=hint, raw=raw))

    def add(pid: Any, payload: Any, raw: Any, reason: str | None = None,
            hint: str | None = None, **where: Any) -> None:
        key = _id_key(pid)
        if key is None:
            bad(f"payload entry has no usable id ({pid!r}); ids are integers or strings",
                raw, **where)
            return
        text = None
        if isinstance(payload, dict) and reason is None:
            text = dumps_payload(payload)
        else:
            reason = reason or f"payload for id {pid!r} is not a JSON object"
            if not keep_bad:
                bad(reason, raw, point_id=pid, hint=hint, **where)
                return
            # Rejected alone, the payload would leave its point written without it and a
            # rejects line without a vector, which could not be converted once fixed. The
            # stdlib encoder keeps a NaN as NaN: made null, it would read as fixed.
            text = json.dumps([reason, payload, where, hint or NOT_OBJECT_HINT],
                              ensure_ascii=False, separators=(",", ":"))
        if not out.add(key, text):
            # said as it happens: a failing run stops here, a skipping one joins the first
            bad(f"payload id {pid!r} is given more than once"
                + ("; the first is kept" if skipping else ""), raw, point_id=pid,
                hint="keep one entry per id; with --on-error skip the first is joined and the "
                     "others go to the rejects file", **where)

    def record(rec: Any, reason: str | None = None, **where: Any) -> None:
        if not isinstance(rec, dict) or "id" not in rec:
            bad("payload record has no 'id' field", rec if isinstance(rec, dict)
                else {"_raw": repr(rec)}, **where)
            return
        payload = rec.get("payload")
        if not isinstance(payload, dict):
            payload = {k: v for k, v in rec.items() if k != "id"}
        raw = {"id": rec["id"], "payload": payload}
        if reason is None:
            add(rec["id"], payload, raw, **where)
        else:
            add(rec["id"], payload, raw, reason=reason, hint=PARQUET_NAN_HINT, **where)

    def json_text(pid: Any, text: str | None, row: int) -> None:
        if text is None:
            return  # a null cell: the point has no payload, as in the stream
        try:
            payload = loads_exact(text.encode())
        except ValueError as exc:
            constant = nonstandard_constant(text.encode())
            reason = (f"payload for id {pid!r} holds {constant}, which JSON cannot hold"
                      if constant is not None else
                      f"payload for id {pid!r} is not valid JSON: {exc}")
            add(pid, text, {"id": pid, "payload": text}, row=row, reason=reason,
                hint=NAN_HINT if constant is not None else None)
            return
        add(pid, payload, {"id": pid, "payload": payload}, row=row)

    try:
        if suffix == ".json":
            kind, entries = _json_entries(p, path)
            if kind == "object":
                for key, payload in entries:
                    pid = int(key) if _id_key(key) == key and key.isdigit() else key
                    add(pid, payload, {"id": pid, "payload": payload})
            else:
                for i, rec in enumerate(entries):
                    record(rec, row=i)
        elif suffix in (".jsonl", ".ndjson"):
            with open(p, "rb") as fh:
                for n, line, _ in iter_lines(fh, path):
                    try:
                        rec = loads_exact(line)
                    except ValueError as exc:
                        context.reject(record_error(f"not JSON: {exc}", source=path, line=n,
                                                    raw=line.decode(errors="replace")))
                        continue
                    record(rec, line=n)
        elif suffix in (".parquet", ".pq"):
            pf = pq.ParquetFile(p)
            names = pf.schema_arrow.names
            if "id" not in names:
                raise InputError("payloads Parquet has no 'id' column",
                                 location=Location(source=path),
                                 hint=f"columns: {', '.join(names)}")
            ptype = pf.schema_arrow.field("payload").type if "payload" in names else None
            # a JSON-text payload column, the vecferry layout
            texts = set(names) == {"id", "payload"} and (pa.types.is_string(ptype)
                                                          or pa.types.is_large_string(ptype))
            floats = [] if texts else [c for c in float_columns(pf.schema_arrow) if c != "id"]
            row = 0
            for batch in pf.iter_batches(batch_size=4096):
                for rec in batch.to_pylist():
                    if texts:
                        json_text(_json_safe(rec["id"]), rec["payload"], row)
                    else:
                        rec = _json_safe(rec)
                        record(rec, non_finite_column(rec, floats) if floats else None, row=row)
                    row += 1
    except BaseException as exc:
        out.close()
        if isinstance(exc, ValueError) and not isinstance(exc, VecferryError):
            # orjson's, json's and ijson's parse errors are ValueErrors
            raise InputError(f"payloads file is not valid JSON: {exc}",
                             location=Location(source=path)) from exc
        if isinstance(exc, (OSError, pa.ArrowException)):
            raise InputError(f"cannot read payloads: {exc}",
                             location=Location(source=path)) from exc
        raise
    finally:
        if copy is not None:
            copy.cleanup()
    return out


def _entry_places(path: str) -> Generator[tuple[str, dict[str, int]], None, None]:
    """(id key, {"line": n} or {"row": i}) of each entry of payloads file ``path`` that has
    an id, in file order, as ``load_payloads`` reads them; nothing for a JSON object keyed
    by id (its entries have no line the parser tells) or a file in object storage (read
    again, it would be downloaded again). Read only to name an entry in an error."""
    if is_remote(path):
        return
    p = Path(payloads_file(path))
    suffix = p.suffix.lower()
    try:
        if suffix == ".json":
            kind, entries = _json_entries(p, path)
            if kind == "array":
                for i, rec in enumerate(entries):
                    if isinstance(rec, dict) and "id" in rec:
                        key = _id_key(rec["id"])
                        if key is not None:
                            yield key, {"row": i}
        elif suffix in (".jsonl", ".ndjson"):
            with open(p, "rb") as fh:
                for n, line, _ in iter_lines(fh, path):
                    try:
                        rec = loads_exact(line)
                    except ValueError:
                        continue
                    if isinstance(rec, dict) and "id" in rec:
                        key = _id_key(rec["id"])
                        if key is not None:
                            yield key, {"line": n}
        else:
            row = 0
            for batch in pq.ParquetFile(p).iter_batches(batch_size=4096, columns=["id"]):
                for value in batch.column(0).to_pylist():
                    key = _id_key(_json_safe(value))
                    if key is not None:
                        yield key, {"row": row}
                    row += 1
    except (ValueError, OSError, pa.ArrowException, VecferryError):
        return  # it was read once already; a place is a courtesy, not worth failing for


#: the kinds of files ``payloads=`` takes, by extension
PAYLOAD_SUFFIXES = (".json", ".jsonl", ".ndjson", ".parquet", ".pq")


def payloads_file(path: str) -> Any:
    """The path of a payloads file (``input_path``) after checking it exists and is of a kind
    ``load_payloads`` reads (else ``InputError`` / ``UsageError``)."""
    p = input_path(path)
    if p.suffix.lower() not in PAYLOAD_SUFFIXES:
        raise UsageError(f"cannot read payloads from {p.name}", location=Location(source=path),
                         hint="give a .json, .jsonl/.ndjson or .parquet file")
    return p


def _json_entries(p: Path, path: str) -> tuple[str, Iterator[Any]]:
    """("object", (key, value) pairs) or ("array", records) of a ``.json`` payloads file:
    parsed whole when small, streamed (ijson) when bigger than ``WHOLE_JSON_BYTES``."""
    size = p.stat().st_size
    try:
        import ijson
    except ImportError:
        ijson = None
    if size <= WHOLE_JSON_BYTES or ijson is None:
        text = without_bom(p.read_bytes())
        if text.lstrip()[:1] == b"{":
            return "object", iter(_object_pairs(text))
        data = loads_exact(text)
        if isinstance(data, list):
            return "array", iter(data)
        raise InputError("payloads JSON must be an object keyed by id or an array of records",
                         location=Location(source=path))
    # ijson's C parser stops at integers past 64 bits: a file holding any goes through its
    # exact (slower) Python parser
    backend = ijson.get_backend("python" if _has_long_number_file(p) else "yajl2_c")

    def stream(prefix: str, pairs: bool) -> Iterator[Any]:
        with open(p, "rb") as fh:
            if fh.read(3) != UTF8_BOM:
                fh.seek(0)
            parse = backend.kvitems if pairs else backend.items
            try:
                yield from parse(fh, prefix, use_float=True)
            except ijson.JSONError as exc:  # not a ValueError, as the other parsers' are
                raise ValueError(str(exc)) from exc

    with open(p, "rb") as fh:
        head = without_bom(fh.read(4096)).lstrip()
    if head.startswith(b"{"):
        return "object", stream("", True)
    if head.startswith(b"["):
        return "array", stream("item", False)
    raise InputError("payloads JSON must be an object keyed by id or an array of records",
                     location=Location(source=path))


def _object_pairs(text: bytes) -> list[tuple[str, Any]]:
    """The (key, value) pairs of the JSON object ``text`` in file order, every key given twice
    included: parsed into a dict (orjson), a metadata.json would keep the last payload of such
    an id without a word, where the streamed parse of a bigger file sees both. The stdlib parser
    keeps integers of any size exact and here refuses NaN and Infinity, as JSON does."""
    top: list[tuple[str, Any]] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal top
        top = items  # the outermost object closes last
        return dict(items)

    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not valid JSON")

    json.loads(text, object_pairs_hook=pairs, parse_constant=refuse)
    return top


def _has_long_number_file(p: Path) -> bool:
    """Whether the file holds a run of 19+ digits (see ``fileio.has_long_number``), read in
    blocks that overlap by the length of such a run."""
    with open(p, "rb") as fh:
        tail = b""
        while block := fh.read(1 << 20):
            if has_long_number(tail + block):
                return True
            tail = block[-18:]
    return False


def _json_safe(value: Any) -> Any:
    """Parquet cell values that JSON cannot hold as they are (dates, bytes, decimals) as text."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, bytes):
        return value.hex()
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


#: a payload sidecar up to this size (uncompressed, as its footer says) is held in memory; a
#: larger one goes to a scratch SQLite table, looked up a batch at a time, so a worker's memory
#: does not grow with the index
SIDECAR_MEMORY_BYTES = 64 << 20


class _Sidecar:
    """``<index>.payloads.parquet``, looked up a batch at a time: by the points' positions in
    the order they were added (its ``position`` column) for a read in that order, else by
    FAISS id.

    Only the footer is read when opened (a partitioned run's driver never reads more); the
    rows are loaded on the first lookup. Looked up by FAISS id, where an id has two rows (a
    sidecar written before positions were recorded), its first row counts.
    """

    def __init__(self, path: Path, name: str | None = None):
        self.path = path
        self.name = name or str(path)  # as the user named it (``path`` may be a local copy)
        try:
            meta = pq.ParquetFile(path).metadata
        except (OSError, pa.ArrowException) as exc:
            raise self._unreadable(exc) from exc
        names = set(meta.schema.names)
        if "faiss_id" not in names:
            raise InputError("payload sidecar has no 'faiss_id' column",
                             location=Location(source=self.name))
        self.columns = [c for c in ("id", PAYLOAD_COLUMN) if c in names]
        self.has_ids = "id" in names
        self.has_positions = POSITION_COLUMN in names
        self.rows = meta.num_rows
        self._bytes = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
        self._by: str | None = None           # the key loaded: "faiss_id" or POSITION_COLUMN
        self._fid: np.ndarray | None = None   # FAISS ids: the sorted keys, or each row's id
        self._pos: np.ndarray | None = None   # sorted positions (looked up by position)
        self._memory: dict[str, pa.Array] = {}
        self._disk: Any = None
        #: (rows whose key an earlier row has, the smallest such key), once loaded by FAISS id
        self.repeats: tuple[int, int | None] = (0, None)

    def has_payloads(self) -> bool:
        """Whether a row has a payload (a sidecar of mapped ids has a row per point, payload
        or not): from the footer's null counts, else from the column itself."""
        if PAYLOAD_COLUMN not in self.columns:
            return False
        try:
            meta = pq.ParquetFile(self.path).metadata
            column = meta.schema.names.index(PAYLOAD_COLUMN)
            nulls = 0
            for g in range(meta.num_row_groups):
                stats = meta.row_group(g).column(column).statistics
                if stats is None or not stats.has_null_count:
                    col = pq.read_table(self.path, columns=[PAYLOAD_COLUMN]).column(0)
                    return col.null_count < len(col)
                nulls += stats.null_count
        except (OSError, pa.ArrowException) as exc:
            raise self._unreadable(exc) from exc
        return nulls < meta.num_rows

    def _unreadable(self, exc: BaseException) -> InputError:
        return InputError(f"cannot read the payload sidecar: {exc}",
                          location=Location(source=self.name),
                          hint="delete or fix it; it was written next to the index")

    def _load(self, by: str) -> None:
        """Load the rows keyed by ``by`` (``faiss_id``, or ``position`` with the FAISS id of
        each row kept to check against the index)."""
        self.close()
        extra = ["faiss_id"] if by == POSITION_COLUMN else []
        columns = [by, *extra, *self.columns]
        try:
            if self._bytes <= SIDECAR_MEMORY_BYTES:
                table = pq.read_table(self.path, columns=columns)
                keys = table.column(by).to_numpy()
                order = np.argsort(keys, kind="stable")
                take = pa.array(order)
                self._memory = {c: table.column(c).combine_chunks().take(take)
                                for c in self.columns}
                if by == POSITION_COLUMN:
                    self._pos = keys[order]
                    self._fid = table.column("faiss_id").to_numpy()[order]
                else:
                    self._fid = keys[order]
                    again = np.flatnonzero(np.diff(self._fid) == 0)
                    self.repeats = (len(again), int(self._fid[again[0]]) if len(again) else None)
            else:
                from vecferry.payloadjoin import RowsById

                self._disk = RowsById([*extra, *self.columns])
                for batch in pq.ParquetFile(self.path).iter_batches(batch_size=65536,
                                                                    columns=columns):
                    self._disk.add_many(zip(*(batch.column(i).to_pylist()
                                              for i in range(batch.num_columns)), strict=True))
                if by == "faiss_id":
                    self.repeats = self._disk.repeats()
        except (OSError, pa.ArrowException) as exc:
            self.close()
            raise self._unreadable(exc) from exc
        self._by = by

    def lookup(self, faiss_ids: np.ndarray, positions: np.ndarray | None = None
               ) -> tuple[dict[str, pa.Array], np.ndarray]:
        """The sidecar's columns (``id``, ``payload``: those it has) for each point, null where
        it has no row, and whether it has one. The points are found by ``positions`` (their
        places in the order they were added) when given and the sidecar records them: a
        FAISS id given to several points has one row for each, and only the position tells
        them apart. Else by FAISS id. A row at a point's position that names another FAISS
        id than the point's is an ``InputError``: the index is not the one written with it."""
        by = POSITION_COLUMN if positions is not None and self.has_positions else "faiss_id"
        if self._by != by:
            self._load(by)
        keys = positions if by == POSITION_COLUMN else faiss_ids
        assert keys is not None
        if self._disk is not None:
            rows = self._disk.take(keys.tolist())
            found = np.fromiter((r is not None for r in rows), dtype=bool, count=len(rows))
            if by == POSITION_COLUMN:
                # RowsById keeps text: the FAISS id column comes back as its digits
                held = np.array([int(r[0]) if r is not None else -1 for r in rows],
                                dtype=np.int64)
                self._check(keys, faiss_ids, held, found)
                rows = [r[1:] if r is not None else None for r in rows]
            cols = {c: pa.array([r[i] if r is not None else None for r in rows], pa.string())
                    for i, c in enumerate(self.columns)}
            return cols, found
        sorted_keys = self._pos if by == POSITION_COLUMN else self._fid
        assert sorted_keys is not None and self._fid is not None
        pos = np.minimum(np.searchsorted(sorted_keys, keys), max(len(sorted_keys) - 1, 0))
        found = (sorted_keys[pos] == keys) if len(sorted_keys) else np.zeros(len(keys), bool)
        if by == POSITION_COLUMN and len(sorted_keys):
            self._check(keys, faiss_ids, self._fid[pos], found)
        take = pa.array(pos, mask=~found)
        return {c: a.take(take) for c, a in self._memory.items()}, found

    def _check(self, positions: np.ndarray, faiss_ids: np.ndarray, held: np.ndarray,
               found: np.ndarray) -> None:
        """``InputError`` for the first point whose row (``found``) names another FAISS id
        (``held``) than the index holds at its position: its payload is another point's."""
        wrong = np.flatnonzero(found & (held != faiss_ids))
        if len(wrong):
            row = int(wrong[0])
            raise InputError(
                f"payload sidecar has the row of FAISS id {int(held[row])} for the point at "
                f"position {int(positions[row])} of the index, which holds FAISS id "
                f"{int(faiss_ids[row])} there", location=Location(source=self.name),
                hint="the index changed after vecferry wrote it: write it again from its "
                     "source, or move the sidecars away to read it with its FAISS ids and no "
                     "payloads")

    def close(self) -> None:
        if self._disk is not None:
            self._disk.close()
            self._disk = None
        self._fid = self._pos = None
        self._memory = {}
        self._by = None
        self.repeats = (0, None)


# ------------------------------------------------------------------------------------- reader

#: index files smaller than this are read whole once before they are mapped (see FaissReader)
CHECK_WHOLE_BELOW = 1 << 20


def _read_index(path: Path, location: str, binary: bool, flags: int) -> Any:
    """The index read with ``flags``; ``InputError`` for a file faiss cannot read.

    Always read-only: faiss otherwise maps the ``.ivfdata`` file of on-disk inverted lists
    writable (and fails on a read-only one)."""
    reader = faiss.read_index_binary if binary else faiss.read_index
    try:
        return reader(str(path), flags | faiss.IO_FLAG_READ_ONLY)
    except RuntimeError as exc:
        msg = _faiss_message(exc)
        opened = re.match(r"could not open (.*) in mode \S+: (.*)$", msg)
        if opened and "OnDiskInvertedLists" in str(exc):
            data, why = opened.groups()
            relative = "" if Path(data).is_absolute() else (
                f"; a relative path is opened from the working directory, {Path.cwd()}")
            found = "was not found" if "No such file" in why else f"cannot be opened: {why}"
            raise InputError(
                f"cannot read FAISS index: its inverted-list data file {data} (the path the "
                f"index records{relative}) {found}", location=Location(source=location),
                hint="the index keeps its inverted lists in that file, as faiss's "
                     "merge_ondisk writes them: run vecferry from the directory the path is "
                     "relative to, or put the file at that path") from exc
        if "not recognized" in msg:
            text = f"not a FAISS index this faiss ({faiss.__version__}) can read: {msg}"
        else:
            text = f"cannot read FAISS index, the file is truncated or corrupt: {msg}"
        raise InputError(text, location=Location(source=location),
                         hint="check the file was written completely by faiss.write_index; "
                              "pass --from for a file of another format") from exc


def _index_in_folder(location: str, folder: Any) -> tuple[str, Any, list[str]]:
    """The index file a folder names (its location and path, and the other ``*.faiss`` files
    there): ``index.faiss`` (LangChain's ``save_local`` default), else its only ``*.faiss``
    file, else LlamaIndex's ``default__vector_store.json``; an ``InputError`` listing them
    otherwise."""
    found = sorted(p.name for p in folder.glob("*.faiss"))
    name = "index.faiss" if "index.faiss" in found else found[0] if len(found) == 1 else None
    if name is None and not found and (folder / VECTOR_STORE_FILE).exists():
        with open_read(f"{location.rstrip('/')}/{VECTOR_STORE_FILE}") as fh:
            kind = vector_store_kind(fh.read(64))
        if kind == "simple":
            raise InputError(
                f"is a LlamaIndex folder whose vectors are in its SimpleVectorStore "
                f"({VECTOR_STORE_FILE} holds JSON), not in a FAISS index",
                location=Location(source=location),
                hint="vecferry reads LlamaIndex folders persisted from a FaissVectorStore")
        name = VECTOR_STORE_FILE
    if name is None:
        have = ", ".join(found) if found else "no *.faiss file"
        raise InputError(f"is a directory, not a FAISS index file ({have})",
                         location=Location(source=location),
                         hint="name the index file; a LangChain store is FOLDER/NAME.faiss "
                              "with NAME.pkl beside it")
    return f"{location.rstrip('/')}/{name}", folder / name, [f for f in found if f != name]


def _check_trailing_id_map(path: Path, location: str, index: Any) -> None:
    """Catch a file cut inside its last id, which FAISS's zero-copy loader lets through.

    An ``IndexIDMap`` (also under ``IndexPreTransform``, which writes its inner index last) ends
    the file with its id map: a uint64 count then the ids. The count must sit where it should.
    """
    while type(index).__name__ == "IndexPreTransform":
        index = faiss.downcast_index(index.index)
    if type(index).__name__ not in _IDMAPS:
        return
    n = int(index.id_map.size())
    size = path.stat().st_size
    offset = size - 8 * n - 8
    ok = offset >= 0
    if ok:
        with open(path, "rb") as fh:
            fh.seek(offset)
            ok = int.from_bytes(fh.read(8), "little") == n
    if not ok:
        raise InputError("cannot read FAISS index, the file is truncated or corrupt: its id "
                         f"map of {n} ids does not end the file",
                         location=Location(source=location),
                         hint="check the file was written completely by faiss.write_index; "
                              "pass --from for a file of another format")


class FaissReader(ClosingReader):
    """Points of a FAISS index file; see the module docstring for the mapping and types.

    Raises ``InputError`` for a missing, truncated or corrupt file, ``UnsupportedError`` for an
    index type without a read path (naming the supported ones) or a lossy one without
    ``allow_lossy``. Negative ids and payload entries without a vector go to ``context.reject``.
    """

    def __init__(self, location: str, *, context: Context, payloads: str | None = None,
                 allow_lossy: bool = False, mmap: bool = True, distance: str | None = None,
                 **options: Any):
        reject_unknown_options("faiss", options)
        if distance is not None and distance not in DISTANCES:
            raise UsageError(f"unknown distance {distance!r}",
                             hint=f"one of {', '.join(DISTANCES)}")
        wanted = distance
        self.context = context
        path = input_path(location)
        folder = location if path.is_dir() else None
        others: list[str] = []
        if folder is not None:
            location, path, others = _index_in_folder(location, path)
        self.location = location
        self._copy: LocalCopy | None = None
        if is_remote(path):
            # faiss reads (and maps) local files only: copy the index and its sidecars
            self._copy = LocalCopy(path, sidecars=(MANIFEST_SUFFIX, PAYLOADS_SUFFIX))
            path = self._copy.path
        with open(path, "rb") as fh:
            head = fh.read(4)
        if len(head) < 4:
            raise InputError("cannot read FAISS index, the file is empty or truncated",
                             location=Location(source=location),
                             hint="check the file was written completely by faiss.write_index")
        self.binary = head[:2] == b"IB"
        if mmap and path.stat().st_size < CHECK_WHOLE_BELOW:
            # faiss crashes the process (SIGSEGV) mapping some files cut inside their
            # headers; read whole, where it checks each read and raises, such a file is an
            # error (a file cut there is small, and a small file is quick to read twice)
            _read_index(path, location, self.binary, 0)
        flags = faiss.IO_FLAG_MMAP_IFC if mmap else 0
        self._index = _read_index(path, location, self.binary, flags)
        self.plan = self._make_plan()
        if mmap:
            _check_trailing_id_map(path, location, self._index)
        if (mmap and isinstance(self.plan.storage, _IvfStorage)
                and type(self.plan.storage.invlists).__name__ != "OnDiskInvertedLists"):
            # IO_FLAG_MMAP maps inverted lists and checks each lies inside the file; the
            # zero-copy flag misses a last list cut short by less than one id. Not for lists
            # already on disk (merge_ondisk's .ivfdata, mapped by faiss and checked by
            # _IvfStorage): the flag includes IO_FLAG_SKIP_IVF_DATA, which leaves them unopened.
            self._index = _read_index(path, location, self.binary, faiss.IO_FLAG_MMAP)
            self.plan = self._make_plan()
        plan = self.plan
        self._count = int(self._index.ntotal)
        if plan.storage.ntotal != self._count or any(len(m) != self._count
                                                     for m in plan.id_maps):
            raise InputError(
                f"FAISS index is inconsistent: ntotal {self._count}, storage holds "
                f"{plan.storage.ntotal}", location=Location(source=location),
                hint="the file is corrupt")
        #: the files beside the index that hold this source's data (``inspect`` sizes them
        #: with it): the sidecars and merge_ondisk's inverted-list file
        self.companion_files = [side for side in (Path(f"{location}{suffix}") for suffix in
                                                  (MANIFEST_SUFFIX, PAYLOADS_SUFFIX))
                                if side.is_file()]
        invlists = getattr(plan.storage, "invlists", None)
        if type(invlists).__name__ == "OnDiskInvertedLists" and str(invlists.filename):
            self.companion_files.append(Path(str(invlists.filename)))
        index_type = _describe(plan.chain)
        if plan.metric not in _METRICS and not plan.binary_bits:
            # Exported without a distance, the points would be searched by whatever a target
            # defaults to (L2 for FAISS, Dot for Qdrant): another ranking, and nothing says so.
            metric = _METRIC_NAMES.get(plan.metric, str(plan.metric))
            raise UnsupportedError(
                f"FAISS index {index_type} ranks by metric {metric}, which no Qdrant distance "
                "matches: vecferry cannot keep its ranking", location=Location(source=location),
                hint="supported metrics: L2 (Euclid), inner product (Dot or Cosine), L1 "
                     "(Manhattan); rebuild the index with one of them to export it")
        if plan.lossy and not allow_lossy:
            raise UnsupportedError(
                f"FAISS index {index_type} stores lossy codes ({', '.join(plan.lossy)}); "
                "the vectors read back are approximations, not the originals",
                location=Location(source=location),
                hint="pass --allow-lossy to export the decoded vectors anyway")
        if plan.lossy:
            context.warn(f"{location}: {index_type} is lossy ({', '.join(plan.lossy)}); "
                         "exported vectors are decoded approximations of the originals")

        metric_name, distance = _METRICS.get(plan.metric, (f"metric {plan.metric}", None))
        decided = f"metric {metric_name}"
        if plan.binary_bits:
            metric_name, distance, decided = "Hamming", None, "binary index (Hamming)"
        elif plan.metric == faiss.METRIC_INNER_PRODUCT:
            distance, decided = self._cosine_or_dot(wanted)
        if wanted is not None and wanted != distance:
            distance, decided = self._asked_distance(wanted, distance, metric_name)

        self._stale_digest: dict[str, Any] | None = None
        self._sidecar_manifest = self._load_manifest_sidecar(path)
        self._sidecar = self._open_sidecar(path)
        self._repeats_told = False
        if payloads is not None and self._sidecar is not None and self._sidecar.has_payloads():
            self._refuse_payloads_beside_sidecar(payloads)
        #: a pickle beside the index that is not LangChain's docstore (its own warning says so)
        self._foreign_pickle = False
        self._docstore = self._open_docstore(payloads)
        if others:
            context.warn(f"{folder}: read {path.name}; the folder also holds "
                         f"{', '.join(others)} (name the index file to read another)")
        if (folder is not None and self._docstore is None and self._sidecar_manifest is None
                and payloads is None and not self._foreign_pickle):
            stem = path.name.rpartition(".")[0]
            context.warn(f"{folder}: no {stem}.pkl beside {path.name}, so the points get FAISS "
                         "ids and no payloads (LangChain's FAISS.save_local keeps the texts and "
                         "metadata in that file)")
        # Problems of the payloads file are reported by the read that reaches the end of the
        # index, with the payloads no vector took: in a partitioned run every worker loads
        # the file, and each problem must reach the rejects once. With on_error="fail" the
        # first one stops the run at once, before anything is read.
        # The file is loaded on the first read, so a driver that only plans partitions never
        # loads it.
        self._payload_problems: list[RecordError] = []
        if payloads is not None:
            payloads_file(payloads)  # a missing file or an unknown kind stops the run now
        self._payloads_path = payloads
        self._payload_table: PayloadTable | None = None
        self._unmatched_reported = False

        facts: dict[str, Any] = {
            "index_type": index_type,
            "metric": metric_name,
            "lossy": bool(plan.lossy),
            "distance_decided_by": decided,
            "ids": "id_map" if plan.id_maps else (
                "inverted lists" if isinstance(plan.storage, _IvfStorage) else "positions"),
            "faiss_version": faiss.__version__,
        }
        if plan.lossy:
            facts["lossy_components"] = plan.lossy
        if plan.binary_bits:
            facts["binary_bits"] = plan.binary_bits
            facts["binary_encoding"] = "packed bits, uint8[d/8], bit j in byte j//8 bit j%8"
        source = {"format": "faiss", "location": location, "index_type": index_type}
        if self._docstore is not None:
            facts["docstore"] = self._docstore.facts()
            facts["ids"] = facts["docstore"].pop("ids")
            source["docstore"] = self._docstore.location
        spec = VectorSpec(name="", size=plan.dim,
                          datatype="uint8" if plan.binary_bits else "float32",
                          distance=distance)
        manifest = Manifest(vectors=[spec], count=self._count, source=source,
                            id_kind=self._docstore.id_kind if self._docstore else "int")
        self._restore_dtype: str | None = None
        old = self._sidecar_manifest
        manifest.digest = self._stale_digest
        if old is not None:
            # The index came from FaissWriter: restore what FAISS itself cannot hold.
            prev = old.vectors[0]
            spec.name = prev.name
            if prev.distance and wanted is None and (distance is None or prev.distance == "Cosine"
                                                     or distance == prev.distance):
                spec.distance = prev.distance
            normalized = (old.extra.get("faiss_writer") or {}).get("normalized_rows") or 0
            if prev.datatype == "float16" and not plan.lossy and not plan.binary_bits:
                spec.datatype, self._restore_dtype = "float16", "float16"
            elif prev.datatype == "uint8" and not plan.lossy and not plan.binary_bits:
                if normalized:
                    # scaled to unit length for Cosine, they are floats no uint8 holds
                    context.warn(f"{location}: vectors read as float32, not as the uint8 "
                                 f"{location}{MANIFEST_SUFFIX} records: {normalized} of them "
                                 "were normalized for the Cosine distance when written")
                else:
                    spec.datatype, self._restore_dtype = "uint8", "uint8"
            spec.extra = dict(prev.extra)
            if self._sidecar is not None and self._sidecar.has_ids:
                manifest.id_kind = old.id_kind
            manifest.source = {**old.source, "faiss": manifest.source}
            manifest.collection = old.collection
            manifest.extra = {k: v for k, v in old.extra.items() if k != "faiss_writer"}
            manifest.digest = old.digest
        manifest.extra["faiss"] = facts
        self.manifest = manifest
        self.schema = manifest.schema()

    def _make_plan(self) -> _Plan:
        try:
            plan = _plan(self._index, _Plan())
        except (UnsupportedError, InputError) as exc:
            exc.location = Location(source=self.location)  # _plan knows the index, not its file
            raise
        except ValueError as exc:
            raise InputError(f"FAISS index is corrupt: {exc}",
                             location=Location(source=self.location)) from exc
        if isinstance(plan.storage, _IvfStorage):
            plan.storage.source = self.location
        return plan

    def _norms(self) -> tuple[int, float, int | None, float]:
        """(vectors looked at, the largest |norm - 1|, the id of the first vector off unit
        length or None, its norm): every vector when the index decodes to at most
        ``NORM_CHECK_BYTES``, else a sample of ``DISTANCE_SAMPLE`` spread over it."""
        storage = self.plan.storage
        seen, worst, first, first_norm = 0, 0.0, None, 1.0
        if storage.ntotal * self.plan.dim * 4 > NORM_CHECK_BYTES:
            if isinstance(storage, _IvfStorage):
                codes, listnos = storage.sample_codes(DISTANCE_SAMPLE)
                parts = [self.plan.decode(codes[listnos == ln], int(ln))
                         for ln in np.unique(listnos)]
                chunks = [(np.concatenate(parts), None)] if parts else []
            else:
                chunks = [(self.plan.decode(storage.sample_codes(DISTANCE_SAMPLE), None), None)]
        else:
            chunks = ((self.plan.decode(p.codes, p.listno), p)
                      for p in storage.pieces(0, 1 << 16))
        for vectors, piece in chunks:
            if not len(vectors):
                continue
            v = np.asarray(vectors, dtype=np.float32)
            norms = np.sqrt(np.einsum("ij,ij->i", v, v, dtype=np.float64))
            off = np.abs(norms - 1.0)
            seen += len(v)
            worst = max(worst, float(off.max()))
            if first is None and worst > UNIT_TOLERANCE:
                row = int(np.argmax(off > UNIT_TOLERANCE))
                first_norm = float(norms[row])
                first = int(self._stream_ids(piece)[row]) if piece is not None else -1
        return seen, worst, first, first_norm

    def _cosine_or_dot(self, wanted: str | None) -> tuple[str, str]:
        """Cosine when every vector has unit length (a sample of a very big index), else Dot;
        ``wanted`` (``--distance``) decides instead when given."""
        if wanted in ("Dot", "Cosine"):
            return wanted, f"inner product; {wanted} as --distance says"
        seen, worst, first, norm = self._norms()
        total = self.plan.storage.ntotal
        if seen == 0:
            return "Dot", "inner product; empty index, nothing to look at"
        which = f"all {seen}" if seen == total else f"a sample of {seen} of the {total}"
        if first is None:
            return "Cosine", (f"inner product and {which} vectors have unit length (max "
                              f"|norm-1| = {worst:.2e} <= {UNIT_TOLERANCE})"
                              + ("" if seen == total else "; pass --distance to decide"))
        at = f"vector id {first}" if first >= 0 else "a sampled vector"
        return "Dot", (f"inner product and not all vectors have unit length ({at} has norm "
                       f"{norm:.6g}; {which} looked at)")

    def _asked_distance(self, wanted: str, derived: str | None, metric: str
                        ) -> tuple[str, str]:
        """``--distance`` on an index whose metric gives ``derived``: taken where it ranks
        the vectors as the index does, else a ``UsageError``."""
        if derived == "Euclid" and wanted == "Cosine":
            seen, _, first, norm = self._norms()
            if first is None and seen == self.plan.storage.ntotal:
                return "Cosine", (f"metric L2 and all {seen} vectors have unit length, so "
                                  "Cosine (as --distance says) ranks them as L2 does")
            off = (f"vector id {first} has norm {norm:.6g}" if first is not None and first >= 0
                   else "the index is too big to check every vector")
            raise UsageError(
                f"--distance Cosine on an L2 index: {off}, so Cosine would rank the vectors "
                "otherwise than the index does", location=Location(source=self.location),
                hint="drop --distance to keep Euclid")
        qdrant = derived or "no Qdrant distance"
        raise UsageError(
            f"--distance {wanted} on an index that ranks by {metric} ({qdrant}): the vectors "
            "would be searched otherwise than the index searches them",
            location=Location(source=self.location),
            hint=f"drop --distance to keep {derived}" if derived else "drop --distance")

    def _load_manifest_sidecar(self, path: Path) -> Manifest | None:
        """The manifest sidecar, or None: absent, not a manifest, or describing other points
        than the index holds (a warning). The last is an ``InputError`` where a payload
        sidecar is there or recorded: read without it, the points would get FAISS ids (0..n-1
        for mapped ids) and no payloads, the whole export looking complete."""
        side = Path(str(path) + MANIFEST_SUFFIX)
        if not side.exists():
            return None
        try:
            old = Manifest.from_json(side.read_bytes())
        except (orjson.JSONDecodeError, TypeError, ValueError, SchemaError) as exc:
            self.context.warn(f"{side}: ignored, not a vecferry manifest ({exc})")
            return None
        if (old.count != self._count or len(old.vectors) != 1
                or old.vectors[0].size != self.plan.dim):
            size = old.vectors[0].size if len(old.vectors) == 1 else None
            described = (f"{old.count} points" if size == self.plan.dim else
                         f"{old.count} points of {size if size is not None else 'other'} "
                         f"dimensions (the index: {self.plan.dim})")
            payloads = Path(str(path) + PAYLOADS_SUFFIX)
            recorded = (old.extra.get("faiss_writer") or {}).get("payload_sidecar_rows")
            if payloads.exists() or old.id_kind != "int" or recorded:
                manifest_name = self.location + MANIFEST_SUFFIX
                side_name = self.location + PAYLOADS_SUFFIX
                what = (f"their original {old.id_kind} ids and payloads"
                        if old.id_kind != "int" else "their payloads")
                there = payloads.exists()
                sidecar = (f"the payload sidecar {side_name} written with them holds {what} "
                           "and no longer fits the index" if there else
                           f"the payload sidecar {side_name} written with them, which held "
                           f"{what}, is missing")
                move = f"{manifest_name} and {side_name}" if there else manifest_name
                raise InputError(
                    f"the index changed after vecferry wrote it: it holds {self._count} points, "
                    f"but its manifest sidecar {manifest_name} describes the {described} "
                    f"vecferry wrote, and {sidecar}: read on, the points would get FAISS ids "
                    "and no payloads", location=Location(source=self.location),
                    hint="write the index again with vecferry from its source, the points "
                         "added since included; to read the index as it is, with its FAISS ids "
                         f"and no payloads, move {move} away")
            # What was written stays the proof: verify compares the index with it.
            self._stale_digest = old.digest
            self.context.warn(f"{side}: ignored, it describes {described} but the index "
                              f"holds {self._count} (the index changed after vecferry wrote it)")
            return None
        return old

    def _open_sidecar(self, path: Path) -> _Sidecar | None:
        """The payload sidecar the manifest sidecar goes with (footer only), or None.

        Without it, an index whose ids were mapped to 0..n-1 would read back with those
        positions as ids and no payloads, which looks like a complete export: so a sidecar
        that is missing, short or without the original ids stops the read here, naming it.
        """
        side = Path(str(path) + PAYLOADS_SUFFIX)
        side_name = self.location + PAYLOADS_SUFFIX   # the user's name (path may be a copy)
        manifest_name = self.location + MANIFEST_SUFFIX
        old = self._sidecar_manifest
        if old is None:
            if side.exists():
                # the id kind of the ids it holds is in the manifest; without it neither the
                # ids nor the payloads can be applied (one that describes other points than
                # the index holds stopped the read already)
                missing = not Path(str(path) + MANIFEST_SUFFIX).exists()
                raise InputError(
                    f"payload sidecar {side_name} has no manifest sidecar {manifest_name} "
                    "beside it: the payloads (and any original ids) it holds cannot be applied "
                    "without it" if missing else f"the manifest sidecar {manifest_name} is not "
                    f"a vecferry manifest: the payloads (and any original ids) in {side_name} "
                    "cannot be applied without it", location=Location(source=self.location),
                    hint=f"put {manifest_name} back beside the index, as vecferry wrote it"
                    + ("" if missing else f"; to read the index with its FAISS ids and no "
                       f"payloads, move {manifest_name} and {side_name} away"))
            return None
        writer = old.extra.get("faiss_writer") or {}
        mapped = old.id_kind != "int"  # FaissWriter maps every id kind but "int" to 0..n-1
        recorded = writer.get("payload_sidecar_rows")
        # manifests written before the row count was recorded: a mapped index has one row per
        # point; for integer ids only the points with a payload have one, so it is unknown
        expected = recorded if isinstance(recorded, int) else (self._count if mapped else None)
        if not side.exists():
            if not expected:
                return None
            lost = (f"the index holds ids 0..n-1 in place of the original ids ({old.id_kind}) "
                    f"of its {self._count} points, which are in that file with their payloads"
                    if mapped else f"its manifest sidecar says the payloads of {expected} points "
                    "are in that file")
            raise InputError(
                f"payload sidecar {side_name} is missing: {lost}",
                location=Location(source=self.location),
                hint=f"put {side_name} back beside the index, as vecferry wrote it; if it is "
                     f"lost, moving {manifest_name} away reads the index without them, with its "
                     "FAISS ids")
        sidecar = _Sidecar(side, side_name)
        if mapped and not sidecar.has_ids:
            raise InputError(
                "payload sidecar has no 'id' column, but the index's manifest sidecar says the "
                f"original ids ({old.id_kind}) are there", location=Location(source=side_name),
                hint="it belongs to another index; put back the sidecar written with this index")
        if expected is not None and sidecar.rows != expected:
            rows = (f"one per point, with its original id ({old.id_kind}) and payload" if mapped
                    else "one per point with a payload")
            raise InputError(
                f"payload sidecar holds {sidecar.rows} rows, but vecferry wrote {expected} with "
                f"this index: {rows}", location=Location(source=side_name),
                hint="it belongs to another index or was cut short; put back the sidecar "
                     "written with this index")
        return sidecar

    def _refuse_payloads_beside_sidecar(self, payloads: str) -> None:
        """``UsageError``: joined by id, ``payloads`` would replace every payload the sidecar
        holds, without a word."""
        side_name = self.location + PAYLOADS_SUFFIX
        assert self._sidecar is not None
        if self._sidecar.has_ids:
            # moving the sidecar away is no way out here: the points would get ids 0..n-1
            hint = ("the sidecar holds the original ids and the payloads vecferry wrote with "
                    "the index; drop --payloads to keep those payloads, or convert without "
                    "--payloads and change the payloads in that output")
        else:
            hint = (f"the sidecar holds the payloads vecferry wrote with the index; drop "
                    f"--payloads to keep them, or, to join {payloads} by FAISS id instead, move "
                    f"{side_name} and {self.location}{MANIFEST_SUFFIX} away")
        raise UsageError(
            f"--payloads {payloads} and the payload sidecar {side_name} would both give the "
            "payloads", location=Location(source=self.location), hint=hint)

    def _open_docstore(self, payloads: str | None) -> LangchainDocstore | LlamaIndexNodes | None:
        """The documents a framework saved beside the index, or None: LlamaIndex's stores
        (``docstore.json`` and ``index_store.json`` beside ``default__vector_store.json``), or
        LangChain's docstore (``<name>.pkl`` next to ``<name>.faiss``). vecferry's own sidecars
        come first: a pickle beside an index that has them is left alone, with a warning."""
        if is_llamaindex_index(self.location):
            if payloads is not None:
                raise UsageError(
                    f"--payloads {payloads} and the LlamaIndex docstore beside the index would "
                    "both give the payloads", location=Location(source=self.location),
                    hint="the docstore gives each point its node id, text and metadata; to join "
                         f"{payloads} by FAISS id instead, copy the index file elsewhere")
            nodes = LlamaIndexNodes(self.location)
            if nodes.unindexed:
                self.context.warn(
                    f"{nodes.location}: {nodes.unindexed} of its {nodes.documents} nodes are in "
                    f"no vector index of {INDEX_STORE_FILE} (a docstore can serve several "
                    "indexes); they have no vector here and are not read")
            return nodes
        stem, dot, ext = self.location.rpartition(".")
        if not dot or ext.lower() not in ("faiss", "index"):
            return None
        pkl = f"{stem}.pkl"
        try:
            exists = as_path(pkl).exists()
        except VecferryError:
            return None
        if not exists:
            return None
        if self._sidecar_manifest is not None:
            self.context.warn(f"{pkl}: not read; the index has vecferry's sidecars "
                              f"({self.location}{MANIFEST_SUFFIX}), which give its ids and "
                              "payloads")
            return None
        with open_read(pkl) as fh:
            store = LangchainDocstore.load(fh, pkl)
        if store is None:
            self.context.warn(f"{pkl}: not read, it is not LangChain's FAISS docstore")
            self._foreign_pickle = True
            return None
        if payloads is not None:
            raise UsageError(
                f"--payloads {payloads} and the LangChain docstore {pkl} would both give the "
                "payloads", location=Location(source=self.location),
                hint=f"the docstore gives each point its docstore id and its text and metadata; "
                     f"to join {payloads} by FAISS id instead, move {pkl} away")
        return store

    def count(self) -> int | None:
        return self._count

    def _added_positions(self, piece: _Piece) -> np.ndarray | None:
        """Each row's place in the order the points were added to the index, where the read
        tells it: flat storage (also under HNSW, Refine) holds the points in that order, and
        the storage of an id map holds positions into it, which the id map holds in that
        order. None for bare inverted lists, read list by list, whose ids are the only key."""
        if piece.ids is None:
            return np.arange(piece.position, piece.position + len(piece.codes), dtype=np.int64)
        return piece.ids if self.plan.id_maps else None

    def _stream_ids(self, piece: _Piece) -> np.ndarray:
        """The FAISS ids of ``piece``'s rows; ``InputError`` for a position past the id map
        (see ``_inconsistent``)."""
        n = len(piece.codes)
        ids = piece.ids if piece.ids is not None else np.arange(
            piece.position, piece.position + n, dtype=np.int64)
        for id_map in reversed(self.plan.id_maps):
            # the storage's ids are positions into the innermost id map, and so on outwards;
            # indexed with one past its end numpy raises, with a negative one it counts back
            outside = (ids < 0) | (ids >= len(id_map))
            if outside.any():
                raise self._inconsistent(f"position {int(ids[np.argmax(outside)])} into "
                                         f"its id map of {len(id_map)} entries")
            ids = id_map[ids]
        return ids

    def _inconsistent(self, held: str) -> InputError:
        """The error of an id map the inverted lists under it disagree with (they ``held``
        that position): the lists hold positions into it, and faiss's ``remove_ids`` on an
        ``IDMap`` / ``IDMap2`` around an IVF index compacts the map but leaves the lists'
        positions as they were."""
        return InputError(
            f"FAISS index {_describe(self.plan.chain)} is inconsistent: its inverted lists hold "
            f"{held}: the id map and the lists disagree, as faiss's remove_ids on an IDMap or "
            "IDMap2 around an IVF index leaves them", location=Location(source=self.location),
            hint="which id each vector has is lost: build the index again from its source; to "
                 "remove ids later, use the IVF index without the IDMap, whose lists keep the "
                 "ids themselves")

    def worker_options(self) -> dict[str, Any]:
        """Options a partition worker opens this source with, so it does not decide again
        what this reader decided: the Dot or Cosine of an inner-product index, which can
        take a pass over every vector (``_norms``)."""
        distance = self.manifest.vectors[0].distance
        if self.plan.metric == faiss.METRIC_INNER_PRODUCT and distance in ("Dot", "Cosine"):
            return {"distance": distance}
        return {}

    def partitions(self, target_bytes: int) -> list[dict[str, Any]]:
        """Storage ranges of about ``target_bytes`` of codes: flat and HNSW storage by
        position, IVF by whole inverted lists (from the list sizes). None with a LangChain or
        LlamaIndex docstore: every process would load all of it, which costs more than the
        index."""
        if self._docstore is not None:
            return []
        storage = self.plan.storage
        code_size = max(1, storage.code_size)
        if isinstance(storage, _IvfStorage):
            units: Any = ((int(n), int(n) * code_size) for n in storage.sizes)
        else:
            units = row_blocks(storage.ntotal, code_size, target_bytes)
        return pack(units, target_bytes)

    def read_partition(self, spec: dict[str, Any], batch_size: int
                       ) -> Iterator[pa.RecordBatch]:
        """Storage rows ``spec["start"]`` to ``spec["stop"]``; the partition that reaches the
        end also rejects payload entries no vector of the whole index has."""
        return self.batches(batch_size, int(spec["start"]), stop=int(spec["stop"]))

    def batches(self, batch_size: int, start: int = 0, stop: int | None = None
                ) -> Iterator[pa.RecordBatch]:
        """Batches of at most ``batch_size`` rows from storage row ``start`` (to ``stop``), in
        storage order.

        Ends (when run to the end of the index) by rejecting the bad entries of the payloads
        file and the payload entries whose id has no vector.
        """
        if batch_size <= 0:
            raise UsageError("batch size must be positive")
        to_end = stop is None or stop >= self.plan.storage.ntotal
        table = self._payloads()
        if (table is not None or self._docstore is not None) and start > 0 and to_end:
            # rows before ``start`` were read by an earlier run (or partition): their payloads
            # are not unmatched
            seen = 0
            for piece in self.plan.storage.pieces(0, 1 << 16):
                if seen >= start:
                    break
                ids = self._stream_ids(piece)[: start - seen]
                seen += len(ids)
                ids = ids[ids >= 0]
                if self._docstore is not None:
                    self._docstore.mark(ids)
                    continue
                id_col, _ = self._id_column(ids, payloads=False)
                table.mark([str(i) for i in decode_ids(id_col, self.manifest.id_kind)])
        pending: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []
        rows = 0
        end = self.plan.storage.ntotal if stop is None else min(stop, self.plan.storage.ntotal)
        pos = start
        # bounds are checked per piece (``_stream_ids``); a position given twice only shows
        # over the read (of this range: a partition sees its own), checked a batch at a time
        # (an IVF's pieces can be a few rows each)
        met = (_Positions(len(self.plan.id_maps[-1]))
               if self.plan.id_maps and isinstance(self.plan.storage, _IvfStorage) else None)

        def check(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]) -> None:
            if met is not None:
                # ``added`` are the positions into the innermost id map (``_added_positions``)
                again = met.add(np.concatenate([p[2] for p in parts if p[2] is not None]))
                if again is not None:
                    raise self._inconsistent(f"position {again} into its id map for two "
                                             "vectors")
        for piece in self.plan.storage.pieces(start, batch_size):
            if pos >= end:
                break
            ids = self._stream_ids(piece)
            added = self._added_positions(piece)
            vectors = self.plan.decode(piece.codes, piece.listno)
            if pos + len(ids) > end:
                ids, vectors = ids[:end - pos], vectors[:end - pos]
                added = added[:end - pos] if added is not None else None
            pos += len(ids)
            offset = 0
            while offset < len(ids):
                take = min(batch_size - rows, len(ids) - offset)
                pending.append((ids[offset:offset + take], vectors[offset:offset + take],
                                added[offset:offset + take] if added is not None else None))
                rows += take
                offset += take
                if rows == batch_size:
                    check(pending)
                    batch = self._batch(pending, start)
                    start += rows
                    pending, rows = [], 0
                    if batch is not None:
                        yield batch
        if rows:
            check(pending)
            batch = self._batch(pending, start)
            if batch is not None:
                yield batch
        if to_end:
            for problem in self._payload_problems:
                self.context.reject(problem)
            self._reject_unmatched_payloads()

    def _batch(self, parts: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]],
               first_row: int) -> pa.RecordBatch | None:
        ids = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0].copy()
        # One copy out of the (memory-mapped) index per batch; nothing keeps pointing into it.
        vectors = np.concatenate([p[1] for p in parts]) if len(parts) > 1 \
            else np.array(parts[0][1], copy=True)
        # the pieces of one index all have positions or none do
        added = None if parts[0][2] is None else np.concatenate([p[2] for p in parts])
        bad = ids < 0
        if bad.any():
            for row in np.flatnonzero(bad):
                fid = int(ids[row])
                self.context.reject(record_error(
                    f"id {fid} is negative; FAISS ids must be 0..2^63-1 to be exported",
                    source=self.location, row=first_row + int(row), point_id=fid,
                    hint="fix the ids in the index (add_with_ids), or use --on-error skip",
                    raw={"id": fid, "vector": vectors[row].tolist()}))
        if self._docstore is not None:
            lost = ~self._docstore.known(ids) & ~bad
            for row in np.flatnonzero(lost):
                reason, pid, payload = self._docstore.why(int(ids[row]))
                raw = {"id": pid, "vector": vectors[row].tolist()}
                if payload is not None:
                    raw["payload"] = payload
                self.context.reject(record_error(
                    reason, source=self._docstore.location, row=first_row + int(row),
                    point_id=pid, raw=raw, hint=self._docstore.hint))
            bad |= lost
        at = np.arange(len(ids))  # each row's place in the batch read, which errors name
        if bad.any():
            keep = ~bad
            ids, vectors, at = ids[keep], vectors[keep], at[keep]
            added = added[keep] if added is not None else None
            if len(ids) == 0:
                return None
        floats = vectors  # as the index holds them, for the rejects file
        misfit = np.zeros(len(ids), dtype=bool)
        if self._restore_dtype == "uint8":
            # the index stores floats: only whole numbers 0..255 are the uint8 values written
            with np.errstate(invalid="ignore"):
                fits = (vectors >= 0) & (vectors <= 255) & (vectors == np.rint(vectors))
            misfit = ~fits.all(axis=1)
            vectors = np.where(misfit[:, None], 0, vectors).astype(np.uint8)
        elif self._restore_dtype:
            vectors = vectors.astype(np.float16)
        spec = self.manifest.vectors[0]
        values = pa.array(vectors.reshape(-1), type=pa.from_numpy_dtype(vectors.dtype))
        vec_col = pa.FixedSizeListArray.from_arrays(values, spec.size)
        id_col, side = self._id_column(ids, added)
        payload_col = side.get(PAYLOAD_COLUMN)
        if payload_col is None:
            payload_col = pa.nulls(len(ids), type=pa.string())
        keep = np.ones(len(ids), dtype=bool)
        table = self._payloads()
        if table is not None:
            pids = decode_ids(id_col, self.manifest.id_kind)
            texts = table.take([str(i) for i in pids])
            for row, text in enumerate(texts):
                entry = None if text is None else bad_payload_entry(text)
                if entry is None:
                    continue
                reason, payload, where, hint = entry
                keep[row] = False
                texts[row] = None
                # the whole point, so the line converts once its payload is fixed
                self.context.reject(record_error(
                    reason, source=self._payloads_path, point_id=pids[row],
                    hint=f"{hint}; the point is left out until then",
                    raw={"id": pids[row], "vector": floats[row].tolist(), "payload": payload},
                    **where))
            payload_col = pa.array(texts, type=pa.string())
        batch = pa.RecordBatch.from_arrays([id_col, vec_col, payload_col], schema=self.schema)
        for row in np.flatnonzero(misfit & keep):
            keep[row] = False
            self._reject_misfit(batch, int(row), first_row + int(at[row]), floats[row])
        if not keep.all():
            batch = batch.filter(pa.array(keep))
            return batch if batch.num_rows else None
        return batch

    def _reject_misfit(self, batch: pa.RecordBatch, row: int, index_row: int,
                       values: np.ndarray) -> None:
        """Reject the point of ``batch``'s ``row`` (``index_row`` of the index), whose vector
        (``values``, as the index holds them) is not the uint8 vector the manifest sidecar
        says it is."""
        point = point_from_row(batch, row, self.manifest)
        point["vector"] = [float(v) if np.isfinite(v) else None for v in values.tolist()]
        odd = next(float(v) for v in values.tolist()
                   if not (0 <= v <= 255 and float(v).is_integer()))
        manifest = self.location + MANIFEST_SUFFIX
        self.context.reject(record_error(
            f"vector holds {odd!r}, not an integer in 0..255, but {manifest} records uint8 "
            "vectors", source=self.location, row=index_row, point_id=point["id"],
            hint="the index was changed after vecferry wrote it: write it again from its "
                 "source, or use --on-error skip to keep such points in the rejects file",
            raw=point))

    def _id_column(self, ids: np.ndarray, added: np.ndarray | None = None, *,
                   payloads: bool = True) -> tuple[pa.Array, dict[str, pa.Array]]:
        """The stream id column for FAISS ids, and the sidecar's columns for them (if any):
        found by the points' ``added`` positions where the read knows them (see
        ``_added_positions``), else by FAISS id. Without ``payloads``, only the ids are
        wanted: a sidecar that holds no original ids is not read."""
        if self._docstore is not None:
            side, _ = self._docstore.lookup(ids)  # every id known: ``_batch`` rejected the rest
            return side["id"], side
        plain = pa.array(ids.view(np.uint64), type=pa.uint64())
        if self._sidecar is None or not (payloads or self._sidecar.has_ids):
            return plain, {}
        side, found = self._sidecar.lookup(ids, added)
        if self._sidecar.repeats[0] and not self._repeats_told:
            self._repeats_told = True
            count, first = self._sidecar.repeats
            self.context.warn(
                f"{self.location}{PAYLOADS_SUFFIX}: {count} of its rows give a FAISS id an "
                f"earlier row gives (FAISS id {first} among them), and it records no positions "
                "to tell the points of such an id apart (an older vecferry wrote it): each of "
                "them is read with the first row's payload, and the later rows' payloads are "
                "not read; write the index again from its source to keep them")
        if not self._sidecar.has_ids:
            return plain, side
        if not found.all():
            missing = int(ids[np.flatnonzero(~found)[0]])
            raise InputError(f"id mapping sidecar has no entry for FAISS id {missing}",
                             location=Location(source=self.location + PAYLOADS_SUFFIX),
                             hint="the index changed after vecferry wrote it; delete "
                                  "the sidecars to read plain FAISS ids")
        return side["id"], side

    def _payloads(self) -> PayloadTable | None:
        """The ``payloads=`` file's table, loaded on first use (None without one)."""
        if self._payloads_path is not None and self._payload_table is None:
            fail = self.context.on_error == "fail"
            collect = self.context if fail else Context("skip", self._payload_problems.append)
            self._payload_table = load_payloads(self._payloads_path, collect, keep_bad=not fail)
        return self._payload_table

    def _reject_unmatched_payloads(self) -> None:
        if self._docstore is not None and not self._unmatched_reported:
            self._unmatched_reported = True
            for pid, payload, why in self._docstore.unused():
                self.context.reject(record_error(
                    f"{self._docstore.entry} {pid!r} has no vector in the FAISS index: {why}",
                    source=self._docstore.location, point_id=pid, raw={"id": pid,
                                                                       "payload": payload},
                    hint="check the docstore belongs to this index; use --on-error skip to "
                         "write such documents to the rejects file and carry on"))
        table = self._payloads()
        if table is None or self._unmatched_reported:
            return
        self._unmatched_reported = True
        places: Generator[tuple[str, dict[str, int]], None, None] | None = None

        def place(key: str) -> dict[str, int]:
            """The line or row of ``key``'s entry: the table keeps none, so the file is read
            again, once, in step with ``unused`` (both in file order, the first entry of an
            id being the one kept)."""
            nonlocal places
            if places is None:
                places = _entry_places(self._payloads_path)
            for k, where in places:
                if k == key:
                    return where
            return {}

        try:
            for key, text in table.unused():
                pid: Any = int(key) if key.isdigit() else key
                hint = ("check the payloads belong to this index; use --on-error skip to write "
                        "such entries to the rejects file and carry on")
                entry = bad_payload_entry(text)
                if entry is not None:
                    reason, payload, where, _ = entry
                    self.context.reject(record_error(
                        f"{reason}, and has no vector in the FAISS index",
                        source=self._payloads_path, point_id=pid, hint=hint,
                        raw={"id": pid, "payload": payload}, **where))
                    continue
                self.context.reject(record_error(
                    f"payload for id {pid!r} has no vector in the FAISS index",
                    source=self._payloads_path, point_id=pid, hint=hint,
                    raw={"id": pid, "payload": loads_exact(text)}, **place(key)))
        finally:
            if places is not None:
                places.close()

    @contextlib.contextmanager
    def every_list_searched(self) -> Iterator[int | None]:
        """Make ``search`` visit every inverted list of an IVF index inside the ``with`` block.

        Yields the number of lists now searched (``nprobe`` set to ``nlist``) for an index with
        inverted lists (``IndexIVF*`` or ``IndexBinaryIVF``, also inside ``IDMap``,
        ``PreTransform`` or ``Refine``), else None and changes nothing. An IVF index then
        compares each query with every stored code, so it misses no neighbour for having
        skipped a list (lossy codes still rank approximately). The file's own ``nprobe`` is
        put back when the block ends, also on an exception. Not safe while another thread
        searches this reader.
        """
        ivf = _ivf_of(self._index)
        if ivf is None:
            yield None
            return
        before = ivf.nprobe
        ivf.nprobe = ivf.nlist
        try:
            yield int(ivf.nlist)
        finally:
            ivf.nprobe = before

    def search(self, queries: np.ndarray, k: int, vector: str) -> list[list[Any]]:
        """Ids of the ``k`` nearest points to each query, best first, through the index itself.

        Used by ``verify`` for search parity; ids are mapped back like ``batches`` maps them
        (sidecar ids restored). Binary indexes take the queries as packed uint8 codes.
        """
        q = np.ascontiguousarray(queries, dtype=np.uint8 if self.binary else np.float32)
        _, labels = self._index.search(q, k)
        out = []
        for row in labels:
            found = row[row >= 0]
            if self._docstore is not None:
                found = found[self._docstore.known(found)]
            ids, _ = self._id_column(found, payloads=False)
            out.append(decode_ids(ids, self.manifest.id_kind))
        return out

    def close(self) -> None:
        self._index = None
        self.plan = _Plan()
        if self._payload_table is not None:
            self._payload_table.close()
            self._payload_table = None
        if self._sidecar is not None:
            self._sidecar.close()
        if self._docstore is not None:
            self._docstore.close()
        if self._copy is not None:
            self._copy.cleanup()


def _ivf_of(index: Any) -> Any:
    """The inverted-file index inside a FAISS index (through IDMap, PreTransform, Refine), or
    None."""
    if isinstance(index, faiss.IndexBinary):
        # faiss has no extract function for binary indexes: only IDMap wraps one
        while index is not None:
            index = faiss.downcast_IndexBinary(index)
            if isinstance(index, faiss.IndexBinaryIVF):
                return index
            index = getattr(index, "index", None)
        return None
    return faiss.try_extract_index_ivf(index)


# ------------------------------------------------------------------------------------- writer


_METRIC_OF = {"Euclid": faiss.METRIC_L2, "Dot": faiss.METRIC_INNER_PRODUCT,
              "Cosine": faiss.METRIC_INNER_PRODUCT, "Manhattan": faiss.METRIC_L1}
#: training sample cap, in bytes of float32 vectors
TRAIN_BYTES = 256 << 20


def _takes_ids(index: Any) -> bool:
    """Whether ``add_with_ids`` works on ``index`` without an ``IDMap`` around it."""
    if isinstance(index, (faiss.IndexIDMap, faiss.IndexIDMap2, faiss.IndexIVF,
                          faiss.IndexBinaryIDMap, faiss.IndexBinaryIDMap2,
                          faiss.IndexBinaryIVF)):
        return True
    if isinstance(index, faiss.IndexPreTransform):
        return _takes_ids(faiss.downcast_index(index.index))
    return False


def _train_rows_needed(index: Any) -> int:
    """Rows FAISS wants to train ``index`` well (39 per k-means centroid, as FAISS warns)."""
    need = 1
    for sub in _walk(index):
        if hasattr(sub, "nlist"):
            need = max(need, 256 * int(sub.nlist))
        if hasattr(sub, "pq"):
            need = max(need, 39 * (1 << int(sub.pq.nbits)))
    return max(need, 1000)


def _walk(index: Any) -> Iterator[Any]:
    yield index
    for attr in ("index", "base_index"):
        inner = getattr(index, attr, None)
        if inner is not None and not isinstance(inner, (int, float)):
            try:
                yield from _walk(faiss.downcast_index(inner))
            except (TypeError, AttributeError, RuntimeError):
                return


class _IdSet:
    """A set of int64 ids, as sorted runs: a new run is merged into the one before it while
    it is at least half that one's size, so there are O(log n) runs, adding n ids costs
    O(n log n) and looking one up O(log^2 n). 8 bytes an id: the writer's index keeps at least
    that for each id in memory anyway (FAISS builds it there)."""

    def __init__(self) -> None:
        self._runs: list[np.ndarray] = []

    def contains(self, ids: np.ndarray) -> np.ndarray:
        out = np.zeros(len(ids), dtype=bool)
        for run in self._runs:
            at = np.minimum(np.searchsorted(run, ids), len(run) - 1)
            out |= run[at] == ids
        return out

    def add(self, ids: np.ndarray) -> None:
        """Add ``ids``, none of them in the set already."""
        if not len(ids):
            return
        self._runs.append(np.sort(ids))
        while len(self._runs) > 1 and 2 * len(self._runs[-1]) >= len(self._runs[-2]):
            last = self._runs.pop()
            # a stable sort of two sorted runs is one merge pass
            self._runs[-1] = np.sort(np.concatenate([self._runs[-1], last]), kind="stable")


#: what to do about an integer id FAISS's int64 labels cannot hold
BIG_ID_HINT = ("read a JSONL, mapped Parquet or VDF source with --id-kind mixed (in Python: "
               "reader_options={\"id_kind\": \"mixed\"}): its ids are then stored as 0..n-1 in "
               "the index, with the originals in its payload sidecar, and read back as they "
               "were; or use --on-error skip (on_error=\"skip\") to leave such points in the "
               "rejects file")
#: what ``distance=`` may name, with the metric it gives (Cosine: normalized vectors, IP)
DISTANCES = tuple(_METRIC_OF)


class FaissWriter(ClosingWriter):
    """Build a FAISS index from a point stream; the index file plus sidecars (module docstring).

    Raises ``UnsupportedError`` before writing anything when the stream holds what FAISS cannot
    (sparse or multi vectors, several dense vectors and no ``vector=NAME``), when the index
    factory builds an index ``FaissReader`` cannot read back, or a lossy one without
    ``allow_lossy``; ``UsageError`` for an index factory string FAISS rejects or an unknown
    ``distance``. Points without the vector, with NaN/inf, with an integer id past 2^63-1, or
    (bare inverted lists only, see the module docstring) repeating an id already written where
    a payload is involved go to ``context.reject``.

    ``distance`` (Cosine, Euclid, Dot, Manhattan) is used when the stream's vector has none;
    without either the index is L2 and the manifest sidecar records Euclid.
    """

    def __init__(self, location: str, schema: pa.Schema, *, context: Context,
                 overwrite: bool = False, index_factory: str | None = None,
                 vector: str | None = None, train_rows: int | None = None,
                 allow_lossy: bool = False, distance: str | None = None, **options: Any):
        reject_unknown_options("faiss", options)
        if distance is not None and distance not in DISTANCES:
            raise UsageError(f"unknown distance {distance!r}",
                             hint=f"choose one of {', '.join(DISTANCES)}")
        self.location = location
        self.context = context
        manifest = manifest_of(schema)
        self.in_manifest = manifest
        dense = [v for v in manifest.vectors if v.kind == "dense"]
        others = [v for v in manifest.vectors if v.kind != "dense"]

        def label(v: VectorSpec) -> str:
            return repr(v.name) if v.name else "(unnamed)"

        if vector is not None:
            chosen = [v for v in manifest.vectors if v.name == vector]
            if not chosen:
                raise UsageError(f"no vector named {vector!r} in the stream",
                                 hint="vectors: " + ", ".join(label(v) for v in
                                                              manifest.vectors))
            if chosen[0].kind != "dense":
                raise UnsupportedError(f"vector {vector!r} is {chosen[0].kind}; a FAISS index "
                                       "holds dense vectors only")
            spec = chosen[0]
            dropped = [label(v) for v in manifest.vectors if v is not spec]
            if dropped:
                context.warn(f"{location}: only vector {label(spec)} is written; FAISS holds one "
                             f"vector per point, dropped: {', '.join(dropped)}")
        else:
            if others:
                names = ", ".join(f"{v.name or '(unnamed)'} ({v.kind})" for v in others)
                raise UnsupportedError(
                    f"a FAISS index cannot hold these vectors: {names}",
                    hint="choose one dense vector with --vector NAME (in Python: "
                         "writer_options={\"vector\": NAME})"
                    if dense else "convert to Parquet or JSONL instead")
            if not manifest.vectors:
                raise UnsupportedError("the stream has no vectors (its points carry ids and "
                                       "payloads only); a FAISS index holds vectors",
                                       location=Location(location),
                                       hint="convert to Parquet or JSONL instead")
            if len(dense) != 1:
                raise UnsupportedError(
                    f"the stream has {len(dense)} dense vectors "
                    f"({', '.join(label(v) for v in dense)}); a FAISS index holds one",
                    hint="choose one with --vector NAME (in Python: writer_options={\"vector\": "
                         "NAME})")
            spec = dense[0]
        self.spec = spec
        # What the index holds as read back: this one vector, under the stream's id kind.
        self._held = Manifest(vectors=[VectorSpec(spec.name, "dense", spec.size, spec.datatype,
                                                  spec.distance)], id_kind=manifest.id_kind)
        self.binary_bits = (manifest.extra.get("faiss") or {}).get("binary_bits")
        if self.binary_bits and spec.datatype != "uint8":
            self.binary_bits = None
        self.distance = spec.distance
        self.distance_given = False
        if distance is not None and self.binary_bits:
            context.warn(f"{location}: distance {distance} (--distance) is not used: the vectors "
                         "are packed bits, and a binary index compares them by Hamming distance")
        elif distance is not None and spec.distance is None:
            self.distance, self.distance_given = distance, True
        elif distance is not None and distance != spec.distance:
            context.warn(f"{location}: distance {distance} (--distance) is not used: the stream "
                         f"records {spec.distance}")
        self.cosine = self.distance == "Cosine" and not self.binary_bits
        metric = _METRIC_OF.get(self.distance or "Euclid", faiss.METRIC_L2)
        self.distance_default = self.distance is None and not self.binary_bits
        if self.distance_default:
            context.warn(f"{location}: the stream has no distance; the index uses L2 (Euclid); "
                         "pass --distance NAME (in Python: writer_options={\"distance\": NAME}) to "
                         "choose")
            # the manifest records what the index uses, as for a distance given
            self.distance = "Euclid"
        assert spec.size is not None
        self.factory = index_factory or ("IDMap2,BFlat" if self.binary_bits else "IDMap2,Flat")
        try:
            if self.binary_bits:
                index = faiss.index_binary_factory(int(self.binary_bits), self.factory)
                if not _takes_ids(index):
                    index = faiss.index_binary_factory(int(self.binary_bits),
                                                       "IDMap2," + self.factory)
            else:
                index = faiss.index_factory(int(spec.size), self.factory, metric)
                if not _takes_ids(index):
                    index = faiss.index_factory(int(spec.size), "IDMap2," + self.factory,
                                                metric)
        except RuntimeError as exc:
            raise self._factory_error(exc, int(spec.size)) from exc
        # The reader's own plan of the (empty) index: what it cannot read back is refused,
        # and what it reads as lossy is lossy here, so writer and reader always agree.
        probe = _Plan()
        try:
            _plan(index, probe)
        except UnsupportedError as exc:
            raise UnsupportedError(
                f"index factory {self.factory!r} builds {_describe(probe.chain)}, which vecferry "
                f"cannot read back ({exc.message})", location=Location(source=location),
                hint=f"choose another --index-factory; {exc.hint}") from exc
        self.index_type = _describe(probe.chain)
        self.lossy = probe.lossy
        # Bare inverted lists are read back list by list, where only the ids tell points
        # apart; every other storage is read in the order the points were added (positions).
        by_list = isinstance(probe.storage, _IvfStorage) and not probe.id_maps
        self.metric_name = ("Hamming" if self.binary_bits
                            else _METRICS.get(probe.metric, (f"metric {probe.metric}",))[0])
        del probe  # it holds views into the index
        if self.lossy and not allow_lossy:
            raise UnsupportedError(
                f"index factory {self.factory!r} builds a lossy index, {self.index_type}: "
                f"{', '.join(self.lossy)} {'keeps' if len(self.lossy) == 1 else 'keep'} "
                "approximations of the vectors, not the vectors",
                location=Location(source=location),
                hint="pass --allow-lossy to write it anyway, or choose an exact index such as "
                     "'IDMap2,Flat', 'HNSW32' or 'IVF1024,Flat'")
        if self.lossy:
            context.warn(f"{location}: index {self.factory!r} is lossy ({', '.join(self.lossy)}); "
                         "it keeps approximations of the vectors, read back only with "
                         "--allow-lossy")
        # A lossy index reads back approximations: a digest of the input would not match it.
        self.digest = None if self.lossy else StreamDigest(self._held)
        self.index = index
        self.map_ids = manifest.id_kind != "int"
        # Read back by id alone, two points of one id cannot be told apart, nor which of them
        # a payload belongs to: the later ones are refused where that matters (``_repeated``).
        # Mapped ids are 0..n-1, each given once.
        self._ids_seen = _IdSet() if by_list and not self.map_ids else None
        self._ids_paid = _IdSet() if self._ids_seen is not None else None
        self.needs_training = not index.is_trained
        cap = max(1, TRAIN_BYTES // max(1, 4 * int(spec.size)))
        self.train_target = train_rows or min(_train_rows_needed(index), max(cap, 1000))
        self._train_buffer: list[tuple[np.ndarray, np.ndarray]] = []
        self._buffered = 0
        self.trained_on = 0
        self.normalized = 0
        self.next_faiss_id = 0
        self.next_position = 0  # the next point's place in the order points are added
        self.added = 0

        # asked as a destination's: a store refusing the question refuses writing there
        side_manifest = output_path(location + MANIFEST_SUFFIX)
        side_payloads = output_path(location + PAYLOADS_SUFFIX)
        if not overwrite:
            for p in (side_manifest, side_payloads):
                if p.exists():
                    from vecferry.errors import OutputExistsError

                    raise OutputExistsError("output sidecar exists",
                                            location=Location(source=str(p)),
                                            hint="pass --overwrite to replace it")
        # staged: faiss writes local files; a remote target is uploaded on commit
        self._out = AtomicPath(location, overwrite=overwrite, staged=True)
        self._out_manifest = AtomicPath(side_manifest, overwrite=True, staged=True)
        self._out_payloads = AtomicPath(side_payloads, overwrite=True, staged=True)
        self._stale_payloads = side_payloads if side_payloads.exists() else None
        # Integer ids are the FAISS ids, and one may be given to several points: each row
        # records its point's position too, which the reader joins on wherever its read gives
        # positions. Mapped ids are positions already.
        self._sidecar_schema = pa.schema(
            [("faiss_id", pa.int64())]
            + ([("id", pa.string())] if self.map_ids else [(POSITION_COLUMN, pa.int64())])
            + [(PAYLOAD_COLUMN, pa.string())])
        self._sidecar_writer: pq.ParquetWriter | None = None
        self._payload_rows = 0

    def _factory_error(self, exc: RuntimeError, size: int) -> UsageError:
        """The error of a factory string FAISS refused: where it builds the other kind of
        index (binary ``B...`` for float vectors, or the reverse), FAISS's own message says
        only that it cannot parse it, so this one says which kind the stream needs."""
        see = "see https://github.com/facebookresearch/faiss/wiki/The-index-factory"
        other = (faiss.index_factory, size * 8) if self.binary_bits else (
            faiss.index_binary_factory, 8 * size)
        try:
            other[0](other[1], self.factory)
        except RuntimeError:
            return UsageError(f"FAISS cannot build index factory {self.factory!r}: "
                              f"{_faiss_message(exc)}", location=Location(source=self.location),
                              hint=see)
        if self.binary_bits:
            return UsageError(
                f"index factory {self.factory!r} builds a float index, but the stream holds "
                f"packed bits (uint8[{size}], the {self.binary_bits} bits of a binary FAISS "
                "index's vectors)", location=Location(source=self.location),
                hint="use a binary factory, whose names start with B: 'IDMap2,BFlat' (the "
                     f"default), 'BHNSW32', 'BIVF1024', ...; {see}")
        return UsageError(
            f"index factory {self.factory!r} builds a binary index, but the stream holds float "
            f"vectors (float32[{size}])", location=Location(source=self.location),
            hint=f"use a float factory: 'IDMap2,Flat' (the default), 'HNSW32', 'IVF1024,Flat', "
                 f"...; {see}")

    # -- per batch

    def write_batch(self, batch: pa.RecordBatch) -> None:
        manifest = self.in_manifest
        col = batch.column(self.spec.column)
        keep = np.ones(batch.num_rows, dtype=bool)
        if col.null_count:
            valid = col.is_valid().to_numpy(zero_copy_only=False)
            for row in np.flatnonzero(~valid):
                keep[row] = False
                self._reject(batch, int(row), f"point has no vector {self.spec.name!r}"
                             if self.spec.name else "point has no vector")
        if self.spec.datatype != "uint8":
            for row in non_finite_rows(batch, manifest):
                if keep[row]:
                    keep[row] = False
                    self._reject(batch, row, "vector holds NaN or infinity; FAISS cannot "
                                             "index it")
        ids_col = batch.column(ID_COLUMN)
        if not self.map_ids:
            raw_ids = ids_col.to_numpy(zero_copy_only=False).astype(np.uint64, copy=False)
            too_big = raw_ids > np.uint64(_MAX_INT64)
            for row in np.flatnonzero(too_big & keep):
                keep[row] = False
                self._reject(batch, int(row), f"id {int(raw_ids[row])} does not fit FAISS's "
                                              "int64 ids (max 2^63-1)", hint=BIG_ID_HINT)
            if self._ids_seen is not None:
                self._repeated(batch, raw_ids.view(np.int64), keep)
        if not keep.all():
            batch = batch.filter(pa.array(keep))
            col = batch.column(self.spec.column)
            ids_col = batch.column(ID_COLUMN)
        n = batch.num_rows
        if n == 0:
            return
        flat = col.flatten().to_numpy(zero_copy_only=False)
        if self.binary_bits:
            x = np.ascontiguousarray(flat.reshape(n, self.spec.size), dtype=np.uint8)
        else:
            x = np.ascontiguousarray(flat.reshape(n, self.spec.size), dtype=np.float32)
            if self.cosine:
                x = self._normalize(x)
        if self.map_ids:
            fids = np.arange(self.next_faiss_id, self.next_faiss_id + n, dtype=np.int64)
            self.next_faiss_id += n
        else:
            fids = ids_col.to_numpy(zero_copy_only=False).astype(np.int64)
        # every point written here is added, in this order (after training, if buffered)
        positions = np.arange(self.next_position, self.next_position + n, dtype=np.int64)
        self.next_position += n
        self._write_sidecar(fids, batch, positions)
        if self.digest is not None:
            held = col
            if x.dtype == np.float32 and self.spec.datatype == "float32":
                held = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), self.spec.size)
            self.digest.update(pa.RecordBatch.from_arrays(
                [ids_col, held, batch.column(PAYLOAD_COLUMN)], schema=self._held.schema()))
        if self.needs_training and self.trained_on == 0:
            self._train_buffer.append((x, fids))
            self._buffered += n
            if self._buffered >= self.train_target:
                self._train_and_flush()
            return
        self._add(x, fids)

    def _repeated(self, batch: pa.RecordBatch, ids: np.ndarray, keep: np.ndarray) -> None:
        """Reject (and clear in ``keep``) the points of ``batch`` that repeat an id already
        written where a payload is involved: read back list by list, by id alone, an index of
        inverted lists would give an id's payload to each of its points, or to the wrong one.
        Points of a repeated id that have no payload, after one without a payload, stay: they
        read back as written. The first point of an id is always written."""
        rows = np.flatnonzero(keep)
        if not len(rows):
            return
        assert self._ids_seen is not None and self._ids_paid is not None
        pids = ids[rows]
        paid = batch.column(PAYLOAD_COLUMN).is_valid().to_numpy(zero_copy_only=False)[rows]
        seen = self._ids_seen.contains(pids)
        _, first, counts = np.unique(pids, return_index=True, return_counts=True)
        alone = np.zeros(len(rows), dtype=bool)
        alone[first[counts == 1]] = True
        # the usual case, an id met for the first time and once in the batch, is decided at
        # once; the others in order, each knowing what the ones before it did
        simple = alone & ~seen
        new_ids, new_paid = [pids[simple]], [pids[simple & paid]]
        state: dict[int, bool] = {}  # id -> whether its written point has a payload
        for i in np.flatnonzero(~simple):
            pid = int(pids[i])
            if pid not in state:
                if not seen[i]:
                    state[pid] = bool(paid[i])  # the id's first point: written
                    new_ids.append(pids[i:i + 1])
                    if paid[i]:
                        new_paid.append(pids[i:i + 1])
                    continue
                state[pid] = bool(self._ids_paid.contains(pids[i:i + 1])[0])
            if not (state[pid] or paid[i]):
                continue  # no payload on either side: nothing to tell apart
            row = int(rows[i])
            keep[row] = False
            point = point_from_row(batch, row, self.in_manifest)
            self.context.reject(record_error(
                f"id {pid} was given to an earlier point too, and {self.index_type} is read "
                "back list by list, where the points of one id cannot be told apart: their "
                "payloads would be mixed up", source=self.location, point_id=point["id"],
                raw=point,
                hint="keep one point per id (the first is written), or choose an index read "
                     "back in the order written, which keeps each point of an id with its own "
                     "payload: 'IDMap2,Flat' (the default), 'HNSW32', or the IVF inside an "
                     "IDMap2 ('IDMap2,IVF1024,Flat')"))
        self._ids_seen.add(np.concatenate(new_ids))
        self._ids_paid.add(np.concatenate(new_paid))

    def _normalize(self, x: np.ndarray) -> np.ndarray:
        """Unit-length rows for Cosine; rows already unit length are kept bit for bit."""
        norms = np.linalg.norm(x.astype(np.float64), axis=1)
        off = np.abs(norms - 1.0) > UNIT_TOLERANCE
        if off.any():
            x = x.copy()
            zero = norms == 0
            scale = np.where(zero, 1.0, norms)[off]
            x[off] = (x[off] / scale[:, None]).astype(np.float32)
            self.normalized += int(off.sum())
        return x

    def _reject(self, batch: pa.RecordBatch, row: int, message: str,
                hint: str | None = None) -> None:
        if hint is None:
            self.context.reject(reject_from_row(batch, row, self.in_manifest, message,
                                                self.location))
            return
        point = point_from_row(batch, row, self.in_manifest)
        self.context.reject(record_error(message, source=self.location, point_id=point["id"],
                                         raw=point, hint=hint))

    def _write_sidecar(self, fids: np.ndarray, batch: pa.RecordBatch,
                       positions: np.ndarray) -> None:
        payloads = batch.column(PAYLOAD_COLUMN)
        if not self.map_ids:
            if payloads.null_count == len(payloads):
                return
            mask = payloads.is_valid()
            has = mask.to_numpy(zero_copy_only=False)
            fids, positions = fids[has], positions[has]
            batch = batch.filter(mask)
            payloads = batch.column(PAYLOAD_COLUMN)
        cols: list[pa.Array] = [pa.array(fids, type=pa.int64())]
        if self.map_ids:
            cols.append(batch.column(ID_COLUMN).cast(pa.string()))
        else:
            cols.append(pa.array(positions, type=pa.int64()))
        cols.append(payloads)
        if self._sidecar_writer is None:
            self._sidecar_writer = pq.ParquetWriter(self._out_payloads.temp,
                                                    self._sidecar_schema, compression="zstd")
        self._sidecar_writer.write_batch(
            pa.RecordBatch.from_arrays(cols, schema=self._sidecar_schema))
        self._payload_rows += len(fids)

    def _train_and_flush(self) -> None:
        x = np.concatenate([b[0] for b in self._train_buffer])
        fids = np.concatenate([b[1] for b in self._train_buffer])
        self._train_buffer, self._buffered = [], 0
        try:
            self.index.train(x)
        except RuntimeError as exc:
            from vecferry.errors import TargetError

            raise TargetError(f"FAISS could not train {self.factory!r} on {len(x)} vectors: "
                              f"{_faiss_message(exc)}", location=Location(source=self.location),
                              hint="use a smaller nlist / codebook, more points, or another "
                                   "--index-factory") from exc
        self.trained_on = len(x)
        self._add(x, fids)

    def _add(self, x: np.ndarray, fids: np.ndarray) -> None:
        try:
            self.index.add_with_ids(x, fids)
        except RuntimeError as exc:
            from vecferry.errors import TargetError

            raise TargetError(f"FAISS refused the vectors: {_faiss_message(exc)}",
                              location=Location(source=self.location)) from exc
        self.added += len(x)

    # -- end

    def close(self) -> dict[str, Any]:
        if self.needs_training and self.trained_on == 0:
            if self._buffered == 0:
                from vecferry.errors import TargetError

                raise TargetError(f"index {self.factory!r} needs training and the stream is "
                                  "empty", location=Location(source=self.location),
                                  hint="use the default flat index for an empty stream")
            self._train_and_flush()
        writer_facts: dict[str, Any] = {
            "index_factory": self.factory,
            "index_type": type(self.index).__name__,
            "ids": "mapped to 0..n-1, originals in the payload sidecar" if self.map_ids
            else "stream ids",
        }
        if self.trained_on:
            writer_facts["trained_on"] = self.trained_on
        if self.distance_given:
            writer_facts["distance"] = f"{self.distance}, given as an option (the stream had none)"
        elif self.distance_default:
            writer_facts["distance"] = "Euclid, the default (the stream had none)"
        # the reader checks the sidecar against this: a lost or cut one must not read as "no
        # payloads"
        writer_facts["payload_sidecar_rows"] = self._payload_rows
        if self.cosine:
            writer_facts["cosine"] = "vectors normalized, inner-product index"
            writer_facts["normalized_rows"] = self.normalized
            if self.normalized:
                self.context.warn(f"{self.location}: {self.normalized} vector(s) were not unit "
                                  "length and were normalized for the Cosine distance")
        try:
            write = faiss.write_index_binary if self.binary_bits else faiss.write_index
            write(self.index, str(self._out.temp))
            fsync_path(self._out.temp)
        except RuntimeError as exc:
            from vecferry.errors import TargetError

            raise TargetError(f"cannot write the index: {_faiss_message(exc)}",
                              location=Location(source=self.location),
                              hint="check that the output's directory exists, is writable and "
                                   "has free space") from exc
        # extra["faiss"] describes the index written here, not the stream's source index (the
        # reader replaces it with what it finds, this is for whoever reads the manifest)
        index_facts: dict[str, Any] = {"index_type": self.index_type,
                                       "metric": self.metric_name, "lossy": bool(self.lossy),
                                       "faiss_version": faiss.__version__}
        if self.lossy:
            index_facts["lossy_components"] = list(self.lossy)
        if self.binary_bits:
            index_facts["binary_bits"] = self.binary_bits
            index_facts["binary_encoding"] = "packed bits, uint8[d/8], bit j in byte j//8 bit j%8"
        out_manifest = Manifest(
            vectors=[VectorSpec(name=self.spec.name, kind="dense", size=self.spec.size,
                                datatype=self.spec.datatype, distance=self.distance,
                                extra=dict(self.spec.extra))],
            id_kind=self.in_manifest.id_kind, count=self.added,
            source=self.in_manifest.source, collection=self.in_manifest.collection,
            extra={**self.in_manifest.extra, "faiss": index_facts, "faiss_writer": writer_facts},
            digest=self.digest.as_dict() if self.digest is not None else None)
        self._out_manifest.temp.write_bytes(out_manifest.to_json())
        nbytes = self._out.temp.stat().st_size + self._out_manifest.temp.stat().st_size
        files = [self.location, str(self._out_manifest.target)]
        if self._sidecar_writer is not None:
            self._sidecar_writer.close()
            self._sidecar_writer = None
            fsync_path(self._out_payloads.temp)
            nbytes += self._out_payloads.temp.stat().st_size
            files.append(str(self._out_payloads.target))
        self._out.commit()
        self._out_manifest.commit()
        if self._out_payloads.temp.exists():
            self._out_payloads.commit()
        else:
            self._out_payloads.abort()  # no payloads: its temporary's lock goes too
            if self._stale_payloads is not None and self._stale_payloads.exists():
                # an overwritten index must not pick up the previous run's payloads
                self._stale_payloads.unlink()
        return {"bytes_written": nbytes, "index_type": _index_name(self.index),
                "index_factory": self.factory, "files": files,
                **({"trained_on": self.trained_on} if self.trained_on else {}),
                **({"normalized": self.normalized} if self.cosine else {})}

    def abort(self) -> None:
        if self._sidecar_writer is not None:
            with contextlib.suppress(OSError, pa.ArrowException):
                self._sidecar_writer.close()
            self._sidecar_writer = None
        for out in (self._out, self._out_manifest, self._out_payloads):
            out.abort()


def _index_name(index: Any) -> str:
    chain = []
    for sub in _walk(index):
        chain.append(type(sub).__name__)
    return _describe(chain)
