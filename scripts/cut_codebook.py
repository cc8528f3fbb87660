"""A checkpoint whose frozen codebook keeps only its first N rows: how stage 2 of the shipped codec started.

    python scripts/cut_codebook.py RUN1/checkpoints/step-00009292 16384 -o INIT2 [--key acoustic.vq.frozen_codebook]

SimVQ's frozen codebook is a Gaussian draw (Zhu et al., arXiv 2411.02038: only the linear map W learns), so its first
2^14 rows are themselves a frozen Gaussian codebook of that size, and W applies to them unchanged: cutting the
acoustic codebook from 2^16 to 2^14 codes (16 to 14 bits, paying for a 200 bit/s pitch stream) keeps every trained
weight. ``model.safetensors`` (and ``ema.safetensors`` if it holds the tensor) get the cut tensor; the discriminators and ``meta.json`` are
copied; the optimizer state is not (``codecfw train --init-from OUT`` starts its optimizers afresh). The output folder
is written atomically.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path


def cut(checkpoint: Path, rows: int, out: Path, key: str = "acoustic.vq.frozen_codebook") -> list[str]:
    """Write ``out`` from ``checkpoint`` with ``key`` cut to its first ``rows`` rows; returns the files written."""
    from safetensors.torch import save_file

    from codecfw.core.atomic import atomic_folder
    from codecfw.core.checkpoint import read_safetensors

    if not (checkpoint / "model.safetensors").is_file():
        raise SystemExit(f"{checkpoint}: no model.safetensors (not a codecfw checkpoint folder)")
    written = []
    with atomic_folder(out) as tmp:
        for name in ("model.safetensors", "ema.safetensors"):
            if not (checkpoint / name).is_file():
                continue
            weights = read_safetensors(checkpoint / name)
            if key not in weights and name == "ema.safetensors":  # the EMA shadow holds trained tensors only
                shutil.copy2(checkpoint / name, tmp / name)
                written.append(name)
                continue
            if key not in weights:
                raise SystemExit(f"{checkpoint / name}: no tensor {key!r}; codebook-like tensors: "
                                 f"{[k for k in weights if 'codebook' in k]}")
            if rows > weights[key].shape[0]:
                raise SystemExit(f"{checkpoint / name}: {key} has {weights[key].shape[0]} rows, cannot keep {rows}")
            weights[key] = weights[key][:rows].clone()
            save_file(weights, str(tmp / name))
            written.append(name)
        for name in ("discriminator.safetensors", "meta.json"):
            if (checkpoint / name).is_file():
                shutil.copy2(checkpoint / name, tmp / name)
                written.append(name)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("rows", type=int, help="rows to keep (the new codebook size)")
    parser.add_argument("-o", "--out", type=Path, required=True)
    parser.add_argument("--key", default="acoustic.vq.frozen_codebook")
    args = parser.parse_args(argv)
    print(f"{args.out}: {', '.join(cut(args.checkpoint, args.rows, args.out, args.key))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
