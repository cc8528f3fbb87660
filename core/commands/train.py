"""``codecfw train RECIPE``: train a codec; rerun the same command to resume after a crash.

    codecfw train recipes/xcodec.yaml train.steps=2000 [--run-dir DIR] [--init-from CKPT] [--device cuda]
    torchrun --nproc_per_node 4 -m codecfw.core.cli train recipes/xcodec.yaml

The run directory defaults to ``runs/<name>-<run hash>``: the same recipe and overrides find their run again and
continue from its latest checkpoint. The hash leaves out session settings such as ``train.steps`` and ``train.lr``,
so ``codecfw train RECIPE train.steps=800`` continues a finished 400-step run (changed settings are applied and
logged). Ctrl-C or SIGTERM finishes the current step, saves a checkpoint and exits with 130 or 143. ``--init-from``
loads weights only (a checkpoint folder such as ``RUN/checkpoints/best``, a run directory or a ``.safetensors``
file) and is ignored once the run directory holds a checkpoint of its own.

Exit status: 0 done; 1 the run stopped (non-finite loss with ``train.nonfinite: stop``, disk full), its last
checkpoint kept; 2 the recipe, the data, the checkpoint or the arguments are wrong (nothing was trained, no run
folder is left behind), or the run directory is in use by another training.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from pathlib import Path

from . import add_recipe_arguments, recipe_arguments


def run(args) -> int:
    from ..config import RecipeError, load_recipe
    from ..training.distributed import shutdown_distributed
    from ..registry import get_registry
    from ..training.trainer import Trainer

    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s {'' if rank == 0 else f'[rank {rank}] '}%(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    registry = get_registry()
    for name in args.plugins:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            print(f"--plugin {name}: cannot import it ({exc})", file=sys.stderr)
            return 2
        info = registry.register_module(module, name=name, distribution="<--plugin>")
        if info.status != "ok":
            print(f"--plugin {name}: {info.error}", file=sys.stderr)
            return 2
    try:
        recipe = load_recipe(args.recipe, recipe_arguments(args)[1], registry)
    except (RecipeError, FileNotFoundError) as exc:
        print(str(exc), file=sys.stderr)
        return 2
    from ..checkpoint import CheckpointError, RunDirectoryInUse
    from ..codec import FrozenPartsError
    from ..data import ManifestError, NoUsableAudioError
    from ..training.trainer import NonFiniteLossError, TrainingInterrupted, TrainSetupError

    if args.init_from is not None and not Path(args.init_from).exists():
        from ..pretrained import pretrained_folder, pretrained_names

        if args.init_from in pretrained_names(registry):  # --init-from codecfw-sacodec-small-16k: fine-tune it
            try:
                args.init_from = str(pretrained_folder(args.init_from, registry))
            except FileNotFoundError as exc:  # PretrainedUnavailable: offline and not cached
                print(f"error: --init-from {args.init_from}: {exc}", file=sys.stderr)
                return 2
    trainer = Trainer(recipe, registry=registry, run_dir=args.run_dir, device=args.device,
                      init_from=args.init_from, progress=not args.no_progress)
    try:
        check_fresh_run(recipe, registry, trainer.run_dir, args.init_from, f"codecfw train {args.recipe}")
    except (FrozenPartsError, FileNotFoundError) as exc:  # before setup: a refused start creates nothing
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        trainer.setup()
        summary = trainer.train()
    except (TrainSetupError, ManifestError, NoUsableAudioError, FileNotFoundError, CheckpointError,
            RunDirectoryInUse) as exc:  # the recipe, the data or the arguments: nothing was trained
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (NonFiniteLossError, OSError) as exc:  # the run stopped; its last checkpoint is kept
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except TrainingInterrupted as exc:
        print(f"interrupted: {exc}", file=sys.stderr)
        return 128 + exc.signal
    finally:
        trainer.close()
        shutdown_distributed()
    if rank == 0:
        print(format_summary(summary))
    return 0


def check_fresh_run(recipe, registry, run_dir, init_from, what: str) -> None:
    """A fresh run (no checkpoint of its own to resume, no ``--init-from``) must not train on frozen parts that need
    pretrained weights while they are random, unless the recipe says ``allow_random_frozen``. Raises
    :class:`~codecfw.core.codec.RandomFrozenParts` naming each part and where its weights come from.

    It builds the codec once more than the trainer does, on fresh runs only; :meth:`Trainer.setup` is the natural
    home once it can take the check (it knows whether it resumed)."""
    import torch

    from ..checkpoint import latest_checkpoint
    from ..codec import build_codec, check_pretrained_parts

    if init_from is not None or recipe.allow_random_frozen is True or latest_checkpoint(run_dir) is not None:
        return  # the checkpoint holds the weights (or the recipe opted in for every part)
    with torch.random.fork_rng(devices=[]):  # the trainer builds the codec again from its own seed
        parts = build_codec(recipe, registry).pretrained_parts()
    check_pretrained_parts(parts, recipe.allow_random_frozen, what)


def format_summary(summary: dict) -> str:
    """The run summary as a few human-readable lines."""
    lines = [f"run {summary['name']}: step {summary['step']} ({summary['steps_this_session']} this session) in "
             f"{summary['seconds']:.1f} s"]
    if summary.get("steps_per_second"):
        lines.append(f"  {summary['steps_per_second']:.2f} steps/s, {summary['samples_per_second']:.1f} samples/s, "
                     f"{summary['world_size']} process(es)")
    if summary.get("best_valid_loss") is not None:
        lines.append(f"  best validation loss {summary['best_valid_loss']:.4g}")
    for split in ("train_data", "valid_data"):
        data = summary.get(split)
        if data:
            skipped = data.get("skipped") or {}
            total = sum(skipped.values())
            detail = ", ".join(f"{n} {r}" for r, n in skipped.items())
            lines.append(f"  {split.split('_')[0]} data: {data['files']} files ({data['hours']:.2f} h), skipped "
                         f"{total}{f' ({detail})' if detail else ''}")
            for reason, paths in (data.get("skipped_paths") or {}).items():
                lines.extend(f"    skipped ({reason}): {p}" for p in paths[:10])
    lines.append(f"  checkpoint {summary['last_checkpoint']}; run directory {summary['run_dir']}")
    return "\n".join(lines)


def register(sub) -> None:
    p = sub.add_parser("train", help="train a codec from a recipe (resumes its run directory automatically)")
    add_recipe_arguments(p)
    p.add_argument("--run-dir", default=None, help="run directory (default: train.run_dir, else runs/<name>-<hash>)")
    p.add_argument("--init-from", default=None, metavar="CKPT",
                   help="start from these weights (checkpoint folder, run directory, .safetensors or a pretrained "
                        "name); weights only")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    p.add_argument("--plugin", dest="plugins", action="append", default=[], metavar="MODULE",
                   help="import MODULE and register its hooks (plugins without an entry point); repeatable")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (log lines instead)")
    p.set_defaults(func=run)
