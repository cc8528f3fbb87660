"""A frozen k-means codebook that semantic anchoring quantizes against, and its importers.

SACodec (Dong et al., 2025, arXiv 2512.20944) anchors its acoustic features to a *frozen* mHuBERT codebook. The
codebook can come from:

- codecfw's clustering output (``codecfw cluster``): ``kmeans_<K>.safetensors`` with ``centroids : [K x D]``
  (and optionally ``rotation : [C x D]`` when clustered in a rotated space);
- the official SemantiCodec-style ``.npy`` layout (``[K x D]`` float array);
- the released mHuBERT-147 faiss index ``mhubert147_faiss.index`` (``OPQ16_64,IVF1000_HNSW32,PQ16x4fsr``):
  the OPQ rotation ``A : [64 x 768]`` and the 1000 coarse centroids in the 64-d OPQ space. Unit assignment in the
  mHuBERT recipe is ``quantizer.search(opq.apply(x), 1)``; codecfw replaces the (approximate) HNSW search by an exact
  argmin over the same centroids. faiss is needed for this import only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from codecfw.core.clustering.codebook import read_codebook


def import_faiss_index(path: str | Path) -> dict[str, Tensor]:
    """Read a faiss ``IndexPreTransform(OPQ/linear) → IVF`` index and return its frozen codebook.

    Returns ``{"centroids": Tensor[K x C], "rotation": Tensor[C x D], "rotation_bias": Tensor[C]}`` where the
    codebook space is ``x @ rotation.T + rotation_bias`` for teacher features ``x : [.. x D]``.
    """
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("importing a faiss index needs faiss: pip install 'codecfw[faiss]' (faiss-cpu)") from exc
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"faiss index {path} not found")
    index = faiss.read_index(str(path))
    rotation = bias = None
    try:
        chain = faiss.downcast_index(index)
        if hasattr(chain, "chain") and chain.chain.size() > 0:
            transform = faiss.downcast_VectorTransform(chain.chain.at(0))
            rotation = faiss.vector_to_array(transform.A).reshape(transform.d_out, transform.d_in)
            bias = faiss.vector_to_array(transform.b) if transform.have_bias else np.zeros(transform.d_out, "float32")
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError as exc:
        raise ValueError(f"{path}: expected an IVF index (optionally behind an OPQ/linear transform): {exc}") from exc
    centroids = ivf.quantizer.reconstruct_n(0, ivf.nlist)
    out = {"centroids": torch.from_numpy(np.ascontiguousarray(centroids, dtype="float32"))}
    if rotation is not None:
        out["rotation"] = torch.from_numpy(np.ascontiguousarray(rotation, dtype="float32"))
        out["rotation_bias"] = torch.from_numpy(np.ascontiguousarray(bias, dtype="float32"))
    return out


def load_codebook_file(path: str | Path) -> dict[str, Tensor]:
    """``centroids`` (and the optional ``rotation``/``rotation_bias``) from a codebook file (``.safetensors`` of
    ``codecfw cluster``, ``.npy`` [K x D]; see :func:`codecfw.core.clustering.codebook.read_codebook`) or a faiss
    ``.index``."""
    path = Path(path).expanduser()  # recipes name shared assets under ~ (e.g. ~/codecfw-assets/...)
    if path.suffix == ".index":
        return import_faiss_index(path)
    return read_codebook(path, extra=("rotation", "rotation_bias"))


class AnchorCodebook(nn.Module):
    """Frozen centroids ``[K x C]`` in the teacher's feature space ``D`` (``C == D``) or a rotated space.

    x : Tensor[B x T x D] → tokens LongTensor[B x T] (exact nearest centroid, ties to the first index) and the
    centroid expressed back in teacher space, ``Tensor[B x T x D]`` (through ``rotation.T`` when rotated: OPQ
    rotations have orthonormal rows, so this is the least-squares inverse).
    """

    static_buffers = True  # frozen: distributed training need not re-broadcast the tables

    def __init__(self, codebook_size: int, teacher_dim: int, codebook_dim: int | None = None) -> None:
        super().__init__()
        codebook_dim = codebook_dim or teacher_dim
        self.codebook_size = codebook_size
        self.teacher_dim = teacher_dim
        self.register_buffer("centroids", torch.randn(codebook_size, codebook_dim) * teacher_dim ** -0.5)
        if codebook_dim != teacher_dim:
            self.register_buffer("rotation", torch.linalg.qr(torch.randn(teacher_dim, codebook_dim))[0].T.contiguous())
            self.register_buffer("rotation_bias", torch.zeros(codebook_dim))
        else:
            self.rotation = self.rotation_bias = None

    @torch.no_grad()
    def load(self, tensors: dict[str, Tensor], source: str = "codebook") -> None:
        centroids = tensors["centroids"]
        if tuple(centroids.shape) != tuple(self.centroids.shape):
            raise ValueError(f"{source}: centroids have shape {tuple(centroids.shape)}, the recipe expects "
                             f"{tuple(self.centroids.shape)} (codebook_size x codebook_dim)")
        rotation = tensors.get("rotation")
        if (rotation is None) != (self.rotation is None):
            raise ValueError(f"{source}: {'has' if rotation is not None else 'lacks'} a rotation but the recipe's "
                             f"codebook_dim {'differs from' if self.rotation is not None else 'equals'} teacher_dim")
        self.centroids.copy_(centroids)
        if rotation is not None:
            if tuple(rotation.shape) != tuple(self.rotation.shape):
                raise ValueError(f"{source}: rotation has shape {tuple(rotation.shape)}, expected "
                                 f"{tuple(self.rotation.shape)}")
            self.rotation.copy_(rotation)
            self.rotation_bias.copy_(tensors.get("rotation_bias", torch.zeros_like(self.rotation_bias)))

    def to_codebook_space(self, x: Tensor) -> Tensor:
        return x if self.rotation is None else x @ self.rotation.T + self.rotation_bias

    def from_codebook_space(self, c: Tensor) -> Tensor:
        return c if self.rotation is None else (c - self.rotation_bias) @ self.rotation

    def assign(self, x: Tensor) -> Tensor:
        """x : Tensor[B x T x D] (teacher space) → LongTensor[B x T]."""
        z = self.to_codebook_space(x.float())
        dist = (z.pow(2).sum(-1, keepdim=True) - 2 * z @ self.centroids.T + self.centroids.pow(2).sum(-1))
        return dist.argmin(-1)

    def lookup(self, tokens: Tensor) -> Tensor:
        """LongTensor[B x T] → centroids in teacher space, Tensor[B x T x D]."""
        return self.from_codebook_space(self.centroids[tokens])
