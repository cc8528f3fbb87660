"""k-means: codecfw's engine against scikit-learn's MiniBatchKMeans and faiss-cpu's k-means on the same data.

Data: a synthetic mixture of ``2 K`` Gaussian clusters (N(0, 1) centres, per-cluster noise std 0.25-0.75 per
dimension, so neighbouring clusters overlap and Lloyd does not converge in a few passes) in D
dimensions, float32, generated from a fixed seed. codecfw reads it from an on-disk feature store (memory-mapped
shards, as ``codecfw cluster`` does); scikit-learn and faiss get the same rows as an in-memory array. Every method's
final centroids are scored by one shared pass (sum of squared distances to the nearest centroid, per row), so the
inertia ratios compare like with like. Methods:

- ``codecfw lloyd``: k-means++ on a sample, ``--iters`` full Lloyd passes (tol 0).
- ``codecfw minibatch``: k-means++ on a sample, ``--mb-epochs`` epochs of ``--mb-batch`` rows a step.
- ``sklearn MiniBatchKMeans``: its defaults (batch 1024, k-means++ on 3·batch rows, early stopping), n_init=1.
- ``faiss Kmeans``: ``--iters`` iterations on all rows (``max_points_per_centroid`` raised so it does not subsample),
  random init from the data, as faiss does.
- ``--reference DIR`` (a checkout holding ``kmeans_pytorch/__init__.py`` of haoheliu/kmeans_pytorch, the tool
  SemantiCodec's codebooks were made with): one Lloyd iteration of its ``kmeans`` (``tol=inf`` stops it after one),
  timed and projected to ``--iters``; its per-cluster Python loop is the floor to beat, not the target.

Timings on the shared 2-core development machine are noisy (other processes run beside it); compare ratios.

    .venv/bin/python benchmarks/kmeans.py                     # 200k x 768 -> 1024 centroids, a few minutes
    .venv/bin/python benchmarks/kmeans.py --small             # 50k x 768 -> 256, under a minute
    .venv/bin/python benchmarks/kmeans.py --large             # the issue's 1M x 768 -> 4096 (long on 2 cores)
    .venv/bin/python benchmarks/kmeans.py --reference /tmp/kmeans_pytorch_ref --device cuda
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from codecfw.core.clustering.kmeans import KMeans, KMeansConfig, cluster_statistics
from codecfw.core.clustering.feature_store import ArrayStore, FeatureStore, FeatureWriter


def make_data(rows: int, dim: int, clusters: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    true = 2 * clusters
    centres = rng.standard_normal((true, dim), dtype=np.float32)
    scale = rng.uniform(0.5, 1.5, true).astype(np.float32)
    x = np.empty((rows, dim), np.float32)
    for a in range(0, rows, 65536):
        b = min(rows, a + 65536)
        lab = rng.integers(0, true, b - a)
        x[a:b] = centres[lab] + rng.standard_normal((b - a, dim), dtype=np.float32) * scale[lab, None] * 0.5
    return x


def score(x: np.ndarray, centroids, device: str) -> tuple[float, int]:
    c = torch.as_tensor(np.asarray(centroids, dtype=np.float32)).to(device)
    sizes, inertia = cluster_statistics(ArrayStore(x), c)
    return inertia / len(x), int((sizes == 0).sum())


def run_codecfw(store, k: int, args, algorithm: str) -> dict:
    cfg = KMeansConfig(k, algorithm=algorithm, max_iter=args.iters if algorithm == "lloyd" else args.mb_epochs,
                       tol=0, batch_size=args.mb_batch, seed=0, device=args.device)
    t = time.perf_counter()
    result = KMeans(cfg).fit(store, progress=False)
    return {"centroids": result.centroids.numpy(), "seconds": time.perf_counter() - t,
            "init_seconds": result.init_seconds, "passes": result.iterations,
            "work": f"{result.iterations} {'passes' if algorithm == 'lloyd' else 'epochs'}, "
                    f"init {result.init_seconds:.1f} s"}


def run_sklearn(x: np.ndarray, k: int, args) -> dict:
    from sklearn.cluster import MiniBatchKMeans
    from threadpoolctl import threadpool_limits

    # Its defaults (batch 1024, early stopping after 10 batches without improvement), or --sk-equal-work: the same
    # batch size and epochs as codecfw minibatch, no early stopping.
    kw = (dict(batch_size=args.mb_batch, max_iter=args.mb_epochs, max_no_improvement=None, tol=0.0)
          if args.sk_equal_work else {})
    with threadpool_limits(args.threads):
        t = time.perf_counter()
        km = MiniBatchKMeans(n_clusters=k, random_state=0, n_init=1, compute_labels=False, **kw).fit(x)
        seconds = time.perf_counter() - t
    return {"centroids": km.cluster_centers_, "seconds": seconds,
            "work": f"{km.n_steps_} steps of {km._batch_size}, {km.n_iter_} epochs"}


def run_faiss(x: np.ndarray, k: int, args, gpu: bool | None = None) -> dict | None:
    """faiss's k-means; on the GPU when ``gpu`` (default: when ``args.device`` is CUDA)."""
    try:
        import faiss
    except ImportError:
        return None
    faiss.omp_set_num_threads(args.threads)
    gpu = args.device.startswith("cuda") if gpu is None else gpu
    km = faiss.Kmeans(x.shape[1], k, niter=args.iters, seed=1234, verbose=False,
                      max_points_per_centroid=len(x) // k + 1, gpu=gpu)
    t = time.perf_counter()
    km.train(x)
    return {"centroids": km.centroids, "seconds": time.perf_counter() - t, "passes": args.iters,
            "init_seconds": 0.0, "work": f"{args.iters} passes"}


def run_reference(x: np.ndarray, k: int, args) -> dict | None:
    """One iteration of haoheliu/kmeans_pytorch's ``kmeans`` (its loop stops when the shift < tol = inf)."""
    init = Path(args.reference) / "kmeans_pytorch" / "__init__.py"
    if not init.is_file():
        print(f"--reference: {init} not found; skipping the reference", file=sys.stderr)
        return None
    spec = importlib.util.spec_from_file_location("kmeans_pytorch_reference", init)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    xt = torch.from_numpy(x)
    t = time.perf_counter()
    _, centres = module.kmeans(xt, k, distance="euclidean_mem_efficient", tol=float("inf"), trunk_size=len(x),
                               device=torch.device(args.device))
    one = time.perf_counter() - t
    return {"centroids": centres.numpy(), "seconds": one * args.iters, "passes": args.iters, "init_seconds": 0.0,
            "work": f"1 pass x {args.iters} (projected)", "note": "inertia after ONE pass"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--clusters", type=int, default=1024)
    p.add_argument("--iters", type=int, default=10, help="Lloyd passes for codecfw lloyd and faiss")
    p.add_argument("--mb-epochs", type=int, default=2)
    p.add_argument("--mb-batch", type=int, default=4096)
    p.add_argument("--small", action="store_true", help="50k x 768 -> 256")
    p.add_argument("--large", action="store_true", help="1M x 768 -> 4096 (the issue's size)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reference", help="folder holding haoheliu/kmeans_pytorch's kmeans_pytorch/__init__.py")
    p.add_argument("--sk-equal-work", action="store_true",
                   help="run MiniBatchKMeans with codecfw minibatch's batch size and epochs, no early stopping")
    p.add_argument("--skip", default="", help="comma-separated: sklearn,faiss,minibatch")
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args()
    if args.small:
        args.rows, args.clusters = 50_000, 256
    if args.large:
        args.rows, args.clusters = 1_000_000, 4096
    skip = set(filter(None, args.skip.split(",")))
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    print(f"data: {args.rows} x {args.dim} float32 -> {args.clusters} centroids; device {args.device}, "
          f"{args.threads} threads", flush=True)
    x = make_data(args.rows, args.dim, args.clusters)
    results = compare(x, args, skip)
    report(results)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))


def compare(x: np.ndarray, args, skip: set[str], extra_runs: list | None = None, on_result=None) -> dict[str, dict]:
    """Every method on ``x`` (see the module docstring), each scored by the same pass; ``args`` carries main()'s
    options. ``extra_runs``: more ``(name, fn(x) -> result | None)`` pairs (another device's faiss).
    ``on_result(results so far)`` is called after each method."""
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        writer = FeatureWriter(tmp, args.dim, shard_rows=131072)
        for a in range(0, len(x), 10_000):
            writer.add(x[a:a + 10_000])
        writer.close()
        store = FeatureStore(tmp)
        runs = [("codecfw lloyd", lambda: run_codecfw(store, args.clusters, args, "lloyd"))]
        if "minibatch" not in skip:
            runs.append(("codecfw minibatch", lambda: run_codecfw(store, args.clusters, args, "minibatch")))
        if "sklearn" not in skip:
            runs.append(("sklearn MiniBatchKMeans", lambda: run_sklearn(x, args.clusters, args)))
        if "faiss" not in skip:
            runs.append(("faiss Kmeans", lambda: run_faiss(x, args.clusters, args, getattr(args, "faiss_gpu", None))))
        if args.reference:
            runs.append(("reference kmeans_pytorch", lambda: run_reference(x, args.clusters, args)))
        runs += [(name, lambda fn=fn: fn(x)) for name, fn in extra_runs or []]
        # codecfw's fit() ends with a scoring pass over the data (sizes, dead centroids, final inertia) that the
        # others do not run; time one such pass and subtract it so the wall times compare the same work.
        t = time.perf_counter()
        cluster_statistics(store, torch.zeros(args.clusters, args.dim).to(args.device))
        scoring_pass = time.perf_counter() - t
        for name, fn in runs:
            out = fn()
            if out is None:
                print(f"{name:26s} not installed; skipped", flush=True)
                continue
            if name.startswith("codecfw"):
                out["seconds"] -= scoring_pass
            out["inertia_per_row"], out["dead"] = score(x, out.pop("centroids"), args.device)
            results[name] = out
            print(f"{name:26s} {out['seconds']:9.1f} s  inertia/row {out['inertia_per_row']:.5f}  "
                  f"dead {out['dead']:5d}  ({out['work']}{'; ' + out['note'] if 'note' in out else ''})", flush=True)
            if on_result is not None:
                on_result(dict(results))
    return results


def report(results: dict[str, dict]) -> None:
    base = results["codecfw lloyd"]
    print("\nratios (codecfw lloyd vs X): wall time = codecfw / X (below 1: codecfw faster); "
          "inertia = codecfw / X (below 1: codecfw better)")
    for name, r in results.items():
        if name != "codecfw lloyd":
            print(f"  vs {name:26s} time {base['seconds'] / r['seconds']:6.3f}   "
                  f"inertia {base['inertia_per_row'] / r['inertia_per_row']:6.4f}")
    lloyd = {n: (r["seconds"] - r["init_seconds"]) / r["passes"] for n, r in results.items() if r.get("passes")
             and "minibatch" not in n}
    if len(lloyd) > 1:
        print("  seconds per full pass (init excluded): " + ", ".join(f"{n} {v:.2f}" for n, v in lloyd.items()))
        for n, v in lloyd.items():
            if n != "codecfw lloyd":
                print(f"  per-pass time codecfw lloyd / {n}: {lloyd['codecfw lloyd'] / v:.3f}")
    if "codecfw minibatch" in results and "sklearn MiniBatchKMeans" in results:
        mb, sk = results["codecfw minibatch"], results["sklearn MiniBatchKMeans"]
        print(f"  codecfw minibatch vs sklearn MiniBatchKMeans: time {mb['seconds'] / sk['seconds']:6.3f}   "
              f"inertia {mb['inertia_per_row'] / sk['inertia_per_row']:6.4f}")


if __name__ == "__main__":
    main()
