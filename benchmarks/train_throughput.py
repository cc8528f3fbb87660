"""Training throughput of the one loop: samples/s, steps/s, time waiting for data, and peak memory.

Peer, measured in the same run on the same codec and batches: a bare hand-written loop (forward, backward, optimizer
step per turn; no data loading, logging, EMA, clipping or buffer sync). ``loop / bare`` is the loop's overhead.
Peak memory is the process's peak RSS on CPU (``getrusage``; includes the model, data and Python) and
``torch.cuda.max_memory_allocated`` on CUDA. Timings on a shared 2-core machine are noisy: compare ratios.

    .venv/bin/python benchmarks/train_throughput.py [RECIPE] [-o key=value ...] [--steps 10] [--small]
    .venv/bin/python benchmarks/train_throughput.py --toy --small      # the tests' toy codec on the demo corpus

The default recipe is recipes/xcodec_tiny.yaml on data/demo. ``--small`` shrinks the run (batch 2, 0.5 s crops,
4 timed steps) so it finishes in about a minute on a loaded CPU.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
TOY = {
    "name": "toy", "sample_rate": 16000, "semantic": {"kind": "toy_semantic"}, "acoustic": {"kind": "toy_vq"},
    "decoder": {"kind": "toy_decoder"}, "discriminators": [{"kind": "toy_discriminator"}],
    "losses": [{"kind": "toy_l1", "weight": 5.0}],
    "data": {"train": str(REPO / "data/demo/train.jsonl"), "segment_seconds": 1.0, "batch_size": 8},
    "train": {"steps": 1000, "lr": 1e-3},
}


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("recipe", nargs="?", default=str(REPO / "recipes/xcodec_tiny.yaml"))
    parser.add_argument("-o", "--override", dest="overrides", action="append", default=[])
    parser.add_argument("--toy", action="store_true", help="the tests' toy codec (adversarial) instead of a recipe")
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (k-means init, allocator, ...)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None)
    parser.add_argument("--small", action="store_true", help="batch 2, 0.5 s crops, 4 timed steps")
    args = parser.parse_args(argv)

    from codecfw.core.config import load_recipe, validate_recipe
    from codecfw.core.registry import get_registry
    from codecfw.core.training.trainer import Trainer

    registry = get_registry()
    overrides = list(args.overrides)
    if args.small:
        overrides += ["data.batch_size=2", "data.segment_seconds=0.5"]
        args.steps = min(args.steps, 4)
    overrides += ["data.valid=null", f"train.steps={args.warmup + args.steps + 1}", "train.checkpoint_every=100000",
                  "train.valid_every=100000", "data.train=" + str(REPO / "data/demo/train.jsonl")]
    if args.toy:
        from codecfw.core.config import apply_overrides
        from codecfw.tests import toy_codec, toy_training

        for module in (toy_codec, toy_training):
            if module.__name__ not in registry.plugins:
                registry.register_module(module, name=module.__name__)
        recipe = validate_recipe(apply_overrides(TOY, overrides), registry)
    else:
        recipe = load_recipe(args.recipe, overrides, registry)

    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(recipe, registry=registry, run_dir=tmp, device=args.device, progress=False).setup()
        device = trainer.device
        per_step = recipe.data.batch_size * recipe.train.grad_accum * trainer.dist.world_size

        def sync() -> None:
            if device.type == "cuda":
                torch.cuda.synchronize(device)

        # -- the loop (data loading included) ------------------------------------------------------------------
        trainer._data = trainer._start_epoch()
        batches = []
        for _ in range(args.warmup):
            micro = [trainer._next_batch() for _ in range(recipe.train.grad_accum)]
            batches.append(micro)
            trainer.train_step(micro)
            trainer.step += 1
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        sync()
        data_time, start = 0.0, time.perf_counter()
        for _ in range(args.steps):
            t0 = time.perf_counter()
            micro = [trainer._next_batch() for _ in range(recipe.train.grad_accum)]
            data_time += time.perf_counter() - t0
            batches.append(micro)
            stats = trainer.train_step(micro)
            trainer._record(stats)
            trainer.step += 1
        sync()
        loop_time = time.perf_counter() - start
        trainer._log_buffer.clear()

        # -- the bare peer on the same batches -------------------------------------------------------------------
        objective = trainer.objective
        bare_batches = batches[-args.steps:]
        sync()
        start = time.perf_counter()
        for micro in bare_batches:
            objective.begin_step(trainer.step)
            for turn in objective.turns(trainer.step):
                opt = trainer.optimizers[turn]
                opt.zero_grad(set_to_none=True)
                for batch in micro:
                    objective.step(batch, turn).loss.div(len(micro)).backward()
                opt.step()
            trainer.step += 1
        sync()
        bare_time = time.perf_counter() - start
        peak = peak_memory_mib(device)
        trainer.close()

    loop_sps = args.steps * per_step / loop_time
    bare_sps = args.steps * per_step / bare_time
    seconds = recipe.data.segment_seconds
    print(f"recipe {recipe.name} ({'toy' if args.toy else args.recipe}) on {device}, "
          f"{torch.get_num_threads()} threads, batch {recipe.data.batch_size} x {seconds:g} s, "
          f"accum {recipe.train.grad_accum}, {trainer.objective_kind} objective, {args.steps} timed steps")
    print(f"  loop : {loop_sps:8.2f} samples/s  {args.steps / loop_time:7.3f} steps/s  "
          f"({loop_sps * seconds:.1f} s of audio/s; waiting for data {100 * data_time / loop_time:.1f} %)")
    print(f"  bare : {bare_sps:8.2f} samples/s  {args.steps / bare_time:7.3f} steps/s")
    print(f"  ratio loop/bare: {loop_sps / bare_sps:.3f}")
    print(f"  peak memory: {peak:.0f} MiB ({'torch.cuda.max_memory_allocated' if device.type == 'cuda' else 'RSS'})")


if __name__ == "__main__":
    sys.exit(main())
