"""Frozen k-means codebooks: nearest-centroid tokens over continuous features, one table per vocabulary size.

SemantiCodec (Liu et al., 2024, arXiv:2405.00233, §3.1) quantizes stacked AudioMAE features with k-means centroids
that never train. The paper trains one acoustic encoder and decoder for several semantic vocabularies at once by
drawing one codebook per batch; :class:`KMeansCodebooks` therefore holds several tables, each a persistent buffer
``centroids_<size>`` so checkpoints carry them.

Centroid files:

- the official ``codebook_<N>_0.npy`` tables (float32 ``[2N x F]``, loaded with ``allow_pickle=False``);
- codecfw's clustering output (``codecfw cluster``): a ``.safetensors`` file with a ``centroids`` tensor
  ``[V x F]`` and an optional JSON sidecar of the same stem (``size``/``dim`` are checked when present);
  ``codecfw cluster`` also writes the official ``.npy`` layout.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from codecfw.core.clustering.codebook import load_centroids


class KMeansCodebooks(nn.Module):
    """Several frozen centroid tables over the same ``dim``-wide features.

    dim : int
        Feature width F.
    sizes : list[int]
        Vocabulary sizes; each gets a buffer ``centroids_<size>`` of shape ``[size x F]``.
    paths : list[str | None]
        A centroid file per size, or ``None`` for a placeholder (seeded N(0, 1) rows, i.e. a random-projection
        tokenizer) that a checkpoint is expected to overwrite.
    chunk_rows : int
        Rows per distance matmul; bounds the ``[rows x V]`` distance matrix for long inputs.
    """

    static_buffers = True  # frozen: distributed training need not re-broadcast the tables

    def __init__(self, dim: int, sizes: list[int], paths: list[str | None] | None = None, seed: int = 0,
                 chunk_rows: int = 4096) -> None:
        super().__init__()
        if not sizes:
            raise ValueError("KMeansCodebooks needs at least one vocabulary size")
        if len(set(sizes)) != len(sizes):
            raise ValueError(f"vocabulary sizes must be distinct, got {sizes}")
        paths = list(paths) if paths is not None else [None] * len(sizes)
        self.dim = dim
        self.sizes = list(sizes)
        self.chunk_rows = chunk_rows
        generator = torch.Generator().manual_seed(seed)
        for size, path in zip(self.sizes, paths):
            if path is None:
                table = torch.randn(size, dim, generator=generator)
            else:
                table = load_centroids(path)
                if tuple(table.shape) != (size, dim):
                    raise ValueError(f"{path}: centroid table has shape {tuple(table.shape)}, expected "
                                     f"[{size} x {dim}] (vocabulary size x feature width)")
            self.register_buffer(f"centroids_{size}", table)

    def table(self, size: int) -> Tensor:
        """The centroid table ``Tensor[size x F]``."""
        if size not in self.sizes:
            raise KeyError(f"no codebook of size {size}; loaded sizes: {', '.join(map(str, self.sizes))}")
        return getattr(self, f"centroids_{size}")

    @torch.no_grad()
    def quantize(self, x: Tensor, size: int) -> Tensor:
        """Nearest centroid by squared Euclidean distance.

        x : Tensor[... x F] → LongTensor[...]. The distance is ``|x|² + |c|² − 2 x·c`` in float32 with the first
        index winning ties, exactly as the reference's ``quant_mem_efficient``, so near-ties resolve identically.
        """
        table = self.table(size)
        flat = x.reshape(-1, x.shape[-1]).to(table.dtype)
        out = []
        with torch.autocast(flat.device.type, enabled=False):  # bf16 distances would change tokens
            norm_c = table.pow(2).sum(1)
            for rows in flat.split(self.chunk_rows):
                dist = rows.pow(2).sum(1, keepdim=True) + norm_c[None] - 2 * torch.mm(rows, table.t())
                out.append(torch.min(dist, dim=1).indices)
        if not out:
            return torch.zeros(x.shape[:-1], dtype=torch.long, device=x.device)
        return torch.cat(out).reshape(x.shape[:-1])

    def lookup(self, indices: Tensor, size: int) -> Tensor:
        """LongTensor[...] → Tensor[... x F] (the centroid rows)."""
        table = self.table(size)
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= size):
            raise ValueError(f"semantic token out of range for a {size}-entry codebook: "
                             f"min {int(indices.min())}, max {int(indices.max())}")
        return nn.functional.embedding(indices, table)
