"""``codecfw ablate BASE VARIANT... -o OUT``: train and/or evaluate variants of a recipe side by side.

    codecfw ablate recipes/xcodec.yaml recipes/ablations/simvq.yaml "small_cb:acoustic.codebook_size=256" \\
        -o ablations/xcodec --data data/demo/valid.jsonl --train --steps 2000
    codecfw ablate toy.yaml "k16:acoustic.codebook_size=16" -o out --no-train --metrics mel stft bitrate

Variants are recipe files that ``include`` the base, or ``name:key=value,key=value`` overrides. Writes
OUT/comparison.{csv,md}, OUT/plots/*.png, OUT/report.md, OUT/ablation.json and each variant's run and eval
folders (see codecfw.core.evaluation.ablate).
"""

from __future__ import annotations

import argparse
import logging
import sys


def run(args) -> int:
    from ..evaluation.ablate import AblationError, parse_variants, run_ablation
    from ..config import RecipeError
    from ..metric import MetricSpecError
    from ..registry import get_registry
    from ..evaluation.report import fmt

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        variants = parse_variants(args.base, args.variants, include_base=not args.no_base)
        result = run_ablation(args.base, variants, args.out, data=args.data, train=args.train, steps=args.steps,
                              metrics=args.metrics, overrides=args.overrides, registry=get_registry(),
                              device=args.device, split=args.split, limit=args.limit, max_seconds=args.max_seconds,
                              sample_rate=args.sample_rate, probe={"label_key": args.probe} if args.probe else None,
                              progress=not args.no_progress)
    except (AblationError, MetricSpecError, RecipeError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cols = [c for c in ("bitrate_kbps", "token_rate", "mel", "stft", "si_sdr", "pesq") if c in
            result["comparison"]["columns"]]
    for row in result["rows"]:
        print(f"{row['variant']}: " + ", ".join(f"{c} {fmt(row.get(c))}" for c in cols))
    failed = [v["name"] for v in result["variants"] if "error" in v]
    if failed:
        print(f"failed variants: {', '.join(failed)} (see ablation.json)", file=sys.stderr)
    print(f"table: {result['comparison']['markdown']}")
    # A failed row is a failed ablation: the table is written (the rows that ran are kept), but scripts and CI must
    # not read a partial comparison as a complete one, as encode/decode exit 1 when any file failed.
    return 1 if failed else 0


def register(sub) -> None:
    p = sub.add_parser("ablate", help="train/evaluate recipe variants side by side: one table, bar charts")
    p.add_argument("base", metavar="BASE", help="base recipe (file or shipped name)")
    p.add_argument("variants", nargs="*", metavar="VARIANT",
                   help="override file including the base, or name:key=value,key=value")
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument("--data", default=None, help="evaluation manifest or folder (default: each recipe's data.valid)")
    p.add_argument("--train", action=argparse.BooleanOptionalAction, default=False,
                   help="train each variant through the training loop before evaluating (default: --no-train)")
    p.add_argument("--steps", type=int, default=None, help="training steps per variant (sets train.steps)")
    p.add_argument("--metrics", nargs="+", default=None, metavar="METRIC", help="as in codecfw eval")
    p.add_argument("--override", dest="overrides", action="append", default=[], metavar="KEY.SUB=VALUE",
                   help="override applied to the base and every variant (repeatable)")
    p.add_argument("--no-base", action="store_true", help="do not include the base itself as a row")
    p.add_argument("--split", default=None)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--max-seconds", type=float, default=None)
    p.add_argument("--sample-rate", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--probe", nargs="?", const="domain", default=None, metavar="LABEL")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)
