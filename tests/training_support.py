"""Shared helpers of the training-loop tests: a tiny audio corpus, toy recipes, and the DDP worker that
``torch.multiprocessing.spawn`` imports by name (test modules are not importable from a spawned child)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch


def make_corpus(root: Path, n_train: int = 8, n_valid: int = 2, seconds: float = 0.5, corrupt: bool = True) -> Path:
    """``root/train`` (tones + noise, plus one corrupt file) and ``root/valid`` at 16 kHz."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("valid", n_valid)):
        (root / split).mkdir(parents=True, exist_ok=True)
        t = np.arange(int(16000 * seconds)) / 16000
        for i in range(n):
            x = 0.3 * np.sin(2 * np.pi * (150 + 40 * i) * t) + 0.05 * rng.standard_normal(len(t))
            sf.write(root / split / f"{i:02d}.wav", x.astype(np.float32), 16000)
    if corrupt:
        (root / "train" / "corrupt.wav").write_bytes(b"RIFF....WAVEnot really audio")
    return root


def toy_recipe(corpus: Path, *, objective: str = "adversarial", acoustic: str = "toy_vq", **train: Any) -> dict:
    recipe: dict[str, Any] = {
        "name": "toy",
        "sample_rate": 16000,
        "semantic": {"kind": "toy_semantic"},
        "acoustic": {"kind": acoustic},
        "decoder": {"kind": "toy_decoder" if objective == "adversarial" else "toy_diffusion"},
        "data": {"train": str(corpus / "train"), "valid": str(corpus / "valid"), "segment_seconds": 0.1,
                 "batch_size": 2, "valid_clips": 1},
        "train": {"steps": 8, "lr": 1e-3, "log_every": 1, "valid_every": 4, "checkpoint_every": 4, "seed": 3,
                  **train},
    }
    if objective == "adversarial":
        recipe["discriminators"] = [{"kind": "toy_discriminator"}]
        recipe["losses"] = [{"kind": "toy_l1", "weight": 5.0}]
    return recipe


def training_registry():
    from codecfw.core.registry import Registry

    from . import toy_codec, toy_training

    registry = Registry(strict=True)
    registry.register_module(toy_codec, name="toy_codec", distribution="codecfw-tests")
    registry.register_module(toy_training, name="toy_training", distribution="codecfw-tests")
    return registry


def read_metrics(run_dir: Path, split: str = "train") -> dict[int, dict]:
    """Last logged line per step of ``metrics.jsonl``."""
    rows: dict[int, dict] = {}
    for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row["split"] == split:
            rows[row["step"]] = row
    return rows


# ----------------------------------------------------------------------------------------------------------------
# DDP worker
# ----------------------------------------------------------------------------------------------------------------


class _ListLoader:
    """A loader of precomputed batches (no sampler): ranks can be given different batch counts."""

    def __init__(self, batches: list[dict]) -> None:
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)


def ddp_worker(rank: int, world_size: int, port: int, out: str, scenarios: list[tuple[str, dict, str]]) -> None:
    """Run each ``(name, recipe, mode)`` scenario as rank ``rank`` of a gloo job; write per-rank results."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from codecfw.core.config import validate_recipe
    from codecfw.core.training.distributed import shutdown_distributed
    from codecfw.core.training.trainer import Trainer

    registry = training_registry()
    try:
        for name, data, mode in scenarios:
            recipe = validate_recipe(data, registry)
            kwargs: dict[str, Any] = {}
            if mode == "unequal":
                # rank 0 has 3 batches an epoch, rank 1 has 5: every rank must end each epoch after 3
                g = torch.Generator().manual_seed(rank)
                n = 3 if rank == 0 else 5
                kwargs["train_loader"] = _ListLoader([{"waveform": torch.randn(1, 1, 1600, generator=g)}
                                                      for _ in range(n)])
            trainer = Trainer(recipe, registry=registry, run_dir=Path(out) / name, device="cpu", progress=False,
                              **kwargs).setup()
            summary = trainer.train()
            state = {f"param.{k}": v.detach().clone() for k, v in trainer.codec.named_parameters()}
            state.update({f"buffer.{k}": v.detach().clone() for k, v in trainer.codec.named_buffers()})
            if trainer.discriminator is not None:
                state.update({f"disc.{k}": v.detach().clone() for k, v in trainer.discriminator.state_dict().items()})
            torch.save({"state": state, "step": trainer.step, "epoch": trainer.epoch,
                        "steps_this_session": summary["steps_this_session"]},
                       Path(out) / f"{name}.rank{rank}.pt")
            trainer.close()
    finally:
        shutdown_distributed()
