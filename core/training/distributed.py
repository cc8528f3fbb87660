"""Multi-process training: torchrun + DistributedDataParallel, sharded resumable sampling, rank-identical state.

Launch with the standard launcher, no Slurm needed (audiocraft#174/#188, DAC#18 are users stuck without one)::

    torchrun --nproc_per_node 4 -m codecfw.core.cli train recipes/xcodec.yaml

torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed`
reads them. NCCL on CUDA, gloo on CPU.

Three guarantees this module provides to the loop:

- **Global batch semantics.** The data sampler (``core.data.dataset.AudioSampler``) draws one permutation per epoch
  from ``(seed, epoch)`` and gives rank ``r`` the items ``perm[r::world]``, so the ranks' batch ``b`` together hold
  exactly the items one process with ``world × batch_size`` would put in its batch ``b``; crops are drawn from
  ``(seed, epoch, index)``, whatever the rank, the number of workers or where a run resumed. DDP averages the
  gradients, so the update equals the single-process one on the global batch.
- **Ranks stop together.** Any loader may give ranks different batch counts (a custom sampler, an iterable
  dataset); :func:`all_true` all-reduces a "have a batch" flag before every micro-batch and every rank ends the
  epoch when one runs out (ESPnet's iterator-stop all-reduce, espnet#6497), instead of deadlocking in the next
  collective.
- **Identical quantizer state.** EMA codebooks, k-means init and dead-code revival live in buffers that DDP does not
  average. Quantizers all-reduce their statistics themselves (vector-quantize-pytorch's ``sync_codebook`` switches
  on when the codec is built after the process group exists, which the trainer guarantees), and the loop then
  broadcasts every buffer from rank 0 after each optimizer step (:func:`broadcast_buffers`), so any rank-local
  randomness (a dead code revived from a local batch) cannot make the replicas drift apart.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn


@dataclass
class DistributedContext:
    """Where this process sits in the job. ``control_group`` is a gloo group for host-side flags (see all_true)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    control_group: Any = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | None = None, timeout_s: float = 1800.0) -> DistributedContext:
    """Join the job torchrun started (or stay single-process) and pick this process's device.

    device : ``"cpu"``, ``"cuda"`` or None (CUDA when available). Under torchrun each process takes
    ``cuda:LOCAL_RANK``.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    kind = torch.device(device).type
    if kind == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but torch sees no CUDA device")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if kind == "cuda":
        torch_device = torch.device("cuda", local_rank if world_size > 1 else (torch.device(device).index or 0))
        torch.cuda.set_device(torch_device)
    else:
        torch_device = torch.device("cpu")
    if world_size == 1:
        return DistributedContext(device=torch_device)
    if not dist.is_initialized():
        backend = "nccl" if kind == "cuda" else "gloo"
        dist.init_process_group(backend, rank=rank, world_size=world_size, timeout=timedelta(seconds=timeout_s))
    # Flags live on the host: a gloo group lets the loop agree on "have a batch" without a CUDA sync per step.
    control = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else None
    return DistributedContext(rank, world_size, local_rank, torch_device, control)


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_true(flag: bool, ctx: DistributedContext) -> bool:
    """True on every rank iff ``flag`` is true on every rank (a MIN all-reduce; no-op in one process)."""
    if not ctx.is_distributed:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int32)  # host tensor: the group is gloo
    dist.all_reduce(t, op=dist.ReduceOp.MIN, group=ctx.control_group)
    return bool(t.item())


def all_reduce_mean(tensor: Tensor, ctx: DistributedContext) -> Tensor:
    """Mean of ``tensor`` over ranks (a copy; the input is left as it was)."""
    if not ctx.is_distributed:
        return tensor
    out = tensor.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / ctx.world_size


def gather_objects(obj: Any, ctx: DistributedContext) -> list[Any]:
    """Every rank's ``obj`` on every rank (RNG states for checkpoints)."""
    if not ctx.is_distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_buffers(module: nn.Module, ctx: DistributedContext, src: int = 0) -> None:
    """Copy every buffer (EMA codebooks, cluster sizes, ``initted`` flags, ...) from rank ``src`` to all ranks.

    Submodules that set ``static_buffers = True`` (frozen k-means tables, diffusion schedules: hundreds of MB that
    never change after loading) are skipped; see :class:`codecfw.core.types.SemanticFrontend`.
    """
    if not ctx.is_distributed:
        return
    with torch.no_grad():
        for sub in module.modules():
            if getattr(sub, "static_buffers", False):
                continue
            for buf in sub.buffers(recurse=False):
                dist.broadcast(buf.data, src=src)


def barrier(ctx: DistributedContext) -> None:
    if ctx.is_distributed:
        dist.barrier(group=ctx.control_group)


def wrap_ddp(module: nn.Module, ctx: DistributedContext, find_unused_parameters: bool = False) -> nn.Module:
    """DDP wrapper (or the module itself in one process). Buffers are synced by the loop, not at each forward:
    DDP's per-forward broadcast would also run for each micro-batch of gradient accumulation."""
    if not ctx.is_distributed or not any(p.requires_grad for p in module.parameters()):
        return module
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids, broadcast_buffers=False,
                                   find_unused_parameters=find_unused_parameters)


def unwrap(module: nn.Module) -> nn.Module:
    return getattr(module, "module", module) if isinstance(module, nn.parallel.DistributedDataParallel) else module


# --------------------------------------------------------------------------------------------------------------
# Seeds and RNG states
# --------------------------------------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """This process's RNG states in a form ``torch.load(weights_only=True)`` accepts."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
