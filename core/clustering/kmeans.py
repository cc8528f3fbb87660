"""k-means codebooks at dataset scale: streamed Lloyd or mini-batch, k-means++ init, resumable, distributed.

SemantiCodec's semantic codebook is k-means over stacked AudioMAE features, clustered per domain and merged
(Liu et al. 2024, seed 001 §III-B, §IV-D); SACodec anchors to k-means centroids of mHuBERT features. The reference
tool (haoheliu/kmeans_pytorch) loops over clusters in Python and never processes the last partial chunk; this
engine instead:

- reads rows in chunks from a :class:`~.feature_store.FeatureStore` (memory-mapped shards), so the data
  never has to fit in memory, and assigns with one ``‖c‖² − 2x·c`` matmul per block (``argmin`` over centroids);
- accumulates per-cluster sums with ``index_add_`` (float32 per chunk, float64 across chunks and ranks);
- runs full-batch Lloyd (Lloyd 1982) or mini-batch k-means with per-centroid ``1/count`` learning rates
  (Sculley 2010, the update scikit-learn's ``MiniBatchKMeans`` uses);
- seeds with greedy k-means++ (Arthur & Vassilvitskii 2007; ``2 + ln K`` candidates a step as scikit-learn) on a
  random sample, or with random sample rows;
- repairs empty clusters by moving them to the farthest points of the pass (as scikit-learn) or by splitting the
  largest cluster (as faiss);
- runs on any torch device and over ``torch.distributed`` ranks (torchrun; gloo on CPU, NCCL on CUDA): every rank
  streams its share of the rows and sums and counts are all-reduced, so the result equals a single process's up
  to floating-point summation order;
- saves its state (iteration, centroids, counts, RNG, history) atomically after each iteration; a resumed run
  continues exactly where the saved one stopped.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch
from torch import Tensor

from ..atomic import atomic_path
from .feature_store import ArrayStore, FeatureStore

STATE_FORMAT = "codecfw.kmeans-state"


@dataclass
class KMeansConfig:
    """Settings of one k-means run (every field has a CLI flag in ``codecfw cluster``)."""

    num_clusters: int
    algorithm: Literal["lloyd", "minibatch"] = "lloyd"
    init: Literal["k-means++", "random"] = "k-means++"
    #: Lloyd passes, or mini-batch epochs (``ceil(N / batch_size)`` steps each).
    max_iter: int = 20
    #: Stop when the mean squared distance improves by less than this fraction in one iteration (0: never).
    tol: float = 1e-4
    #: Mini-batch rows per step, over all ranks.
    batch_size: int = 4096
    #: Rows read from the store at a time.
    chunk_rows: int = 65536
    #: Rows the init draws from; default ``min(N, max(3 K, 10000))`` (scikit-learn's MiniBatchKMeans uses 3 K).
    init_sample: int | None = None
    #: k-means++ candidates per step; default ``2 + int(ln K)``.
    init_trials: int | None = None
    repair: Literal["farthest", "split"] = "farthest"
    #: Farthest points kept per pass for the "farthest" repair (more empties than this fall back to splitting).
    repair_candidates: int = 256
    seed: int = 0
    device: str = "cpu"
    #: Upper bound on the ``[rows x K]`` distance block (bytes).
    block_bytes: int = 1 << 28
    #: Save the state every this many iterations (when a state path is given).
    checkpoint_every: int = 1

    def __post_init__(self) -> None:
        if self.num_clusters < 1:
            raise ValueError(f"num_clusters must be >= 1, got {self.num_clusters}")
        if self.algorithm not in ("lloyd", "minibatch"):
            raise ValueError(f"algorithm must be 'lloyd' or 'minibatch', got {self.algorithm!r}")
        if self.init not in ("k-means++", "random"):
            raise ValueError(f"init must be 'k-means++' or 'random', got {self.init!r}")
        if self.repair not in ("farthest", "split"):
            raise ValueError(f"repair must be 'farthest' or 'split', got {self.repair!r}")
        for name in ("batch_size", "chunk_rows", "checkpoint_every", "block_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_iter < 0 or self.tol < 0:
            raise ValueError("max_iter and tol must be >= 0")


@dataclass
class KMeansResult:
    """centroids : Tensor[K x D] (float32, CPU). ``inertia`` is the sum of squared distances of every row to its
    nearest final centroid; ``inertia_history[i]`` the mean squared distance per row against the centroids at the
    start of iteration ``i`` (mini-batch: over that epoch's batches)."""

    centroids: Tensor
    inertia: float
    rows: int
    cluster_sizes: Tensor
    inertia_history: list[float] = field(default_factory=list)
    repaired: list[int] = field(default_factory=list)
    iterations: int = 0
    converged: bool = False
    seconds: float = 0.0
    init_seconds: float = 0.0

    @property
    def inertia_per_row(self) -> float:
        return self.inertia / max(self.rows, 1)

    @property
    def dead(self) -> list[int]:
        """Centroids no row is assigned to."""
        return torch.nonzero(self.cluster_sizes == 0).flatten().tolist()

    def report(self) -> dict[str, Any]:
        return {"num_clusters": len(self.centroids), "rows": self.rows, "inertia": self.inertia,
                "inertia_per_row": self.inertia_per_row, "inertia_history": self.inertia_history,
                "iterations": self.iterations, "converged": self.converged, "repaired": self.repaired,
                "dead_centroids": self.dead, "cluster_size_histogram": size_histogram(self.cluster_sizes),
                "cluster_size_min": int(self.cluster_sizes.min()), "cluster_size_max": int(self.cluster_sizes.max()),
                "cluster_size_median": float(self.cluster_sizes.float().median()),
                "seconds": self.seconds, "init_seconds": self.init_seconds}


def size_histogram(sizes: Tensor) -> list[dict[str, int]]:
    """Clusters per size bin: ``0``, ``1``, ``2-3``, ``4-7``, ... (powers of two)."""
    sizes = sizes.long().cpu()
    bins = [{"min": 0, "max": 0, "clusters": int((sizes == 0).sum())}]
    lo = 1
    while lo <= max(int(sizes.max()), 1):
        hi = 2 * lo - 1
        bins.append({"min": lo, "max": hi, "clusters": int(((sizes >= lo) & (sizes <= hi)).sum())})
        lo *= 2
    return bins


# --------------------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------------------


def nearest_centroid(x: Tensor, centroids: Tensor, centroid_sq: Tensor | None = None,
                     block_rows: int = 16384) -> tuple[Tensor, Tensor]:
    """x : Tensor[N x D], centroids : Tensor[K x D] → (labels LongTensor[N], squared distances Tensor[N]).

    Squared L2 as ``‖x‖² + min_k(‖c_k‖² − 2 x·c_k)``, one ``addmm`` per block of ``block_rows`` rows (the
    SemantiCodec encoder's own formula, seed 001 eq. (1)); ties go to the lowest index."""
    if centroid_sq is None:
        centroid_sq = (centroids * centroids).sum(1)
    labels = torch.empty(len(x), dtype=torch.long, device=x.device)
    dists = torch.empty(len(x), dtype=x.dtype, device=x.device)
    for a in range(0, len(x), block_rows):
        xb = x[a:a + block_rows]
        scores = torch.addmm(centroid_sq, xb, centroids.T, alpha=-2.0)
        best, idx = scores.min(1)
        dists[a:a + len(xb)] = (best + (xb * xb).sum(1)).clamp_min_(0)
        labels[a:a + len(xb)] = idx
    return labels, dists


def kmeans_plusplus(x: Tensor, k: int, rng: np.random.Generator, trials: int | None = None) -> Tensor:
    """Greedy k-means++ seeding. x : Tensor[S x D] → Tensor[k x D] (rows of ``x``)."""
    n = len(x)
    trials = trials or 2 + int(math.log(k))
    x_sq = (x * x).sum(1)
    centers = torch.empty(k, x.shape[1], dtype=x.dtype, device=x.device)
    first = int(rng.integers(n))
    centers[0] = x[first]
    closest = (x_sq + x_sq[first] - 2 * (x @ x[first])).clamp_min_(0)
    # Few, large ops per step; on CPU, small steps run on one thread: each parallel op is an OpenMP fork/join,
    # which costs more than it saves on a [n x trials] block (10x slower with 2 threads on a busy 2-core machine).
    threads = torch.get_num_threads()
    if x.device.type == "cpu" and n * trials * x.shape[1] < 2e8:
        torch.set_num_threads(1)
    try:
        _kmeans_plusplus_steps(x, x_sq, closest, centers, rng, trials)
    finally:
        torch.set_num_threads(threads)
    return centers


def _kmeans_plusplus_steps(x: Tensor, x_sq: Tensor, closest: Tensor, centers: Tensor, rng: np.random.Generator,
                           trials: int) -> None:
    n = len(x)
    for c in range(1, len(centers)):
        cum = torch.cumsum(closest, 0, dtype=torch.float64)
        targets = torch.from_numpy(rng.random(trials)).to(cum.device) * cum[-1]
        cand = torch.searchsorted(cum, targets).clamp_(max=n - 1)
        d = torch.addmm(x_sq[cand], x, x[cand].T, alpha=-2.0).add_(x_sq[:, None])  # [n x trials]
        torch.minimum(d, closest[:, None], out=d)
        best = int(d.sum(0).argmin())
        closest = d[:, best].clamp_min(0)
        centers[c] = x[cand[best]]


class _Comm:
    """all-reduce / all-gather / broadcast over torch.distributed when it is initialised, else no-ops."""

    def __init__(self) -> None:
        import torch.distributed as dist

        self.dist = dist
        self.active = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if self.active else 0
        self.world = dist.get_world_size() if self.active else 1

    def sum_(self, *tensors: Tensor) -> None:
        if self.active:
            for t in tensors:
                self.dist.all_reduce(t)

    def broadcast_(self, t: Tensor) -> None:
        if self.active:
            self.dist.broadcast(t, 0)

    def cat(self, t: Tensor) -> Tensor:
        if not self.active:
            return t
        parts = [torch.empty_like(t) for _ in range(self.world)]
        self.dist.all_gather(parts, t)
        return torch.cat(parts)

    def barrier(self) -> None:
        if self.active:
            self.dist.barrier()


class _Farthest:
    """The ``m`` rows farthest from their centroid seen so far (with their labels), for the empty-cluster repair."""

    def __init__(self, m: int, dim: int, device: torch.device) -> None:
        self.m = m
        self.d = torch.full((m,), -1.0, device=device)
        self.x = torch.zeros(m, dim, device=device)
        self.label = torch.full((m,), -1, dtype=torch.long, device=device)

    def add(self, x: Tensor, labels: Tensor, dists: Tensor) -> None:
        top = dists.topk(min(self.m, len(dists))).indices
        d = torch.cat([self.d, dists[top]])
        keep = d.topk(self.m).indices
        self.d, self.x = d[keep], torch.cat([self.x, x[top]])[keep]
        self.label = torch.cat([self.label, labels[top]])[keep]

    def gathered(self, comm: _Comm) -> tuple[Tensor, Tensor, Tensor]:
        d, x, label = comm.cat(self.d), comm.cat(self.x), comm.cat(self.label)
        order = torch.sort(d, descending=True, stable=True).indices
        valid = order[d[order] >= 0]
        return d[valid], x[valid], label[valid]


# --------------------------------------------------------------------------------------------------------------
# The engine
# --------------------------------------------------------------------------------------------------------------


class KMeans:
    """k-means over a feature store (see the module docstring).

    >>> result = KMeans(KMeansConfig(4096, algorithm="lloyd")).fit(FeatureStore("features/"), state_path="km.state")
    """

    def __init__(self, config: KMeansConfig) -> None:
        self.config = config
        self.device = torch.device(config.device)

    # -- public -----------------------------------------------------------------------------------------------
    def fit(self, data: FeatureStore | ArrayStore | np.ndarray | Tensor, state_path: str | Path | None = None,
            resume: bool = False, callback: Callable[[int, dict], None] | None = None,
            progress: bool = True, desc: str | None = None, init_centroids: Tensor | None = None) -> KMeansResult:
        """Learn the centroids of ``data`` (rows ``[N x D]``).

        state_path : where the state is saved after every ``checkpoint_every`` iterations (rank 0 writes).
        resume : continue from ``state_path`` if it exists (settings must match; an error lists what differs).
        callback : ``callback(iteration, state)`` after each iteration (and after the state is saved).
        init_centroids : Tensor[K x D] to start from instead of ``config.init`` (a warm start).
        """
        cfg, comm = self.config, _Comm()
        store = data if isinstance(data, (FeatureStore, ArrayStore)) else ArrayStore(
            data.cpu().numpy() if isinstance(data, Tensor) else data)
        n, dim, k = len(store), store.dim, cfg.num_clusters
        if init_centroids is not None and tuple(init_centroids.shape) != (k, dim):
            raise ValueError(f"init_centroids must be [{k} x {dim}], got {list(init_centroids.shape)}")
        if n < k:
            raise ValueError(f"cannot learn {k} centroids from {n} feature rows; use fewer clusters or more data")
        sample = min(n, cfg.init_sample or max(3 * k, 10000))
        fingerprint = {"num_clusters": k, "rows": n, "dim": dim, "algorithm": cfg.algorithm, "init": cfg.init,
                       "seed": cfg.seed, "init_sample": sample, "init_trials": cfg.init_trials,
                       "batch_size": cfg.batch_size if cfg.algorithm == "minibatch" else None,
                       "warm_start": init_centroids is not None}
        start = time.perf_counter()
        state = self._load_state(state_path, fingerprint) if resume and state_path else None
        init_seconds = 0.0
        if state is None:
            state = {"iteration": 0, "history": [], "repaired": [], "converged": False,
                     "centroids": (self._init(store, k, sample, comm) if init_centroids is None
                                   else init_centroids.detach().float().to(self.device).clone()),
                     "counts": torch.zeros(k, dtype=torch.float64, device=self.device),
                     "rng": np.random.default_rng([cfg.seed, 1]).bit_generator.state}
            init_seconds = time.perf_counter() - start
            self._save_state(state_path, state, fingerprint, comm)
        rng = np.random.default_rng()
        rng.bit_generator.state = state["rng"]

        lo, hi = n * comm.rank // comm.world, n * (comm.rank + 1) // comm.world
        steps = math.ceil(n / cfg.batch_size)
        per_iter = (hi - lo) if cfg.algorithm == "lloyd" else steps
        bar = _progress(progress and comm.rank == 0, cfg.max_iter * per_iter, state["iteration"] * per_iter,
                        desc or f"k-means K={k}", "row" if cfg.algorithm == "lloyd" else "step")
        try:
            while state["iteration"] < cfg.max_iter and not state["converged"]:
                if cfg.algorithm == "lloyd":
                    self._lloyd_iteration(store, state, rng, comm, lo, hi, bar)
                else:
                    self._minibatch_epoch(store, state, rng, comm, steps, bar)
                state["iteration"] += 1
                h = state["history"]
                if len(h) >= 2 and cfg.tol > 0 and h[-2] - h[-1] <= cfg.tol * h[-2]:
                    state["converged"] = True
                state["rng"] = rng.bit_generator.state
                if state["iteration"] % cfg.checkpoint_every == 0 or state["converged"]:
                    self._save_state(state_path, state, fingerprint, comm)
                if bar is not None:
                    bar.set_postfix(iter=state["iteration"], inertia=f"{h[-1]:.4g}", empty=state["repaired"][-1])
                if callback is not None:
                    callback(state["iteration"], state)
        finally:
            if bar is not None:
                bar.close()
        self._save_state(state_path, state, fingerprint, comm)
        sizes, inertia = cluster_statistics(store, state["centroids"], cfg.chunk_rows, cfg.block_bytes, comm)
        return KMeansResult(centroids=state["centroids"].float().cpu(), inertia=inertia, rows=n, cluster_sizes=sizes,
                            inertia_history=list(state["history"]), repaired=list(state["repaired"]),
                            iterations=state["iteration"], converged=state["converged"],
                            seconds=time.perf_counter() - start, init_seconds=init_seconds)

    # -- init -------------------------------------------------------------------------------------------------
    def _init(self, store, k: int, sample: int, comm: _Comm) -> Tensor:
        cfg = self.config
        centroids = torch.empty(k, store.dim, device=self.device)
        if comm.rank == 0:
            rng = np.random.default_rng([cfg.seed, 0])
            rows = np.sort(rng.choice(len(store), size=sample, replace=False))
            x = torch.from_numpy(store.take(rows)).to(self.device)
            if cfg.init == "random":
                centroids.copy_(x[torch.from_numpy(rng.choice(sample, size=k, replace=False)).to(self.device)])
            else:
                centroids.copy_(kmeans_plusplus(x, k, rng, cfg.init_trials))
        comm.broadcast_(centroids)
        return centroids

    # -- iterations -------------------------------------------------------------------------------------------
    def _block_rows(self, k: int) -> int:
        return max(1, self.config.block_bytes // (4 * k))

    def _lloyd_iteration(self, store, state: dict, rng, comm: _Comm, lo: int, hi: int, bar) -> None:
        cfg, c = self.config, state["centroids"]
        k, dim = c.shape
        sums = torch.zeros(k, dim, dtype=torch.float64, device=self.device)
        counts = torch.zeros(k, dtype=torch.float64, device=self.device)
        inertia = torch.zeros((), dtype=torch.float64, device=self.device)
        far = _Farthest(cfg.repair_candidates, dim, self.device)
        c_sq = (c * c).sum(1)
        for _, rows in store.chunks(cfg.chunk_rows, lo, hi):
            x = torch.from_numpy(rows).to(self.device)
            labels, dists = nearest_centroid(x, c, c_sq, self._block_rows(k))
            sums += torch.zeros(k, dim, device=self.device).index_add_(0, labels, x)
            counts += torch.bincount(labels, minlength=k)
            inertia += dists.double().sum()
            if cfg.repair == "farthest":
                far.add(x, labels, dists)
            if bar is not None:
                bar.update(len(x))
        comm.sum_(sums, counts, inertia)
        hit = counts > 0
        new = c.clone()
        new[hit] = (sums[hit] / counts[hit, None]).float()
        state["repaired"].append(self._repair(new, counts, sums, far, rng, comm))
        state["history"].append(float(inertia) / len(store))
        if torch.equal(new, c):
            state["converged"] = True
        state["centroids"], state["counts"] = new, counts

    def _minibatch_epoch(self, store, state: dict, rng, comm: _Comm, steps: int, bar) -> None:
        cfg, c, v = self.config, state["centroids"], state["counts"]
        k, dim = c.shape
        seen = torch.zeros(k, dtype=torch.float64, device=self.device)
        inertia = 0.0
        far = _Farthest(cfg.repair_candidates, dim, self.device)
        b = cfg.batch_size
        for _ in range(steps):
            batch = np.sort(rng.integers(0, len(store), size=b))
            mine = batch[b * comm.rank // comm.world: b * (comm.rank + 1) // comm.world]
            x = torch.from_numpy(store.take(mine)).to(self.device)
            labels, dists = nearest_centroid(x, c, None, self._block_rows(k))
            sums = torch.zeros(k, dim, device=self.device).index_add_(0, labels, x).double()
            counts = torch.bincount(labels, minlength=k).double()
            batch_inertia = dists.double().sum()
            comm.sum_(sums, counts, batch_inertia)
            hit = counts > 0
            total = v[hit] + counts[hit]
            c[hit] = ((c[hit].double() * v[hit, None] + sums[hit]) / total[:, None]).float()
            v[hit] = total
            seen += counts
            inertia += float(batch_inertia)
            if cfg.repair == "farthest":
                far.add(x, labels, dists)
            if bar is not None:
                bar.update(1)
        state["repaired"].append(self._repair(c, seen, None, far, rng, comm, v))
        state["history"].append(inertia / (steps * b))

    def _repair(self, c: Tensor, counts: Tensor, sums: Tensor | None, far: _Farthest, rng, comm: _Comm,
                learn_counts: Tensor | None = None) -> int:
        """Give every centroid with ``counts == 0`` a new position, in place; returns how many were repaired.

        "farthest": the farthest points of the pass, each taken out of its old cluster (Lloyd: that cluster's
        mean is recomputed without it). Otherwise, or when those run out: split the largest cluster by a small
        random offset along a random direction (faiss's rule), halving its mini-batch count."""
        empty = torch.nonzero(counts == 0).flatten().tolist()
        if not empty:
            return 0
        todo = list(empty)
        if self.config.repair == "farthest":
            _, xs, labels = far.gathered(comm)
            for x, old in zip(xs, labels.tolist()):
                if not todo:
                    break
                if counts[old] <= 1:
                    continue
                j = todo.pop(0)
                c[j], counts[j] = x, 1
                counts[old] -= 1
                if sums is not None:
                    sums[old] -= x.double()
                    c[old] = (sums[old] / counts[old]).float()
                if learn_counts is not None:
                    learn_counts[j] = 0
        for j in todo:
            big = int(torch.argmax(counts))
            direction = torch.from_numpy(rng.standard_normal(c.shape[1])).to(c)
            offset = direction / direction.norm() * (1e-3 * float(c[big].norm()) + 1e-6)
            c[j], c[big] = c[big] + offset, c[big] - offset
            counts[j] = counts[big] = counts[big] / 2
            if learn_counts is not None:
                learn_counts[j] = learn_counts[big] = learn_counts[big] / 2
        return len(empty)

    # -- state ------------------------------------------------------------------------------------------------
    def _save_state(self, path, state: dict, fingerprint: dict, comm: _Comm) -> None:
        if path is None or comm.rank != 0:
            return
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"format": STATE_FORMAT, "fingerprint": json.dumps(fingerprint, sort_keys=True),
                "iteration": str(state["iteration"]), "converged": json.dumps(state["converged"]),
                "history": json.dumps(state["history"]), "repaired": json.dumps(state["repaired"]),
                "rng": json.dumps(state["rng"]), "config": json.dumps(asdict(self.config))}
        with atomic_path(path) as tmp:
            save_file({"centroids": state["centroids"].float().cpu().contiguous(),
                       "counts": state["counts"].double().cpu().contiguous()}, str(tmp), metadata=meta)

    def _load_state(self, path, fingerprint: dict) -> dict | None:
        path = Path(path)
        if not path.is_file():
            return None
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            if meta.get("format") != STATE_FORMAT:
                raise ValueError(f"{path}: not a k-means state file (format {meta.get('format')!r})")
            saved = json.loads(meta["fingerprint"])
            diff = [f"{key}: saved {saved.get(key)!r}, now {value!r}" for key, value in fingerprint.items()
                    if saved.get(key) != value]
            if diff:
                raise ValueError(f"{path}: cannot resume, the run's settings or data changed ({'; '.join(diff)}); "
                                 f"remove the state file to start over")
            return {"iteration": int(meta["iteration"]), "converged": json.loads(meta["converged"]),
                    "history": json.loads(meta["history"]), "repaired": json.loads(meta["repaired"]),
                    "rng": json.loads(meta["rng"]), "centroids": fh.get_tensor("centroids").to(self.device),
                    "counts": fh.get_tensor("counts").to(self.device)}


def cluster_statistics(data, centroids: Tensor, chunk_rows: int = 65536, block_bytes: int = 1 << 28,
             comm: _Comm | None = None) -> tuple[Tensor, float]:
    """One pass over ``data``: (cluster sizes LongTensor[K] on CPU, inertia = sum of squared distances)."""
    comm = comm or _Comm()
    store = data if isinstance(data, (FeatureStore, ArrayStore)) else ArrayStore(np.asarray(data))
    n, k = len(store), len(centroids)
    lo, hi = n * comm.rank // comm.world, n * (comm.rank + 1) // comm.world
    device = centroids.device
    sizes = torch.zeros(k, dtype=torch.float64, device=device)
    inertia = torch.zeros((), dtype=torch.float64, device=device)
    c = centroids.float()
    c_sq = (c * c).sum(1)
    for _, rows in store.chunks(chunk_rows, lo, hi):
        labels, dists = nearest_centroid(torch.from_numpy(rows).to(device), c, c_sq, max(1, block_bytes // (4 * k)))
        sizes += torch.bincount(labels, minlength=k)
        inertia += dists.double().sum()
    comm.sum_(sizes, inertia)
    return sizes.round().long().cpu(), float(inertia)


def _progress(enabled: bool, total: int, initial: int, desc: str, unit: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, unit_scale=True, dynamic_ncols=True)


def split_codebook_size(total: int, proportions: dict[str, float]) -> dict[str, int]:
    """Per-domain centroid counts for a merged codebook of ``total`` centroids.

    Largest-remainder (Hamilton) rounding: each domain gets ``floor(total · w / Σw)``; the centroids left over go
    one each to the domains with the largest fractional parts, ties to the domain listed first. The result sums to
    ``total`` exactly, e.g. 16384 with ``speech:1, music:1, sound:2`` → 4096 / 4096 / 8192 (seed 001 §IV-D) and
    1000 with ``a:1, b:1, c:1`` → 334 / 333 / 333."""
    if not proportions:
        raise ValueError("proportions must name at least one domain")
    bad = {d: w for d, w in proportions.items() if not (w > 0 and math.isfinite(w))}
    if bad:
        raise ValueError(f"domain proportions must be positive numbers, got {bad}")
    weight = sum(proportions.values())
    exact = {d: total * w / weight for d, w in proportions.items()}
    sizes = {d: int(math.floor(e)) for d, e in exact.items()}
    order = sorted(proportions, key=lambda d: -(exact[d] - sizes[d]))  # stable: ties keep the given order
    for d in order[:total - sum(sizes.values())]:
        sizes[d] += 1
    empty = [d for d, s in sizes.items() if s < 1]
    if empty:
        raise ValueError(f"a codebook of {total} leaves no centroid for domain(s) {', '.join(empty)} at "
                         f"proportions {proportions}")
    return sizes
