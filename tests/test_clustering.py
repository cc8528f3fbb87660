"""k-means engine (core/clustering.py), feature shards (core/feature_store.py) and ``codecfw cluster``."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest
import torch
import yaml

from codecfw.core.clustering.codebook import load_centroids
from codecfw.core.clustering.kmeans import (KMeans, KMeansConfig, cluster_statistics, nearest_centroid,
                                            size_histogram, split_codebook_size)
from codecfw.core.clustering.feature_store import ArrayStore, FeatureStore, FeatureWriter


def blobs(k: int = 12, dim: int = 16, n: int = 6000, seed: int = 0, spread: float = 10.0):
    """Well-separated Gaussian clusters: (data float32 [n x dim], true centers float64 [k x dim])."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, dim)) * spread
    labels = np.concatenate([np.arange(k), rng.integers(0, k, n - k)])  # every cluster populated
    return (centers[labels] + rng.normal(size=(n, dim))).astype(np.float32), centers


def match_error(found: torch.Tensor, centers: np.ndarray) -> float:
    """Largest distance from a true center to its matched centroid, after a one-to-one (permutation) match."""
    from scipy.optimize import linear_sum_assignment

    cost = torch.cdist(torch.from_numpy(centers), found.double()).numpy()
    rows, cols = linear_sum_assignment(cost)
    assert len(set(cols)) == len(centers)
    return float(cost[rows, cols].max())


def write_store(tmp_path, data: np.ndarray, parts: int = 3, shard_rows: int = 700) -> FeatureStore:
    """Data spread over ``parts`` store directories with several shards each."""
    dirs = []
    for i, block in enumerate(np.array_split(data, parts)):
        w = FeatureWriter(tmp_path / f"part{i}", data.shape[1], shard_rows=shard_rows)
        for piece in np.array_split(block, 7):  # 7 "sources" per part
            w.add(piece)
        w.close()
        dirs.append(tmp_path / f"part{i}")
    return FeatureStore(dirs)


# -------------------------------------------------------------------------------------------------------------
# Feature store
# -------------------------------------------------------------------------------------------------------------


def test_feature_store_reads_rows_across_shards_and_directories(tmp_path):
    data, _ = blobs(n=5000)
    store = write_store(tmp_path, data)
    assert len(store) == len(data) and store.dim == data.shape[1]
    assert len(store._shards) > 3  # several shards per directory
    np.testing.assert_array_equal(store.read(0, len(data)), data)
    np.testing.assert_array_equal(store.read(690, 2710), data[690:2710])
    idx = np.random.default_rng(1).integers(0, len(data), 500)
    np.testing.assert_array_equal(store.take(idx), data[idx])
    np.testing.assert_array_equal(np.concatenate([c for _, c in store.chunks(333)]), data)


def test_feature_writer_resume_drops_unflushed_source(tmp_path):
    w = FeatureWriter(tmp_path, 4, shard_rows=10)
    w.add(np.ones((6, 4)))
    w.add(np.ones((6, 4)) * 2)  # 12 rows >= 10: flushed, 2 sources done
    w.add(np.ones((3, 4)) * 3)  # pending, lost by the "crash"
    w2 = FeatureWriter(tmp_path, 4, shard_rows=10, resume=True)
    assert w2.sources_done == 2 and w2.rows == 12
    w2.add(np.ones((3, 4)) * 3)
    w2.close()
    rows = FeatureStore(tmp_path).read(0, 100)
    assert rows.shape == (15, 4) and rows[-1, 0] == 3
    with pytest.raises(ValueError, match="dim"):
        FeatureWriter(tmp_path, 5, resume=True)


# -------------------------------------------------------------------------------------------------------------
# k-means
# -------------------------------------------------------------------------------------------------------------


def test_nearest_centroid_matches_brute_force():
    x, c = torch.randn(500, 8), torch.randn(37, 8)
    labels, dists = nearest_centroid(x, c, block_rows=64)
    full = torch.cdist(x, c) ** 2
    assert torch.equal(labels, full.argmin(1))
    torch.testing.assert_close(dists, full.min(1).values, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("algorithm", ["lloyd", "minibatch"])
def test_recovers_known_clusters(tmp_path, algorithm):
    data, centers = blobs()
    store = write_store(tmp_path, data)
    cfg = KMeansConfig(len(centers), algorithm=algorithm, max_iter=15, batch_size=512, chunk_rows=1000, seed=3)
    result = KMeans(cfg).fit(store, progress=False)
    assert result.centroids.shape == (len(centers), data.shape[1])
    assert match_error(result.centroids, centers) < 0.3  # noise std 1, ~500 points a cluster
    assert result.dead == [] and int(result.cluster_sizes.sum()) == len(data)
    # Final inertia ≈ the noise: dim * variance 1 per row.
    assert abs(result.inertia_per_row - data.shape[1]) < 0.1 * data.shape[1]
    assert len(result.inertia_history) == result.iterations >= 1
    assert result.inertia_history[-1] <= result.inertia_history[0]


def test_empty_clusters_are_repaired(tmp_path):
    data, centers = blobs(k=6, dim=4, n=3000)
    # Two identical starting centroids: one of them gets no rows in the first pass.
    init = torch.from_numpy(centers).float() + 0.5
    init[1] = init[0]
    for repair in ("farthest", "split"):
        cfg = KMeansConfig(6, max_iter=30, tol=0, repair=repair)
        result = KMeans(cfg).fit(data, progress=False, init_centroids=init)
        assert result.repaired[0] >= 1, repair
        assert result.dead == [], repair
        if repair == "farthest":  # the farthest point lands in the cluster whose centroid had been stolen
            assert match_error(result.centroids, centers) < 0.3


def test_interrupted_run_resumes_identically(tmp_path):
    data, centers = blobs(n=4000)
    for algorithm in ("lloyd", "minibatch"):
        cfg = KMeansConfig(len(centers), algorithm=algorithm, max_iter=6, tol=0, batch_size=256, init="random",
                           seed=5)
        full = KMeans(cfg).fit(data, progress=False)

        class Stop(Exception):
            pass

        def interrupt(iteration, state):
            if iteration == 3:
                raise Stop

        state = tmp_path / f"{algorithm}.state"
        with pytest.raises(Stop):
            KMeans(cfg).fit(data, state_path=state, progress=False, callback=interrupt)
        seen = []
        resumed = KMeans(cfg).fit(data, state_path=state, resume=True, progress=False,
                                  callback=lambda i, s: seen.append(i))
        assert seen == [4, 5, 6]  # continued after iteration 3, did not start over
        assert torch.equal(resumed.centroids, full.centroids), algorithm
        assert resumed.inertia_history == full.inertia_history
        # Changed settings refuse to resume.
        with pytest.raises(ValueError, match="num_clusters"):
            KMeans(KMeansConfig(5, algorithm=algorithm, seed=5, init="random", batch_size=256)).fit(
                data, state_path=state, resume=True, progress=False)


def test_split_codebook_size_largest_remainder():
    assert split_codebook_size(16384, {"speech": 1, "music": 1, "sound": 2}) == \
        {"speech": 4096, "music": 4096, "sound": 8192}
    assert split_codebook_size(1000, {"a": 1, "b": 1, "c": 1}) == {"a": 334, "b": 333, "c": 333}
    assert split_codebook_size(10, {"a": 1, "b": 2}) == {"a": 3, "b": 7}
    for total in (7, 100, 4097):
        assert sum(split_codebook_size(total, {"x": 1, "y": 1, "z": 2}).values()) == total
    with pytest.raises(ValueError, match="no centroid"):
        split_codebook_size(2, {"a": 1, "b": 1, "c": 1})


def test_size_histogram_bins():
    bins = size_histogram(torch.tensor([0, 0, 1, 2, 3, 9]))
    assert [(b["min"], b["max"], b["clusters"]) for b in bins] == [(0, 0, 2), (1, 1, 1), (2, 3, 2), (4, 7, 0),
                                                                    (8, 15, 1)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _distributed_worker(rank, world, port, directory, algorithm, out):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        store = FeatureStore([directory / f"part{i}" for i in range(3)])
        cfg = KMeansConfig(12, algorithm=algorithm, max_iter=5, tol=0, batch_size=300, chunk_rows=500, seed=2)
        result = KMeans(cfg).fit(store, progress=False, state_path=directory / f"dist_{algorithm}.state")
        if rank == 0:
            torch.save({"centroids": result.centroids, "sizes": result.cluster_sizes,
                        "history": result.inertia_history}, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("algorithm", ["lloyd", "minibatch"])
def test_two_process_gloo_run_equals_single_process(tmp_path, algorithm):
    import torch.multiprocessing as mp

    from codecfw.tests import test_clustering as importable  # spawn pickles the worker by its module's name

    data, _ = blobs(n=3000)
    store = write_store(tmp_path, data)
    single = KMeans(KMeansConfig(12, algorithm=algorithm, max_iter=5, tol=0, batch_size=300, chunk_rows=500,
                                 seed=2)).fit(store, progress=False)
    out = tmp_path / "rank0.pt"
    mp.spawn(importable._distributed_worker, args=(2, _free_port(), tmp_path, algorithm, out), nprocs=2, join=True)
    dist = torch.load(out, weights_only=True)
    torch.testing.assert_close(dist["centroids"], single.centroids, rtol=1e-5, atol=1e-5)
    assert torch.equal(dist["sizes"], single.cluster_sizes)
    np.testing.assert_allclose(dist["history"], single.inertia_history, rtol=1e-5)  # float32 sum order


# -------------------------------------------------------------------------------------------------------------
# The command
# -------------------------------------------------------------------------------------------------------------


def _write_corpus(tmp_path, per_domain: int = 3):
    """Short wavs in three domains whose toy features differ (tones / noise / clicks), and a JSONL manifest."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    lines = []
    for domain in ("speech", "music", "sound"):
        for i in range(per_domain):
            if domain == "speech":
                wav = 0.3 * np.sin(2 * np.pi * (150 + 40 * i) * t)
            elif domain == "music":
                wav = 0.2 * rng.normal(size=t.shape)
            else:
                wav = np.zeros_like(t)
                wav[:: 400 + 50 * i] = 0.9
            path = tmp_path / "audio" / f"{domain}{i}.wav"
            path.parent.mkdir(exist_ok=True)
            sf.write(path, wav.astype(np.float32), 16000)
            lines.append(json.dumps({"path": f"audio/{path.name}", "domain": domain}))
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


@pytest.fixture
def toy_cli(toy_registry, tmp_path):
    from codecfw.core.registry import set_registry
    from codecfw.tests.toy_codec import TOY_RECIPE

    recipe = tmp_path / "toy.yaml"
    recipe.write_text(yaml.safe_dump(TOY_RECIPE))
    set_registry(toy_registry)
    yield recipe
    set_registry(None)


def test_cli_per_domain_end_to_end(tmp_path, toy_cli):
    from codecfw.core.cli import main

    manifest = _write_corpus(tmp_path)
    out = tmp_path / "codebooks"
    argv = ["cluster", str(toy_cli), "--data", str(manifest), "--sizes", "8,16", "--per-domain",
            "speech:1,music:1,sound:2", "-o", str(out), "--iters", "5", "--no-progress", "--device", "cpu",
            "--shard-rows", "150"]
    assert main(argv) == 0
    dim = 8  # ToySemanticConfig.dim
    for size, split in ((8, [2, 2, 4]), (16, [4, 4, 8])):
        centroids = load_centroids(out / f"kmeans_{size}.safetensors")
        assert centroids.shape == (size, dim)
        meta = json.loads((out / f"kmeans_{size}.json").read_text())
        assert meta["size"] == size and meta["dim"] == dim
        assert [d["name"] for d in meta["domains"]] == ["speech", "music", "sound"]
        assert [d["size"] for d in meta["domains"]] == split
        assert meta["domains"][2]["index_range"] == [split[0] + split[1], size]
        assert all(d["rows"] == 3 * 100 for d in meta["domains"])  # 3 files x 1 s at 100 frames/s
        assert all(len(d["inertia_history"]) == d["iterations"] for d in meta["domains"])
        src = meta["feature_source"]
        assert src["frontend"] == "toy_semantic" and len(src["frontend_config_hash"]) == 12
        assert src["feature_dim"] == dim and src["frame_rate"] == 100
        assert sum(b["clusters"] for b in meta["merged"]["cluster_size_histogram"]) == size
        assert meta["merged"]["rows"] == 900
        # Official SemantiCodec layout: combine_<tokens per 10.24 s>/codebook_<size/2>_0.npy, [size x D] float32.
        npy = np.load(out / meta["interchange_npy"])
        assert meta["interchange_npy"] == f"codebook_idx/combine_1024_audioset_dominate/codebook_{size // 2}_0.npy"
        assert npy.dtype == np.float32 and npy.shape == (size, dim)
        np.testing.assert_array_equal(npy, centroids.numpy())
        torch.testing.assert_close(load_centroids(out / meta["interchange_npy"]), centroids)
        # Each domain block was learned on that domain's features only: its rows are its own k-means result.
        speech = FeatureStore(out / "work" / "features" / "speech" / "rank000")
        assert len(speech) == 300
        sizes, _ = cluster_statistics(speech, centroids[: split[0]])
        assert int(sizes.sum()) == 300
    # A second run without --resume refuses to clobber the work dir; with --resume it reuses everything.
    assert main(argv) == 2
    before = json.loads((out / "kmeans_16.json").read_text())
    centroids = load_centroids(out / "kmeans_16.safetensors")
    assert main(argv + ["--resume"]) == 0
    after = json.loads((out / "kmeans_16.json").read_text())
    assert torch.equal(load_centroids(out / "kmeans_16.safetensors"), centroids)
    assert [d["inertia_history"] for d in after["domains"]] == [d["inertia_history"] for d in before["domains"]]


def test_cli_errors_are_clear(tmp_path, toy_cli, toy_registry, capsys, monkeypatch):
    from codecfw.core.cli import main
    from codecfw.core.types import BuildContext, SemanticFrontend

    manifest = _write_corpus(tmp_path, per_domain=1)
    base = ["cluster", str(toy_cli), "--data", str(manifest), "--out", str(tmp_path / "o"), "--no-progress"]
    assert main(base + ["--sizes", "8", "--per-domain", "speech:1,voice:1"]) == 2
    assert "no entries for domain(s) voice" in capsys.readouterr().err
    assert main(base + ["--sizes", "eight"]) == 2
    assert "--sizes" in capsys.readouterr().err
    assert main(base + ["--sizes", "4096", "--per-domain", "speech:1", "--overwrite"]) == 2
    assert "cannot learn 4096 centroids from 100" in capsys.readouterr().err
    reg = toy_registry.get("semantic", "toy_semantic")
    toy_class = type(reg.build(reg.config(), BuildContext(sample_rate=16000)))
    monkeypatch.setattr(toy_class, "extract_features", SemanticFrontend.extract_features)
    assert main(base + ["--sizes", "4", "--overwrite"]) == 2
    assert "ToySemantic exposes no continuous features" in capsys.readouterr().err


def test_cli_resumes_an_interrupted_extraction(tmp_path, toy_cli):
    import shutil

    from codecfw.core.cli import main

    manifest = _write_corpus(tmp_path)
    out = tmp_path / "cb"
    argv = ["cluster", str(toy_cli), "semantic.dim=6", "--data", str(manifest), "--sizes", "4", "-o", str(out),
            "--iters", "3", "--no-progress", "--device", "cpu", "--shard-rows", "100"]
    assert main(argv) == 0
    store_dir = out / "work" / "features" / "all" / "rank000"
    full = FeatureStore(store_dir).read(0, 10**6)
    assert full.shape == (900, 6)  # the recipe override reached the front-end
    meta = json.loads((out / "kmeans_4.json").read_text())
    assert meta["feature_source"]["overrides"] == ["semantic.dim=6"] and meta["domains"][0]["name"] == "all"
    # As if the run had died after flushing the first two files' shards.
    index = json.loads((store_dir / "index.json").read_text())
    index.update(shards=index["shards"][:2], sources_done=2, complete=False)
    (store_dir / "index.json").write_text(json.dumps(index))
    shutil.rmtree(out / "work" / "state")
    assert main(argv + ["--resume"]) == 0
    np.testing.assert_array_equal(FeatureStore(store_dir).read(0, 10**6), full)
    # Settings that change the features are refused.
    assert main(argv + ["--resume", "--chunk-seconds", "0.5"]) == 2
