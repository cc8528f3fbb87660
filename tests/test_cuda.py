"""CUDA-only checks of the training loop (``pytest -m cuda``; skipped without a CUDA device): bf16 and fp16 steps,
no host-device synchronisation inside a training step, DDP over NCCL, compiled DAC blocks, k-means on the GPU.
benchmarks/gpu_check.py runs them whenever a GPU is lent (docs/gpu.md)."""

from __future__ import annotations

import math
import socket

import pytest
import torch

from codecfw.core.config import validate_recipe
from codecfw.core.training.trainer import Trainer

from .training_support import make_corpus, toy_recipe, training_registry

pytestmark = pytest.mark.cuda


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"), corrupt=False)


def _trainer(recipe: dict, run_dir, **kwargs) -> Trainer:
    registry = training_registry()
    return Trainer(validate_recipe(recipe, registry), registry=registry, run_dir=run_dir, device="cuda",
                   progress=False, **kwargs).setup()


def _first_step_loss(corpus, tmp_path, precision: str, objective: str) -> tuple[float, Trainer]:
    trainer = _trainer(toy_recipe(corpus, objective=objective, precision=precision, seed=5), tmp_path / precision)
    trainer._data = trainer._start_epoch()
    batch = trainer._next_batch()
    torch.manual_seed(11)
    stats = trainer.train_step([batch])
    return float(stats["loss/generator_total"]), trainer


@pytest.mark.parametrize("objective", ["adversarial", "diffusion"])
def test_bf16_and_fp16_steps_agree_with_fp32(corpus, tmp_path, objective):
    torch.backends.cuda.matmul.allow_tf32 = False
    fp32, t32 = _first_step_loss(corpus, tmp_path, "fp32", objective)
    assert t32.amp_dtype is None
    for precision, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        loss, trainer = _first_step_loss(corpus, tmp_path, precision, objective)
        assert trainer.amp_dtype is dtype
        assert trainer.scaler.is_enabled() == (precision == "fp16")
        assert math.isfinite(loss) and loss == pytest.approx(fp32, rel=0.05)
        assert all(torch.isfinite(p).all() for p in trainer.codec.parameters())
        trainer.close()
    t32.close()


@pytest.mark.parametrize("objective", ["adversarial", "diffusion"])
def test_training_step_makes_no_host_device_sync(corpus, tmp_path, objective):
    """train_step and the per-step record must not wait for the GPU: the only sync is the log flush every
    ``log_every`` steps. ``set_sync_debug_mode("error")`` raises on any synchronising CUDA call."""
    trainer = _trainer(toy_recipe(corpus, objective=objective, precision="bf16", ema_decay=0.9), tmp_path / "run")
    trainer._data = trainer._start_epoch()
    batches = [trainer._next_batch() for _ in range(3)]
    trainer._record(trainer.train_step([batches[0]]))  # warm-up: allocator, cuDNN plans
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for batch in batches[1:]:
            trainer._record(trainer.train_step([batch]))
            trainer.step += 1
    finally:
        torch.cuda.set_sync_debug_mode("default")
    trainer._flush_log()  # the flush is where the host reads the values
    trainer.close()


def test_ddp_step_over_nccl(corpus, tmp_path):
    """Two GPUs: two ranks train through the real loop on NCCL and end with identical weights. One GPU: a one-rank
    NCCL group drives the loop's DDP wrapper and collectives, and DDP's gradient equals the plain module's."""
    import torch.distributed as dist
    import torch.multiprocessing as mp

    from codecfw.tests.cuda_support import nccl_worker

    if not dist.is_nccl_available():
        pytest.skip("this torch build has no NCCL")
    world = min(2, torch.cuda.device_count())
    recipe = toy_recipe(corpus, steps=3, valid_every=100, checkpoint_every=100)
    recipe["data"]["valid"] = None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(nccl_worker, args=(world, port, str(tmp_path), recipe), nprocs=world, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world)]
    assert all(r["backend"] == "nccl" for r in results)
    if world > 1:
        assert results[0]["steps"] == results[1]["steps"] == 3
        for key, value in results[0]["state"].items():
            torch.testing.assert_close(results[1]["state"][key], value, msg=key)
    else:
        r = results[0]
        assert r["ddp"] == "DistributedDataParallel" and r["flag"] is True
        assert float(r["mean"]) == 3.0
        assert r["grads"]
        for ddp_grad, plain_grad in r["grads"]:
            torch.testing.assert_close(ddp_grad, plain_grad)


def test_compiled_dac_blocks_match_eager_on_cuda():
    from .test_precision_compile import _compiled_matches_eager

    _compiled_matches_eager("inductor", device="cuda", grad_rtol=1e-3, atol=1e-5)


def test_kmeans_on_cuda_matches_cpu():
    import numpy as np

    from codecfw.core.clustering.kmeans import KMeans, KMeansConfig
    from codecfw.core.clustering.feature_store import ArrayStore

    rng = np.random.default_rng(0)
    x = (rng.standard_normal((16, 24)).repeat(250, 0) + 0.1 * rng.standard_normal((4000, 24))).astype(np.float32)
    inertia = {}
    for device in ("cpu", "cuda"):
        result = KMeans(KMeansConfig(16, algorithm="lloyd", max_iter=5, tol=0, seed=0, device=device)).fit(
            ArrayStore(x), progress=False)
        inertia[device] = result.inertia
    assert inertia["cuda"] == pytest.approx(inertia["cpu"], rel=1e-3)
