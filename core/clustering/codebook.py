"""Codebook files: what ``codecfw cluster`` writes and what every codebook-backed plugin reads.

``codecfw cluster`` writes, per size ``K``::

    kmeans_<K>.safetensors   tensor ``centroids`` float32 [K x D] (domain blocks in the order given)
    kmeans_<K>.json          sizes, domains, proportions, row ranges, feature source, k-means settings, ...
    codebook_idx/combine_<C>_audioset_dominate/codebook_<K/2>_0.npy
                             the official SemantiCodec layout (C = semantic tokens per 10.24 s), for interchange

and :func:`read_codebook` reads either kind back (plus SACodec's optional ``rotation`` tensors), so SemantiCodec's
k-means front-end, SACodec's anchor codebook and the clustering tests agree on one format.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from ..atomic import atomic_path, write_json

FORMAT = "codecfw.kmeans"
VERSION = 1


def read_codebook(path: str | Path, key: str = "centroids", extra: Sequence[str] = ()) -> dict[str, Tensor]:
    """``{key: Tensor[K x D] float32, **present extra tensors}`` from a ``.safetensors`` file (``codecfw cluster``
    output; its JSON sidecar's ``size``/``dim`` are checked when present) or a ``[K x D]`` ``.npy`` array such as
    SemantiCodec's official ``codebook_<N>_0.npy`` (read with ``allow_pickle=False``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"codebook file {path} not found (expected a .safetensors from `codecfw cluster` with "
                                f"a {key!r} tensor, or a [K x D] .npy such as an official codebook_<N>_0.npy)")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise ValueError(f"{path}: not a plain numeric .npy array ({exc})") from None
        out = {key: torch.from_numpy(np.ascontiguousarray(array))}
    elif suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            keys = list(fh.keys())
            if key not in keys:
                raise KeyError(f"{path}: no {key!r} tensor; found {', '.join(keys) or 'no tensors'} (there is no "
                               f"tensor named {key!r}, which holds the codebook)")
            out = {k: fh.get_tensor(k) for k in (key, *extra) if k in keys}
        sidecar = path.with_suffix(".json")
        if sidecar.is_file():
            meta = json.loads(sidecar.read_text())
            for name, axis in (("size", 0), ("num_clusters", 0), ("dim", 1)):
                if name in meta and int(meta[name]) != out[key].shape[axis]:
                    raise ValueError(f"{path}: {key!r} has shape {tuple(out[key].shape)} but {sidecar.name} says "
                                     f"{name}={meta[name]}")
    else:
        raise ValueError(f"{path}: unknown codebook format {suffix!r}; expected .safetensors or .npy")
    table = out[key]
    if table.ndim != 2:
        raise ValueError(f"{path}: a codebook must be 2-D [K x D], got shape {tuple(table.shape)}")
    if not table.is_floating_point():
        raise ValueError(f"{path}: a codebook must be floating point, got {table.dtype}")
    return {k: v.float() for k, v in out.items()}


def load_centroids(path: str | Path, key: str = "centroids") -> Tensor:
    """The centroid table ``Tensor[K x D]`` (float32) of a codebook file (see :func:`read_codebook`)."""
    return read_codebook(path, key)[key]


def write_codebook(out: str | Path, centroids: Tensor, frame_rate: float, meta: dict[str, Any],
                   tensor_metadata: dict[str, str]) -> Path:
    """Write ``kmeans_<K>.safetensors`` + ``kmeans_<K>.json`` (+ the official ``.npy`` when ``K`` is even) under
    ``out``; ``meta`` is merged into the JSON, ``tensor_metadata`` into the safetensors header. Returns the
    ``.safetensors`` path."""
    from safetensors.torch import save_file

    from ... import __version__

    out = Path(out)
    size, dim = int(centroids.shape[0]), int(centroids.shape[1])
    combine = int(round(frame_rate * 10.24))
    npy = (Path("codebook_idx") / f"combine_{combine}_audioset_dominate" / f"codebook_{size // 2}_0.npy"
           if size % 2 == 0 else None)
    meta = {"format": FORMAT, "version": VERSION, "size": size, "dim": dim,
            "centroids": {"file": f"kmeans_{size}.safetensors", "tensor": "centroids", "dtype": "float32",
                          "shape": [size, dim]},
            "interchange_npy": str(npy) if npy else None, **meta,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "codecfw_version": __version__}
    summary = {k: meta[k] for k in ("format", "version", "size", "dim")}
    summary["domains"] = [{k: d[k] for k in ("name", "size", "index_range")} for d in meta.get("domains", [])]
    path = out / f"kmeans_{size}.safetensors"
    with atomic_path(path) as tmp:
        save_file({"centroids": centroids.float().contiguous()}, str(tmp),
                  metadata={"codecfw": json.dumps(summary), **tensor_metadata})
    if npy is not None:
        with atomic_path(out / npy) as tmp, open(tmp, "wb") as fh:
            np.save(fh, centroids.float().numpy())
    write_json(out / f"kmeans_{size}.json", meta, newline=True)
    return path
