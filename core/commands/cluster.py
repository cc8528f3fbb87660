"""``codecfw cluster RECIPE [KEY=VALUE ...] --data MANIFEST --sizes 4096,8192 [--per-domain speech:1,music:1,sound:2] -o OUT``

Semantic codebooks from any front-end's continuous features (``SemanticFrontend.extract_features``): features are
extracted once into on-disk shards (per domain), k-means runs for every requested size (per domain, then merged in
the given proportions, SemantiCodec seed 001 §IV-D), and each size is written as

- ``OUT/kmeans_<size>.safetensors``: tensor ``centroids`` float32 ``[size x D]`` (domain blocks in the order given);
- ``OUT/kmeans_<size>.json``: sizes, domains, proportions and row ranges, feature source (front-end kind, config and
  its hash, recipe hash), k-means settings, inertia per iteration, cluster-size histogram, dead centroids;
- ``OUT/codebook_idx/combine_<C>_audioset_dominate/codebook_<size/2>_0.npy``: the official SemantiCodec layout
  (``C`` = semantic tokens per 10.24 s), for interchange.

Run it under ``torchrun --nproc-per-node N`` to split extraction and k-means over ranks (shared filesystem).
``--resume`` continues an interrupted run: finished feature shards and k-means states are reused.
See docs/clustering.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path

from . import add_recipe_arguments, recipe_arguments


# --------------------------------------------------------------------------------------------------------------
# Input: the data pipeline's manifests and reader (codecfw.core.data.dataset)
# --------------------------------------------------------------------------------------------------------------


def read_entries(source: str | Path, split: str | None = None) -> list[dict]:
    """``{"path", "domain"}`` of each file of a manifest or folder (``codecfw.core.data.dataset.load_entries``)."""
    from ..data.dataset import load_entries

    return [{"path": Path(e.path), "domain": e.domain} for e in load_entries(source, split)]


def read_audio(path: str | Path, sample_rate: int):
    """Mono waveform ``Tensor[N]`` at ``sample_rate`` (``codecfw.core.data.dataset.read_audio``: channel mean, sinc
    resampling)."""
    from ..data.dataset import read_audio as data_read_audio

    return data_read_audio(path, sample_rate).reshape(-1)


# --------------------------------------------------------------------------------------------------------------
# Feature extraction
# --------------------------------------------------------------------------------------------------------------


def extract_domain(frontend, entries: list[dict], directory: Path, sample_rate: int, device, args,
                   meta: dict, log) -> dict:
    """Extract the features of ``entries`` into a feature store at ``directory``; returns counts."""
    import numpy as np
    import torch

    from ..clustering.feature_store import FeatureWriter, read_index, store_is_complete

    index = directory / "index.json"
    if index.is_file():
        old_meta = read_index(index).get("meta", {})
        if old_meta != meta:
            changed = sorted(k for k in set(meta) | set(old_meta) if meta.get(k) != old_meta.get(k))
            raise ValueError(f"{directory}: features were extracted with other settings ({', '.join(changed)}); "
                             f"use another --work-dir or --overwrite")
        if store_is_complete(directory):
            return {"files": 0, "skipped": 0, "resumed": True}
    writer = None
    if index.is_file():
        old = read_index(index)
        writer = FeatureWriter(directory, old["dim"], args.shard_rows, args.feature_dtype, resume=True, meta=meta)
    done = writer.sources_done if writer else 0
    window = int(args.chunk_seconds * sample_rate) if args.chunk_seconds else None
    skipped = 0
    from tqdm.auto import tqdm

    bar = tqdm(entries[done:], desc=f"features {meta['domain']}", unit="file", disable=args.no_progress)
    for i, entry in enumerate(bar, start=done):
        try:
            wav = read_audio(entry["path"], sample_rate)
            if wav.numel() == 0:
                raise ValueError("empty")
            pieces = _windows(wav, window, int(args.min_seconds * sample_rate))
            rows = []
            with torch.inference_mode():
                for batch in pieces:
                    feats = frontend.extract_features(batch.to(device))  # [B x D x T]
                    if feats.ndim != 3:
                        raise ValueError(f"extract_features returned shape {list(feats.shape)}, expected [B x D x T]")
                    rows.append(feats.transpose(1, 2).reshape(-1, feats.shape[1]).float().cpu().numpy())
            rows = np.concatenate(rows) if rows else np.empty((0, 0), np.float32)
            if not np.isfinite(rows).all():
                raise ValueError("features contain NaN/Inf")
        except NotImplementedError:
            raise  # the front-end exposes no features: every file would fail the same way
        except Exception as exc:  # one bad file must not stop a dataset-sized run
            log(f"skipping {entry['path']}: {type(exc).__name__}: {exc}")
            skipped += 1
            rows = None
        if writer is None:
            if rows is None or rows.size == 0:
                continue  # nothing known about D yet; the next file decides
            writer = FeatureWriter(directory, rows.shape[1], args.shard_rows, args.feature_dtype, meta=meta)
            writer.index["sources_done"] = i  # the unreadable sources before the first usable one
        writer.add(rows if rows is not None and rows.size else np.empty((0, writer.dim), np.float32))
    if writer is None:
        raise ValueError(f"no features could be extracted for domain {meta['domain']!r} "
                         f"({len(entries)} files, {skipped} skipped)")
    writer.close()
    return {"files": len(entries) - done, "skipped": skipped, "resumed": done > 0}


def _windows(wav, window: int | None, min_samples: int):
    """Batches ``Tensor[B x 1 x W]`` of equal-length windows of ``wav : Tensor[N]``, then the shorter tail."""
    n = wav.numel()
    if not window or n <= window:
        return [wav.reshape(1, 1, -1)]
    full = n // window
    out = [wav[:full * window].reshape(full, 1, window)[i:i + 8] for i in range(0, full, 8)]
    if n - full * window >= min_samples:
        out.append(wav[full * window:].reshape(1, 1, -1))
    return out


# --------------------------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------------------------


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--sizes: expected comma-separated integers, got {text!r}") from None
    if not sizes or any(s < 2 for s in sizes):
        raise ValueError(f"--sizes: every codebook size must be >= 2, got {text!r}")
    return list(dict.fromkeys(sizes))


def parse_proportions(text: str) -> dict[str, float]:
    """``speech:1,music:1,sound:2`` → ordered ``{domain: weight}``."""
    out: dict[str, float] = {}
    for item in (s.strip() for s in text.split(",") if s.strip()):
        name, sep, value = item.partition(":")
        try:
            weight = float(value) if sep else 1.0
        except ValueError:
            raise ValueError(f"--per-domain: {item!r} is not domain:weight") from None
        if not name or name in out or weight <= 0:
            raise ValueError(f"--per-domain: {item!r} needs a new domain name and a weight > 0")
        out[name] = weight
    if not out:
        raise ValueError("--per-domain: no domains given")
    return out


def _setup_distributed(device_arg: str):
    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = device_arg if device_arg != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and world > 1:
        device = f"cuda:{local}"
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return torch.device(device)


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def run(args) -> int:
    import torch

    from ..clustering.kmeans import KMeans, KMeansConfig, cluster_statistics, size_histogram, split_codebook_size
    from ..config import RecipeError, load_recipe
    from ..data.dataset import NoUsableAudioError
    from ..clustering.codebook import write_codebook
    from ..clustering.feature_store import FeatureStore
    from ..registry import get_registry
    from ..codec import FrozenPartsError, check_pretrained_parts
    from ..types import BuildContext

    def log(msg: str) -> None:
        if rank == 0:
            print(msg, file=sys.stderr, flush=True)

    try:
        sizes = parse_sizes(args.sizes)
        proportions = parse_proportions(args.per_domain) if args.per_domain else None
        recipe = load_recipe(args.recipe, recipe_arguments(args)[1])
        entries = read_entries(args.data, args.split)
    except (RecipeError, FileNotFoundError, ValueError, NoUsableAudioError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    device = _setup_distributed(args.device)
    import torch.distributed as dist

    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    out = Path(args.out)
    work = Path(args.work_dir) if args.work_dir else out / "work"
    if rank == 0:
        if work.exists() and any(work.iterdir()) and not args.resume:
            if not args.overwrite:
                print(f"error: {work} holds an earlier run; pass --resume to continue it or --overwrite to start "
                      f"over", file=sys.stderr)
                return 2
            shutil.rmtree(work)
        out.mkdir(parents=True, exist_ok=True)
    if world > 1:
        dist.barrier()

    # Domains: the manifest's labels, or one domain "all".
    if proportions:
        missing = sorted({str(e["path"]) for e in entries if e["domain"] is None})
        if missing:
            print(f"error: {args.data}: --per-domain needs a 'domain' on every entry; {len(missing)} have none "
                  f"(first: {missing[0]})", file=sys.stderr)
            return 2
        groups = {d: [e for e in entries if e["domain"] == d] for d in proportions}
        empty = [d for d, g in groups.items() if not g]
        if empty:
            found = sorted({e["domain"] for e in entries})
            print(f"error: {args.data}: no entries for domain(s) {', '.join(empty)}; the manifest has "
                  f"{', '.join(found)}", file=sys.stderr)
            return 2
    else:
        proportions, groups = {"all": 1.0}, {"all": entries}
    try:
        plans = {size: split_codebook_size(size, proportions) for size in sizes}
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    semantic_cfg = recipe.semantic.model_dump(mode="json")
    torch.manual_seed(args.seed)  # front-ends with randomly initialised parts extract the same features every run
    frontend = get_registry().build("semantic", recipe.semantic, BuildContext(sample_rate=recipe.sample_rate))
    if not frontend.clusterable():
        print(f"error: {type(frontend).__name__} exposes no continuous features for clustering (the semantic "
              f"front-end {recipe.semantic.kind!r} implements no extract_features)", file=sys.stderr)
        return 2
    # The features must come from the pretrained extractor; a codebook (what clustering makes) is not needed yet.
    parts = [replace(p, key=f"semantic.{p.key}", loaded=p.loaded or not p.feeds_features)
             for p in frontend.pretrained_parts()]
    try:
        check_pretrained_parts(parts, recipe.allow_random_frozen, f"codecfw cluster {args.recipe}",
                               slots=("semantic",))
    except FrozenPartsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    frontend = frontend.to(device).eval()
    source = {"frontend": recipe.semantic.kind, "frontend_config": semantic_cfg,
              "frontend_config_hash": _hash(semantic_cfg), "frame_rate": float(frontend.frame_rate),
              "sample_rate": recipe.sample_rate, "recipe": recipe.name, "recipe_path": str(args.recipe),
              "recipe_hash": recipe.config_hash(), "overrides": recipe_arguments(args)[1], "manifest": str(args.data),
              "chunk_seconds": args.chunk_seconds}

    # 1. Features, per domain and rank.
    stores, counts = {}, {}
    for domain, group in groups.items():
        meta = {"domain": domain, "frontend_config_hash": source["frontend_config_hash"],
                "sample_rate": recipe.sample_rate, "chunk_seconds": args.chunk_seconds,
                "min_seconds": args.min_seconds, "manifest": str(args.data), "files": len(group), "world": world}
        base = work / "features" / domain
        try:
            extract_domain(frontend, group[rank::world], base / f"rank{rank:03d}", recipe.sample_rate, device, args,
                           meta, log)
        except (ValueError, NotImplementedError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if world > 1:
            dist.barrier()
        stores[domain] = FeatureStore([base / f"rank{r:03d}" for r in range(world)])
        counts[domain] = len(stores[domain])
        log(f"{domain}: {len(group)} files, {counts[domain]} feature rows of dim {stores[domain].dim}")
    del frontend
    dim = next(iter(stores.values())).dim
    source["feature_dim"] = dim

    # 2. k-means for every (domain, size) pair needed, each once.
    settings = dict(algorithm=args.algorithm, init=args.init, max_iter=args.iters, tol=args.tol,
                    batch_size=args.batch_size, chunk_rows=args.chunk_rows, init_sample=args.init_sample,
                    repair=args.repair, seed=args.seed, device=str(device))
    results = {}
    for size, plan in plans.items():
        for domain, k in plan.items():
            if (domain, k) in results:
                continue
            try:
                km = KMeans(KMeansConfig(k, **settings))
                results[domain, k] = km.fit(stores[domain], state_path=work / "state" / f"{domain}_{k}.safetensors",
                                            resume=True, progress=not args.no_progress, desc=f"k-means {domain} K={k}")
            except ValueError as exc:
                print(f"error: domain {domain!r}, {k} centroids: {exc}", file=sys.stderr)
                return 2
            r = results[domain, k]
            log(f"{domain} K={k}: {r.iterations} iterations{' (converged)' if r.converged else ''}, inertia/row "
                f"{r.inertia_per_row:.6g}, dead centroids {len(r.dead)}, {r.seconds:.1f} s")

    # 3. Merge and save.
    for size, plan in plans.items():
        centroids = torch.cat([results[d, k].centroids for d, k in plan.items()])
        domains, start = [], 0
        for d, k in plan.items():
            r = results[d, k]
            domains.append({"name": d, "proportion": proportions[d], "size": k, "index_range": [start, start + k],
                            "files": len(groups[d]), **r.report()})
            start += k
        if len(plan) > 1:
            merged = {"sizes": torch.zeros(size, dtype=torch.long), "inertia": 0.0, "own_share": {}}
            for dom in domains:
                s, inertia = cluster_statistics(stores[dom["name"]], centroids.to(device), args.chunk_rows)
                merged["sizes"] += s
                merged["inertia"] += inertia
                a, b = dom["index_range"]
                merged["own_share"][dom["name"]] = float(s[a:b].sum()) / max(int(s.sum()), 1)
            sizes_m = merged.pop("sizes")
            total = sum(counts.values())
            merged.update(rows=total, inertia_per_row=merged["inertia"] / max(total, 1),
                          dead_centroids=torch.nonzero(sizes_m == 0).flatten().tolist(),
                          cluster_size_histogram=size_histogram(sizes_m))
        else:
            merged = {k: domains[0][k] for k in ("rows", "inertia", "inertia_per_row", "dead_centroids",
                                                 "cluster_size_histogram")}
        if rank == 0:
            write_codebook(out, centroids, source["frame_rate"], {
                "proportions_rule": "largest remainder (floor of size*w/sum(w); leftovers to the largest fractions, "
                                    "ties to the domain listed first)",
                "domains": domains, "merged": merged, "feature_source": source,
                "kmeans": {**settings, "world_size": world}},
                {"frontend": source["frontend"], "frontend_config_hash": source["frontend_config_hash"]})
            log(f"wrote {out / f'kmeans_{size}.safetensors'} [{size} x {dim}]")
    if args.clean and rank == 0:
        shutil.rmtree(work, ignore_errors=True)
    if world > 1:
        dist.barrier()
    return 0


def register(sub) -> None:
    p = sub.add_parser("cluster", help="learn k-means semantic codebooks from a front-end's features",
                       description="Extract a recipe's semantic front-end features from a manifest, learn k-means "
                                   "codebooks of several sizes (optionally per domain, merged in proportions) and "
                                   "save them as safetensors + JSON + the official SemantiCodec .npy layout.")
    add_recipe_arguments(p)
    p.add_argument("--data", required=True, metavar="MANIFEST", help="JSONL/CSV manifest (path, domain) or folder")
    p.add_argument("--split", help="only the manifest rows of this split (rows without a split always count)")
    p.add_argument("--sizes", required=True, help="codebook sizes, e.g. 4096,8192,16384")
    p.add_argument("--per-domain", metavar="D:W,...",
                   help="cluster each domain separately and merge in these proportions, e.g. speech:1,music:1,sound:2")
    p.add_argument("-o", "--out", "--output", dest="out", required=True, metavar="OUT", help="output folder")
    p.add_argument("--work-dir", help="features and k-means states (default OUT/work)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its work dir")
    p.add_argument("--overwrite", action="store_true", help="discard an earlier run's work dir")
    p.add_argument("--clean", action="store_true", help="delete the work dir (features) when done")
    g = p.add_argument_group("k-means")
    g.add_argument("--algorithm", choices=["lloyd", "minibatch"], default="lloyd")
    g.add_argument("--iters", type=int, default=20, help="Lloyd passes or mini-batch epochs (default 20)")
    g.add_argument("--tol", type=float, default=1e-4, help="stop at this relative inertia improvement (0: never)")
    g.add_argument("--batch-size", type=int, default=4096, help="mini-batch rows per step (default 4096)")
    g.add_argument("--init", choices=["k-means++", "random"], default="k-means++")
    g.add_argument("--init-sample", type=int, help="rows the init draws from (default max(3K, 10000))")
    g.add_argument("--repair", choices=["farthest", "split"], default="farthest", help="empty-cluster repair")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--chunk-rows", type=int, default=65536, help="rows streamed from disk at a time")
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    g = p.add_argument_group("features")
    g.add_argument("--chunk-seconds", type=float, default=30.0,
                   help="cut files into windows this long for the front-end (0: whole files)")
    g.add_argument("--min-seconds", type=float, default=0.5, help="drop a file's tail window shorter than this")
    g.add_argument("--feature-dtype", choices=["float32", "float16"], default="float32")
    g.add_argument("--shard-rows", type=int, default=262144, help="rows per feature shard on disk")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
