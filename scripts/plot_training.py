"""Training curves of a run directory as one PNG (codecfw.core.training.curves).

    python scripts/plot_training.py ~/codecfw-runs/sacodec-small-16k -o docs/figures/sacodec_small_16k_training.png
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("-o", "--out", required=True, help="PNG to write")
    parser.add_argument("--smooth", type=int, default=9, help="moving-average window over logged training steps")
    parser.add_argument("--title", default=None)
    args = parser.parse_args(argv)
    from codecfw.core.training.curves import plot_curves

    print(plot_curves(args.run_dir, args.out, smooth_window=args.smooth, title=args.title))
    return 0


if __name__ == "__main__":
    sys.exit(main())
