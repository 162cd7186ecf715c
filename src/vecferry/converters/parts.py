"""Directories of part files (Parquet, JSONL) with one ``_manifest.json`` for all parts.

A directory output of ``ParquetWriter`` or ``JsonlWriter`` holds ``part-00000.<ext>``,
``part-00001.<ext>``, ... and ``_manifest.json``: the stream manifest of the whole directory
(``count`` and ``digest`` of all parts; digests are sums mod 2^64, so the directory's is the sum
of its parts') plus ``parts``, the list of part files in reading order, each with its ``count``,
``digest`` and ``bytes``. With ``max_part_size`` the writers start a new part once the current
one is full. Readers read the listed parts in order as one source and refuse a directory whose
files do not match its manifest (a part missing, or one not listed).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from vecferry.digest import ALGORITHM
from vecferry.errors import InputError, Location, SchemaError, UsageError
from vecferry.stream import Manifest

#: The leading underscore is what makes the directory a dataset other tools read as it is:
#: pyarrow (so pandas) and Spark skip files whose names start with ``_`` or ``.`` when they
#: list a directory, and fail on any other file that is not Parquet.
DIR_MANIFEST = "_manifest.json"
#: the name directories written before had; still read
OLD_DIR_MANIFEST = "manifest.json"


def directory_manifest_path(directory: Any) -> Any:
    """The manifest file of a directory of parts: ``_manifest.json``, or ``manifest.json`` in
    a directory written before the rename (the new name when neither exists)."""
    path = directory / DIR_MANIFEST
    if not path.exists() and (directory / OLD_DIR_MANIFEST).exists():
        return directory / OLD_DIR_MANIFEST
    return path


def parse_part_size(value: Any, flag: str = "--max-part-size") -> int | None:
    """``max_part_size`` (or the option ``flag`` names) as bytes: an int, or a size text
    (``512MB``, ``1GiB``, ``20kB``, ``1000000``; binary multiples). None when not given."""
    if value is None:
        return None
    if isinstance(value, str):
        from vecferry.sizing import parse_bytes

        try:
            size = parse_bytes(value)
        except UsageError as exc:
            raise UsageError(f"{flag}: {exc.message}",
                             hint="e.g. 512MB, 1GiB, 20kB or a number of bytes") from exc
    else:
        size = int(value)
    if size <= 0:
        raise UsageError(f"{flag} must be a positive size",
                         hint="e.g. 512MB, 1GiB, 20kB or a number of bytes")
    return size


def directory_only(fmt: str, location: str) -> UsageError:
    return UsageError(f"--max-part-size splits a {fmt} directory output into parts, and "
                      f"{location} is not a directory", location=Location(location),
                      hint="end the location with / (e.g. out/) to write a directory of parts")


class PartLog:
    """Counts and digests of the parts written so far; the directory's are their sums."""

    def __init__(self) -> None:
        self.parts: list[dict[str, Any]] = []

    def add(self, name: str, count: int, total: int, nbytes: int) -> None:
        self.parts.append({"name": name, "count": count, "digest": f"{total % 2**64:016x}",
                           "bytes": nbytes})

    @property
    def count(self) -> int:
        return sum(p["count"] for p in self.parts)

    @property
    def total(self) -> int:
        return sum(int(p["digest"], 16) for p in self.parts) % 2**64

    @property
    def bytes(self) -> int:
        return sum(p["bytes"] for p in self.parts)

    def digest(self) -> dict[str, Any]:
        return {"algorithm": ALGORITHM, "value": f"{self.total:016x}", "count": self.count}

    def manifest_json(self, manifest: Manifest) -> bytes:
        """``_manifest.json`` of the directory: ``manifest`` with the totals, and the parts."""
        manifest.count = self.count
        manifest.digest = self.digest()
        d = manifest.to_dict()
        d["parts"] = self.parts
        return orjson.dumps(d, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)


def read_directory_manifest(directory: Any) -> tuple[Manifest, list[dict[str, Any]]] | None:
    """The manifest and part list of a directory's ``_manifest.json`` (``manifest.json``
    before); None when it has none."""
    path = directory_manifest_path(directory)
    if not path.exists():
        return None
    where = Location(str(path))
    try:
        raw = orjson.loads(path.read_bytes())
        if not isinstance(raw, dict):
            raise TypeError("not a JSON object")
        manifest = Manifest.from_dict(raw)
        parts = raw.get("parts")
        if parts is None:
            parts = []
        if not isinstance(parts, list) or not all(
                isinstance(p, dict) and isinstance(p.get("name"), str) for p in parts):
            raise TypeError("'parts' must be a list of {name, count, digest, bytes}")
    except (orjson.JSONDecodeError, TypeError, ValueError, SchemaError) as exc:
        raise InputError(f"directory manifest is not valid: {exc}", location=where,
                         hint=f"fix or delete {path.name}") from exc
    for p in parts:
        if "/" in p["name"] or p["name"] in ("", ".", ".."):
            raise InputError(f"directory manifest names an invalid part {p['name']!r}",
                             location=where)
    return manifest, parts


def listed_parts(directory: Any, parts: list[dict[str, Any]], found: Iterable[Any]) -> list[Any]:
    """The paths of the parts ``_manifest.json`` lists, in its order; ``InputError`` when one
    is missing or a part file (``found``) is not listed."""
    names = [p["name"] for p in parts]
    manifest = directory_manifest_path(directory).name
    present = {p.name for p in found}
    where = Location(str(directory))
    missing = [n for n in names if n not in present and not (directory / n).exists()]
    if missing:
        raise InputError(f"part(s) listed in {manifest} are missing: {', '.join(missing)}",
                         location=where,
                         hint="the directory is incomplete: copy the missing parts back or "
                              "write it again")
    extra = sorted(present - set(names))
    if extra:
        raise InputError(f"part file(s) not listed in {manifest}: {', '.join(extra)}",
                         location=where,
                         hint=f"remove them, or delete {manifest} to read every part")
    return [directory / n for n in names]


def combined_digest(digests: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """The digest of parts that each recorded one (their sum), else None."""
    if not digests or any(not isinstance(d, dict) or d.get("algorithm") != ALGORITHM
                          for d in digests):
        return None
    try:
        total = sum(int(d["value"], 16) for d in digests) % 2**64  # type: ignore[index]
        count = sum(int(d["count"]) for d in digests)  # type: ignore[index]
    except (KeyError, TypeError, ValueError):
        return None
    return {"algorithm": ALGORITHM, "value": f"{total:016x}", "count": count}
