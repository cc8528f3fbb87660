"""The NCCL worker of tests/test_cuda.py (``torch.multiprocessing.spawn`` imports it by name)."""

from __future__ import annotations

import os
from pathlib import Path

import torch


def nccl_worker(rank: int, world_size: int, port: int, out: str, recipe: dict) -> None:
    """Rank ``rank`` of an NCCL job. Two or more GPUs: the real trainer under DDP, weights saved per rank. One GPU: a
    one-rank NCCL group driving the loop's own DDP wrapper and collectives (a GPU takes one NCCL rank only), and the
    DDP gradient compared with the unwrapped module's."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank))
    import torch.distributed as dist

    from codecfw.core.codec import build_codec
    from codecfw.core.config import validate_recipe
    from codecfw.core.training.distributed import (DistributedContext, all_reduce_mean, all_true, broadcast_buffers,
                                          shutdown_distributed, wrap_ddp)
    from codecfw.core.training.objectives import weighted_slot_losses
    from codecfw.core.training.trainer import Trainer

    from codecfw.tests.training_support import training_registry

    registry = training_registry()
    try:
        if world_size > 1:
            trainer = Trainer(validate_recipe(recipe, registry), registry=registry, run_dir=Path(out) / "run",
                              device="cuda", progress=False).setup()
            assert dist.get_backend() == "nccl", dist.get_backend()
            summary = trainer.train()
            state = {k: v.detach().cpu() for k, v in trainer.codec.state_dict().items()}
            torch.save({"state": state, "steps": summary["steps_this_session"], "backend": dist.get_backend()},
                       Path(out) / f"rank{rank}.pt")
            trainer.close()
            return
        device = torch.device("cuda", 0)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", rank=0, world_size=1, device_id=device)

        class _OneRank(DistributedContext):
            @property
            def is_distributed(self) -> bool:  # one rank, yet every collective of the loop runs (on NCCL)
                return True

        ctx = _OneRank(0, 1, 0, device, dist.new_group(backend="gloo"))
        torch.manual_seed(0)
        codec = build_codec(validate_recipe(recipe, registry), registry).to(device)
        plain = build_codec(validate_recipe(recipe, registry), registry).to(device)
        plain.load_state_dict(codec.state_dict())
        model = wrap_ddp(codec, ctx)
        y = torch.randn(2, 1, 1600, device=device)

        def loss(output):  # every parameter gets a gradient: the waveform's and the quantizers' own losses
            return output.decoder.waveform.square().mean() + weighted_slot_losses(output, {}).loss

        loss(model(y)).backward()
        loss(plain(y)).backward()
        grads = [(a.grad.detach().cpu(), b.grad.detach().cpu()) for a, b in zip(codec.parameters(), plain.parameters())
                 if a.grad is not None]
        mean = all_reduce_mean(torch.tensor([3.0], device=device), ctx)
        broadcast_buffers(codec, ctx)
        torch.save({"ddp": type(model).__name__, "grads": grads, "mean": mean.cpu(), "flag": all_true(True, ctx),
                    "backend": dist.get_backend()}, Path(out) / "rank0.pt")
    finally:
        shutdown_distributed()
