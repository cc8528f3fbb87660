"""Feature vectors on disk: append-only ``.npy`` shards read back through numpy memory maps.

Clustering a dataset's worth of frames (SemantiCodec clusters stacked AudioMAE features of its whole training set,
seed 001 §IV-D) needs more rows than fit in memory, so :class:`FeatureWriter` streams ``[N x D]`` blocks into shard
files and :class:`FeatureStore` reads any row range or row set back without loading the rest.

Layout of one store directory::

    index.json            {"format": "codecfw.features", "version": 1, "dim": D, "dtype": "float32",
                           "shards": [{"file": "shard_000000.npy", "rows": n}, ...],
                           "sources_done": k, "complete": true, "meta": {...}}
    shard_000000.npy      float32 (or float16) [n x D]
    ...

Shards are written whole (temp file + ``os.replace``) and ``index.json`` is rewritten atomically after each one, so
an interrupted extraction leaves a consistent store; ``sources_done`` counts the inputs (audio files) fully contained
in the listed shards, which is where a resumed extraction picks up. A :class:`FeatureStore` may span several
directories (one per rank of a distributed extraction); rows are numbered across them in the order given.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ..atomic import atomic_path, write_json

FORMAT = "codecfw.features"
VERSION = 1
_DTYPES = {"float32": np.float32, "float16": np.float16}


def _write_index(path: Path, index: dict[str, Any]) -> None:
    write_json(path, index, newline=True)


class FeatureWriter:
    """Streams ``[n x D]`` feature blocks into shards of about ``shard_rows`` rows.

    directory : the store directory (created).
    dim : feature dimension D.
    shard_rows : rows per shard; a shard is cut only between sources so that ``sources_done`` stays exact.
    dtype : ``"float32"`` or ``"float16"`` (halves the disk; k-means still computes in float32).
    resume : keep the shards already listed in ``directory/index.json`` and continue after ``sources_done``;
        rows of a source that was not fully flushed are dropped and that source is extracted again.
    meta : free-form JSON stored in the index (domain, front-end, ...).
    """

    def __init__(self, directory: str | Path, dim: int, shard_rows: int = 262144, dtype: str = "float32",
                 resume: bool = False, meta: dict | None = None) -> None:
        if dtype not in _DTYPES:
            raise ValueError(f"feature dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.dim, self.shard_rows, self.dtype = int(dim), int(shard_rows), dtype
        self.index: dict[str, Any] = {"format": FORMAT, "version": VERSION, "dim": self.dim, "dtype": dtype,
                                      "shards": [], "sources_done": 0, "complete": False, "meta": meta or {}}
        index_path = self.directory / "index.json"
        if resume and index_path.is_file():
            old = read_index(index_path)
            if old["dim"] != self.dim or old["dtype"] != dtype:
                raise ValueError(f"{index_path}: cannot resume a store of dim {old['dim']} / {old['dtype']} with "
                                 f"dim {self.dim} / {dtype}")
            self.index = old
            self.index["complete"] = False
        else:  # a fresh index first, so that a crash never leaves one listing deleted shards
            _write_index(index_path, self.index)
            for stale in self.directory.glob("shard_*.npy"):
                stale.unlink()
        self._pending: list[np.ndarray] = []
        self._pending_rows = 0
        self._pending_sources = 0

    @property
    def sources_done(self) -> int:
        """Sources whose rows are all on disk (a resumed extraction skips this many)."""
        return int(self.index["sources_done"])

    @property
    def rows(self) -> int:
        return sum(s["rows"] for s in self.index["shards"]) + self._pending_rows

    def add(self, features: np.ndarray) -> None:
        """Append the rows of one source (e.g. one audio file). features : [n x D]."""
        features = np.asarray(features)
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise ValueError(f"expected features of shape [n x {self.dim}], got {list(features.shape)}")
        if len(features):
            self._pending.append(features.astype(_DTYPES[self.dtype], copy=False))
            self._pending_rows += len(features)
        self._pending_sources += 1
        if self._pending_rows >= self.shard_rows:
            self.flush()

    def flush(self) -> None:
        if self._pending_rows:
            name = f"shard_{len(self.index['shards']):06d}.npy"
            block = np.ascontiguousarray(np.concatenate(self._pending))
            with atomic_path(self.directory / name) as tmp, open(tmp, "wb") as fh:
                np.save(fh, block)
            self.index["shards"].append({"file": name, "rows": int(len(block))})
        self.index["sources_done"] += self._pending_sources
        self._pending, self._pending_rows, self._pending_sources = [], 0, 0
        _write_index(self.directory / "index.json", self.index)

    def close(self) -> None:
        """Flush and mark the store complete."""
        self.flush()
        self.index["complete"] = True
        _write_index(self.directory / "index.json", self.index)


def read_index(path: Path) -> dict[str, Any]:
    try:
        index = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable feature-store index ({exc})") from exc
    if index.get("format") != FORMAT or index.get("version") != VERSION:
        raise ValueError(f"{path}: expected format {FORMAT!r} version {VERSION}, got "
                         f"{index.get('format')!r} version {index.get('version')!r}")
    return index


def store_is_complete(directory: str | Path) -> bool:
    path = Path(directory) / "index.json"
    return path.is_file() and bool(read_index(path).get("complete"))


class FeatureStore:
    """Read-only rows ``[N x D]`` over the shards of one or more store directories (memory-mapped)."""

    def __init__(self, directories: str | Path | Sequence[str | Path]) -> None:
        if isinstance(directories, (str, Path)):
            directories = [directories]
        self.directories = [Path(d) for d in directories]
        if not self.directories:
            raise ValueError("a feature store needs at least one directory")
        self._shards: list[np.ndarray] = []
        dims = set()
        for directory in self.directories:
            index = read_index(directory / "index.json")
            dims.add(int(index["dim"]))
            for shard in index["shards"]:
                path = directory / shard["file"]
                try:
                    arr = np.load(path, mmap_mode="r", allow_pickle=False)
                except (OSError, ValueError, EOFError) as exc:  # a pickled (object) array cannot be mapped
                    raise ValueError(f"{path}: not a readable float feature shard ({str(exc)[:200]}); expected a "
                                     f".npy array of float32/float16 rows, without Python objects") from None
                if arr.dtype not in (np.float32, np.float16):
                    raise ValueError(f"{path}: dtype {arr.dtype}, expected float32 or float16 feature rows")
                if arr.ndim != 2 or len(arr) != shard["rows"]:
                    raise ValueError(f"{directory / shard['file']}: expected {shard['rows']} rows, got shape "
                                     f"{list(arr.shape)}")
                self._shards.append(arr)
        if len(dims) != 1:
            raise ValueError(f"feature stores {', '.join(map(str, self.directories))} disagree on dim: {sorted(dims)}")
        self.dim = dims.pop()
        self._offsets = np.cumsum([0] + [len(s) for s in self._shards])

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` as float32 ``[n x D]`` (copied out of the maps)."""
        start, stop = max(0, start), min(len(self), stop)
        parts = []
        first = int(np.searchsorted(self._offsets, start, side="right")) - 1
        for i in range(max(first, 0), len(self._shards)):
            lo, hi = self._offsets[i], self._offsets[i + 1]
            if lo >= stop:
                break
            a, b = max(start, lo) - lo, min(stop, hi) - lo
            if b > a:
                parts.append(self._shards[i][a:b])
        if not parts:
            return np.empty((0, self.dim), np.float32)
        return np.concatenate(parts).astype(np.float32, copy=False) if len(parts) > 1 \
            else np.array(parts[0], dtype=np.float32)

    def take(self, indices: np.ndarray) -> np.ndarray:
        """Rows at ``indices`` (any order, repeats allowed) as float32 ``[len(indices) x D]``."""
        indices = np.asarray(indices, dtype=np.int64)
        out = np.empty((len(indices), self.dim), np.float32)
        if len(indices) == 0:
            return out
        if indices.min() < 0 or indices.max() >= len(self):
            raise IndexError(f"row index out of range for a store of {len(self)} rows")
        order = np.argsort(indices, kind="stable")
        sorted_idx = indices[order]
        shard_of = np.searchsorted(self._offsets, sorted_idx, side="right") - 1
        bounds = np.searchsorted(shard_of, np.arange(len(self._shards) + 1))
        for s in range(len(self._shards)):
            a, b = bounds[s], bounds[s + 1]
            if b > a:
                out[order[a:b]] = self._shards[s][sorted_idx[a:b] - self._offsets[s]]
        return out

    def chunks(self, chunk_rows: int, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """``(first row, rows)`` blocks of at most ``chunk_rows`` covering ``[start, stop)``."""
        stop = len(self) if stop is None else stop
        for a in range(start, stop, chunk_rows):
            yield a, self.read(a, min(a + chunk_rows, stop))


class ArrayStore:
    """An in-memory ``[N x D]`` array behind the :class:`FeatureStore` interface (tests, benchmarks, small data)."""

    def __init__(self, array: np.ndarray) -> None:
        array = np.asarray(array)
        if array.ndim != 2:
            raise ValueError(f"expected a [N x D] array, got shape {list(array.shape)}")
        self.array, self.dim = array, int(array.shape[1])

    def __len__(self) -> int:
        return len(self.array)

    def read(self, start: int, stop: int) -> np.ndarray:
        return np.asarray(self.array[max(0, start):stop], dtype=np.float32)

    def take(self, indices: np.ndarray) -> np.ndarray:
        return np.asarray(self.array[np.asarray(indices, dtype=np.int64)], dtype=np.float32)

    def chunks(self, chunk_rows: int, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        stop = len(self) if stop is None else stop
        for a in range(start, stop, chunk_rows):
            yield a, self.read(a, min(a + chunk_rows, stop))
