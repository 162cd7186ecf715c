"""The folder LlamaIndex persists a FAISS-backed index into, read without LlamaIndex.

``index.storage_context.persist(folder)`` for a ``VectorStoreIndex`` over a ``FaissVectorStore``
(``llama-index-vector-stores-faiss``) writes, among others:

* ``default__vector_store.json``: the FAISS index, as ``faiss.write_index`` writes it (binary,
  whatever its name says);
* ``index_store.json``: ``{"index_store/data": {index id: {"__type__": "vector_store",
  "__data__": JSON text}}}``, whose ``nodes_dict`` maps each FAISS id (as text) to a node id;
* ``docstore.json``: ``{"docstore/data": {node id: {"__data__": node, "__type__": ...}}}``, each
  node with its ``text``, ``metadata`` and ``relationships``.

LlamaIndex's default store (``SimpleVectorStore``) writes its vectors as JSON under the same
file name instead; that is not a FAISS index, and ``vector_store_kind`` tells the two apart.

Stream mapping: the id is the node id (``uuid`` when all are UUIDs, as LlamaIndex makes them);
the payload is what LlamaIndex's vector stores store for a node (``node_to_metadata_dict``), so
``llama_index.vector_stores.qdrant.QdrantVectorStore`` reads a collection loaded from it as its
own: the node's metadata at the top level, ``_node_content`` (the node as JSON text, without its
embedding), ``_node_type`` (its class name) and ``document_id`` / ``doc_id`` / ``ref_doc_id``
(its source document's id, ``"None"`` without one).

Bad records: a FAISS id no ``nodes_dict`` names, a node id ``docstore.json`` does not hold,
a node whose ``metadata`` or ``relationships`` is not an object (``_shape_fault``; no payload
can be made of it), a node whose metadata holds NaN or Infinity (LlamaIndex writes them, as
Python's ``json`` does; JSON cannot hold them), and a node holding text with a lone surrogate
(``json.dump`` writes half of a UTF-16 pair as ``\\udXXX``; UTF-8 cannot encode it). A
``docstore.json`` holding either is read whole, up to ``WHOLE_JSON_BYTES``: a bigger one, which
is streamed, is an ``InputError`` (the streaming parser refuses NaN, and its C backend turns a
lone surrogate into ``?`` or fails on it).
Nodes that ``nodes_dict`` names for FAISS ids the index does not hold come out of ``unused``.
Nodes of the docstore that no ``nodes_dict`` names belong to no vector here (a docstore can
serve several indexes); they are counted (``unindexed``), not read.

Memory: the node payloads go to a scratch SQLite table (``payloadjoin.PayloadTable``), a big
``docstore.json`` streamed into it (ijson); only the FAISS id to node id map stays in memory.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import IO, Any

import numpy as np
import pyarrow as pa

from vecferry.errors import InputError, Location
from vecferry.fileio import loads_exact, loads_with_constants, open_read, without_bom
from vecferry.mapping import has_surrogate, non_finite, surrogate_at
from vecferry.payloadjoin import PayloadTable
from vecferry.points import dumps_payload
from vecferry.storage import as_path, file_size
from vecferry.stream import decode_ids, encode_id, id_arrow_type, kind_of_id, merge_id_kinds

VECTOR_STORE_FILE = "default__vector_store.json"
DOCSTORE_FILE = "docstore.json"
INDEX_STORE_FILE = "index_store.json"
#: a docstore.json up to this size is parsed whole; a bigger one is streamed
WHOLE_JSON_BYTES = 64 << 20
#: relationships["1"] is a node's source document (``NodeRelationship.SOURCE``)
_SOURCE = "1"
HINT = ("persist the index again with LlamaIndex (index.storage_context.persist), or use "
         "--on-error skip to write such points (with their vectors) to the rejects file and "
         "carry on")
#: a surrogate escape (``\\udXXX``) in JSON text, with the backslashes before its ``u``: an
#: even number of them is an escaped backslash and the letters, no escape
_SURROGATE_ESCAPE = re.compile(rb"(\\+)u[dD][89a-fA-F][0-9a-fA-F]{2}")
_LOW_ESCAPE = re.compile(rb"\\u[dD][c-fC-F][0-9a-fA-F]{2}")
#: bytes of a block a streamed read looks at again with the next one: enough for a high
#: half's escape and the low half after it, which a block boundary may cut
_ESCAPE_SPAN = 12


def sibling(location: str, name: str) -> str:
    """The location of ``name`` in the folder of ``location`` (a path or a URL)."""
    return f"{location.rpartition('/')[0] or '.'}/{name}"


def vector_store_kind(head: bytes) -> str:
    """``"faiss"`` or ``"simple"`` (LlamaIndex's JSON ``SimpleVectorStore``) from a vector
    store file's first bytes."""
    return "simple" if without_bom(head).lstrip()[:1] == b"{" else "faiss"


def _lone_surrogate(text: bytes, stop: int, paired: int = -1) -> tuple[int | None, int]:
    """(offset of the first lone surrogate escape in JSON ``text`` among the escapes whose
    backslashes start before ``stop``, or None; offset of the low half paired with the last
    high half looked at, or -1). A pair (``json.dump`` escapes any character past U+FFFF as
    one) is text like any other; ``paired`` is the offset of a low half a high one before
    ``text`` pairs."""
    for m in _SURROGATE_ESCAPE.finditer(text):
        if m.start() >= stop:
            break
        if len(m.group(1)) % 2 == 0:
            continue
        at = m.end(1) - 1  # the escape's own backslash
        if m.group()[-3:-2] in b"89abAB":  # a high half
            if _LOW_ESCAPE.match(text, m.end()):
                paired = m.end()
                continue
            return at, paired
        if at != paired:
            return at, paired
    return None, paired


def is_llamaindex_index(location: str) -> bool:
    """Whether ``location`` is a ``*__vector_store.json`` with LlamaIndex's two stores beside."""
    if not location.rpartition("/")[2].endswith("__vector_store.json"):
        return False
    return all(as_path(sibling(location, n)).exists() for n in (DOCSTORE_FILE, INDEX_STORE_FILE))


def node_payload(node: dict[str, Any]) -> str:
    """The payload text LlamaIndex's ``node_to_metadata_dict(node, remove_text=False)`` makes
    of a node as ``docstore.json`` holds it (one ``_shape_fault`` passed)."""
    return dumps_payload(_payload_of(node))


def _shape_fault(node: dict[str, Any]) -> str | None:
    """Why no payload can be made of a node, or None: its ``metadata`` or ``relationships``
    is there but not an object, which LlamaIndex always writes (``dict()`` of a list of
    two-letter texts would even make other data of it, without a word)."""
    for key in ("metadata", "relationships"):
        value = node.get(key)
        if value is not None and not isinstance(value, dict):
            return (f"has {key} of JSON type {_JSON_TYPES.get(type(value), 'value')}, not an "
                    "object as LlamaIndex writes it")
    return None


_JSON_TYPES = {str: "string", list: "array", bool: "boolean", int: "number", float: "number"}


def _payload_of(node: dict[str, Any]) -> dict[str, Any]:
    payload = dict(node.get("metadata") or {})
    content = dict(node)
    content["embedding"] = None
    # the same encoder and settings as LlamaIndex, so the text matches what it writes itself
    payload["_node_content"] = json.dumps(content, ensure_ascii=False)
    payload["_node_type"] = node.get("class_name") or "TextNode"
    source = (node.get("relationships") or {}).get(_SOURCE)
    ref = source.get("node_id") if isinstance(source, dict) else None
    payload["document_id"] = payload["doc_id"] = payload["ref_doc_id"] = ref or "None"
    return payload


class _LoneSurrogate(ValueError):
    """A lone surrogate escape met in a streamed ``docstore.json``."""


class _SurrogateGuard:
    """A binary file whose ``read`` raises ``_LoneSurrogate`` at the first block holding a lone
    surrogate escape, before the parser reading it gets to it: the nodes already parsed came
    from earlier bytes, and hold none. The last ``_ESCAPE_SPAN`` bytes of a block (and a run
    of backslashes ending there) are looked at with the next block, which completes an escape
    or pair the boundary cuts."""

    def __init__(self, fh: IO[bytes]):
        self._fh = fh
        self._tail = b""
        self._base = 0      # file offset of the tail's first byte
        self._paired = -1   # file offset of a low half a high half already looked at pairs

    def read(self, size: int = -1) -> bytes:
        block = self._fh.read(size)
        if size == 0:
            return block  # a parser asking what kind of file it is, not the end of it
        seen = self._tail + block
        cut = max(0, len(seen) - _ESCAPE_SPAN) if block else len(seen)
        while 0 < cut < len(seen) and seen[cut - 1:cut] == b"\\":
            cut -= 1  # a run of backslashes decides what follows: kept whole for the next
        at, paired = _lone_surrogate(seen, cut, self._paired - self._base)
        if at is not None:
            raise _LoneSurrogate(f"{seen[at:at + 6].decode()} at byte {self._base + at}")
        self._paired = paired + self._base if paired >= 0 else -1
        self._base += cut
        self._tail = seen[cut:]
        return block


class LlamaIndexNodes:
    """The nodes of a LlamaIndex folder, looked up by FAISS id a batch at a time (the same
    interface as ``langchain_docstore.LangchainDocstore``).

    Raises ``InputError`` naming the file for a store file that is missing, not JSON, or not
    shaped as LlamaIndex writes it.
    """

    #: what the store holds, in messages
    entry = "node"
    hint = HINT

    def __init__(self, index_location: str):
        self.location = sibling(index_location, DOCSTORE_FILE)
        self._index_store = sibling(index_location, INDEX_STORE_FILE)
        fids, node_ids = self._nodes_dict()
        order = np.argsort(fids, kind="stable")
        self._fid = fids[order]
        if len(self._fid) > 1 and (np.diff(self._fid) == 0).any():
            dup = int(self._fid[np.flatnonzero(np.diff(self._fid) == 0)[0]])
            raise InputError(f"two indexes' nodes_dict name FAISS id {dup}",
                             location=Location(source=self._index_store),
                             hint="the folder holds indexes that do not share this FAISS index")
        node_ids = [node_ids[i] for i in order]
        self.id_kind = merge_id_kinds(kind_of_id(n) for n in node_ids)
        self._table = PayloadTable()
        self.documents = 0
        self.unindexed = 0
        named = set(node_ids)
        # node id -> (why, payload) of nodes holding what JSON cannot (a docstore.json read
        # leniently: LlamaIndex writes it with json.dump, which writes NaN and Infinity), and
        # (why, None) of nodes no payload can be made of
        self._bad: dict[str, tuple[str, dict[str, Any] | None]] = {}
        self._lenient = False
        pending: list[tuple[str, str]] = []
        for node_id, node in self._docstore_nodes():
            self.documents += 1
            if node_id not in named:
                self.unindexed += 1
                continue
            fault = _shape_fault(node)
            if fault is not None:
                self._bad[node_id] = (fault, None)
                continue
            if self._lenient:
                found = non_finite(node.get("metadata"), "metadata")
                if found is not None:
                    self._bad[node_id] = (f"holds {found[0]} at {found[1]}, which JSON cannot "
                                          "express", _payload_of(node))
                    continue
            text = node_payload(node)
            # Checked whatever parsed the file: the stdlib parser (NaN beside it, integers past
            # 64 bits) reads a lone surrogate escape into the text, and SQLite, like every
            # output, takes UTF-8 only. Refused here, the node is a bad record by itself.
            if has_surrogate(text):
                self._bad[node_id] = (
                    f"holds text that is not valid Unicode at {surrogate_at(node)} (a lone "
                    "surrogate, which UTF-8 cannot encode)", _payload_of(node))
                continue
            pending.append((node_id, text))
            if len(pending) == 4096:
                self._table.add_many(pending)
                pending.clear()
        self._table.add_many(pending)
        del named
        # which names the docstore answers, asked once: ``known`` then costs no lookup
        self._ok = np.zeros(len(node_ids), dtype=bool)
        for lo in range(0, len(node_ids), 65536):
            chunk = node_ids[lo:lo + 65536]
            held = self._table.take(chunk)
            self._ok[lo:lo + len(chunk)] = [t is not None for t in held]
        # node ids are text: only a "mixed" stream (text that reads as integers beside other
        # ids) would change them
        self._node_ids = pa.array(node_ids if self.id_kind != "mixed" else
                                  [encode_id(n, self.id_kind) for n in node_ids],
                                  type=id_arrow_type(self.id_kind))
        self._used = np.zeros(len(node_ids), dtype=bool)
        self._is_bad = np.array([n in self._bad for n in node_ids], dtype=bool) if self._bad \
            else np.zeros(len(node_ids), dtype=bool)

    # -- loading ---------------------------------------------------------------------------

    def _read_json(self, location: str) -> Any:
        """The file parsed whole. NaN and Infinity (which LlamaIndex's ``json.dump`` writes for
        such floats) are read, and set ``_lenient``: the nodes holding them become bad records;
        so are nodes whose text holds a lone surrogate escape, which ``json.dump`` writes too.
        Anything else that is not JSON raises ``InputError``."""
        with open_read(location) as fh:
            text = without_bom(fh.read())
        try:
            return loads_exact(text)
        except ValueError as exc:
            try:
                data, constants = loads_with_constants(text)
            except ValueError:
                data, constants = None, []
            if not constants and (data is None or _lone_surrogate(text, len(text))[0] is None):
                raise InputError(f"not JSON: {exc}", location=Location(source=location),
                                 hint="persist the index again with LlamaIndex") from exc
            if constants:
                self._lenient = True
            return data

    def _nodes_dict(self) -> tuple[np.ndarray, list[str]]:
        data = self._read_json(self._index_store)
        entries = data.get("index_store/data") if isinstance(data, dict) else None
        if not isinstance(entries, dict):
            raise InputError("has no \"index_store/data\" object, as LlamaIndex writes it",
                             location=Location(source=self._index_store))
        fids: list[int] = []
        node_ids: list[str] = []
        for index_id, entry in entries.items():
            if not isinstance(entry, dict) or entry.get("__type__") != "vector_store":
                continue  # a list, tree or keyword index: it has no vectors here
            try:
                body = entry["__data__"]
                struct = loads_exact(body.encode()) if isinstance(body, str) else body
                nodes = struct["nodes_dict"]
                for fid, node_id in nodes.items():
                    if not isinstance(node_id, str) or not node_id:
                        # LlamaIndex names nodes by text; anything else was edited by hand,
                        # and an integer would read as another id kind than the docstore's keys
                        raise ValueError(f"FAISS id {fid} names the node {node_id!r}, which "
                                         "is not a node id (non-empty text)")
                    if has_surrogate(node_id):
                        # no id column, rejects line or Qdrant point could name it
                        raise ValueError(f"FAISS id {fid} names the node {node_id!r}, which is "
                                         "not valid Unicode (a lone surrogate)")
                    fids.append(int(fid))
                    node_ids.append(node_id)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise InputError(f"index {index_id!r} has no readable nodes_dict: "
                                 f"{type(exc).__name__}: {exc}",
                                 location=Location(source=self._index_store),
                                 hint="persist the index again with LlamaIndex") from exc
        return np.array(fids, dtype=np.int64), node_ids

    def _docstore_nodes(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(node id, node) of ``docstore/data``, the file parsed whole when small."""
        def node_of(node_id: str, entry: Any) -> dict[str, Any]:
            node = entry.get("__data__") if isinstance(entry, dict) else None
            if isinstance(node, str):  # older LlamaIndex kept it as JSON text
                try:
                    node = loads_exact(node.encode())
                except ValueError as exc:
                    raise InputError(f"node {node_id!r} has \"__data__\" text that is not "
                                     f"JSON: {exc}", location=Location(source=self.location),
                                     hint="persist the index again with LlamaIndex") from exc
            if not isinstance(node, dict):
                raise InputError(f"node {node_id!r} has no \"__data__\" object",
                                 location=Location(source=self.location),
                                 hint="persist the index again with LlamaIndex")
            return node

        if file_size(as_path(self.location)) <= WHOLE_JSON_BYTES:
            data = self._read_json(self.location)
            nodes = data.get("docstore/data") if isinstance(data, dict) else None
            if not isinstance(nodes, dict):
                raise InputError("has no \"docstore/data\" object, as LlamaIndex writes it",
                                 location=Location(source=self.location))
            for node_id, entry in nodes.items():
                yield node_id, node_of(node_id, entry)
            return
        import ijson

        try:
            with open_read(self.location) as fh:
                for node_id, entry in ijson.kvitems(_SurrogateGuard(fh), "docstore/data",
                                                    use_float=True):
                    yield node_id, node_of(node_id, entry)
        except _LoneSurrogate as exc:
            # ijson's C backend reads a lone high surrogate escape as "?" (the node would be
            # changed without a word) and fails on a low one: refused whole, as NaN is
            raise InputError(
                f"holds text with a lone surrogate escape (half of a UTF-16 pair, which UTF-8 "
                f"cannot encode; LlamaIndex's json.dump writes it for such text), which "
                f"vecferry reads only in a {DOCSTORE_FILE} of up to {WHOLE_JSON_BYTES >> 20} MB "
                f"(it streams bigger ones): {exc}", location=Location(source=self.location),
                hint="remove the lone surrogates from the nodes' text in LlamaIndex and "
                     "persist the index again") from exc
        except ijson.JSONError as exc:
            if any(c in str(exc) for c in ("NaN", "Infinity")):
                raise InputError(
                    f"holds NaN or Infinity (LlamaIndex writes them for such metadata values; "
                    f"JSON has no such values), which vecferry reads only in a {DOCSTORE_FILE} "
                    f"of up to {WHOLE_JSON_BYTES >> 20} MB (it streams bigger ones): {exc}",
                    location=Location(source=self.location),
                    hint="replace NaN and infinite metadata values (with None) in LlamaIndex "
                         "and persist the index again") from exc
            raise InputError(f"not JSON: {exc}", location=Location(source=self.location),
                             hint="persist the index again with LlamaIndex") from exc

    # -- lookups ---------------------------------------------------------------------------

    def _positions(self, faiss_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Row of each FAISS id in the map, and whether the map names it."""
        if not len(self._fid):
            return np.zeros(len(faiss_ids), np.int64), np.zeros(len(faiss_ids), bool)
        pos = np.minimum(np.searchsorted(self._fid, faiss_ids), len(self._fid) - 1)
        return pos, self._fid[pos] == faiss_ids

    def known(self, faiss_ids: np.ndarray) -> np.ndarray:
        """Whether each FAISS id has a node."""
        pos, named = self._positions(faiss_ids)
        return named & self._ok[pos] if len(self._ok) else named

    def why(self, fid: int) -> tuple[str, Any, Any]:
        """(reason, the point's id for the rejects file, its payload or None) of a FAISS id
        ``known`` refused; a node that is a bad record counts as used."""
        pos, named = self._positions(np.array([fid], dtype=np.int64))
        if not named[0]:
            return (f"FAISS id {fid} is in no nodes_dict of {INDEX_STORE_FILE}, so it has no "
                    "node", fid, None)
        node_id = decode_ids(self._node_ids.slice(int(pos[0]), 1), self.id_kind)[0]
        if node_id in self._bad:
            self._used[int(pos[0])] = True  # rejected here: not again by ``unused``
            why, payload = self._bad[node_id]
            return f"node {node_id!r} {why}", node_id, payload
        return (f"{DOCSTORE_FILE} has no node {node_id!r} (nodes_dict names it for FAISS id "
                f"{fid})", node_id, None)

    def lookup(self, faiss_ids: np.ndarray) -> tuple[dict[str, pa.Array], np.ndarray]:
        """``id`` and ``payload`` columns for FAISS ids ``known`` accepts (null for others),
        and ``known``; the nodes found count as used."""
        pos, _ = self._positions(faiss_ids)
        found = self.known(faiss_ids)
        self._used[pos[found]] = True
        take = pa.array(pos, mask=~found)
        ids = self._node_ids.take(take)
        texts = self._table.take([k or "" for k in ids.to_pylist()])
        payloads = pa.array([t if ok else None for t, ok in zip(texts, found, strict=True)],
                            type=pa.string())
        return {"id": ids, "payload": payloads}, found

    def mark(self, faiss_ids: np.ndarray) -> None:
        """Count the nodes of ``faiss_ids`` as used (rows an earlier run read)."""
        pos, found = self._positions(faiss_ids)
        self._used[pos[found]] = True

    def unused(self) -> Iterator[tuple[Any, dict[str, Any], str]]:
        """(node id, payload, why) of each node ``nodes_dict`` names for a FAISS id no read
        reached (the index does not hold it)."""
        for row in np.flatnonzero(~self._used & (self._ok | self._is_bad)):
            node_id = decode_ids(self._node_ids.slice(int(row), 1), self.id_kind)[0]
            text = self._table.take([str(node_id)])[0]
            payload = (loads_exact(text.encode()) if text else
                       self._bad[node_id][1] if node_id in self._bad else None)
            yield (node_id, payload,
                   f"nodes_dict names it for FAISS id {int(self._fid[row])}, which the index "
                   "does not hold")

    def facts(self) -> dict[str, Any]:
        return {"format": "llamaindex", "ids": "LlamaIndex node ids (nodes_dict)",
                "location": self.location, "unit": "nodes",
                "index_store": self._index_store, "documents": self.documents,
                "unindexed_nodes": self.unindexed,
                "payload_keys": ["<metadata>", "_node_content", "_node_type", "document_id",
                                 "doc_id", "ref_doc_id"]}

    def close(self) -> None:
        self._table.close()
