"""The SemantiCodec decode benchmark under two Python environments (e.g. two torch versions), alternately, in one run.

    python benchmarks/torch_versions.py --python A/.venv/bin/python --python B/.venv/bin/python [--rounds 3]
        [-- ARGS for semanticodec_speed.py]

Each round runs ``benchmarks/semanticodec_speed.py`` (default ``--small --skip-memory --repeats 1 --threads 1``)
once per environment, in turn, so machine load hits both alike; each environment keeps its best decode time. Prints
every run, the best times and the ratio of each environment to the first.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent / "semanticodec_speed.py"
DEFAULT_ARGS = ["--small", "--skip-memory", "--repeats", "1", "--threads", "1"]
_DECODE = re.compile(r"codecfw decode_tokens\s+([0-9.]+) s")


def run_once(python: str, args: list[str]) -> tuple[str, float]:
    version = subprocess.run([python, "-c", "import torch, torchaudio; print(torch.__version__, "
                              "torchaudio.__version__)"], capture_output=True, text=True, check=True).stdout.strip()
    done = subprocess.run([python, str(BENCH), *args], capture_output=True, text=True)
    match = _DECODE.search(done.stdout)
    if done.returncode != 0 or not match:
        raise RuntimeError(f"{python}: the benchmark failed (exit {done.returncode}):\n{done.stdout[-2000:]}"
                           f"{done.stderr[-2000:]}")
    return version, float(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", action="append", required=True, help="an interpreter (give two or more)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("bench_args", nargs="*", help="arguments for semanticodec_speed.py (after --)")
    options = parser.parse_args()
    args = options.bench_args or DEFAULT_ARGS
    best: dict[str, float] = {}
    names: dict[str, str] = {}
    for round_ in range(options.rounds):
        for python in options.python:
            names[python], seconds = run_once(python, args)
            best[python] = min(best.get(python, float("inf")), seconds)
            print(f"round {round_ + 1}  torch/torchaudio {names[python]:<28} decode {seconds:7.2f} s", flush=True)
    first = best[options.python[0]]
    print(f"\nbest of {options.rounds} (semanticodec_speed.py {' '.join(args)}):")
    for python in options.python:
        print(f"  torch/torchaudio {names[python]:<28} {best[python]:7.2f} s   x{first / best[python]:.2f} "
              f"the speed of the first")


if __name__ == "__main__":
    sys.exit(main())
