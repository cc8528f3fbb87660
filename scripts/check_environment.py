"""Fail loudly and early when the installed environment is broken: run before the tests (`.ci/run` does).

    python scripts/check_environment.py

1. torch and torchaudio must be the pair requirements/lock.txt names: torchaudio's native library only loads with the
   torch it was built against, and a mismatch otherwise surfaces as dozens of unrelated test failures.
2. torchaudio's native library must load and its kernels run (Kaldi fbank, resampling, mel).
3. Every module of codecfw (core, commands, every plugin) must import.
Exit 0 when all hold; otherwise exit 1 after printing every problem with what to do.
"""

from __future__ import annotations

import importlib
import importlib.metadata as metadata
import pkgutil
import sys
import traceback
from pathlib import Path

LOCK = Path(__file__).resolve().parent.parent / "requirements" / "lock.txt"
PAIR = ("torch", "torchaudio")
FIX = 'reinstall from the lock: .venv/bin/pip install -c requirements/lock.txt -e ".[test]"'


def locked_versions(lock: Path | None = None) -> dict[str, str]:
    """``name==version`` lines of the lock → {normalised name: version}."""
    pins = {}
    for line in (lock or LOCK).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def check_pair() -> list[str]:
    pins = locked_versions()
    problems = []
    for name in PAIR:
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            problems.append(f"{name} is not installed; {FIX}")
            continue
        if pins.get(name) != installed:
            problems.append(f"{name} {installed} is installed but {LOCK.name} names {name}=={pins.get(name)}: "
                            f"torchaudio only loads with the torch it was built for; {FIX}")
    return problems


def check_torchaudio() -> list[str]:
    try:
        import torch
        import torchaudio
        import torchaudio.compliance.kaldi as kaldi

        wave = torch.randn(1, 16000)
        kaldi.fbank(wave, num_mel_bins=80, sample_frequency=16000)
        torchaudio.functional.resample(wave, 16000, 8000)
        torchaudio.transforms.MelSpectrogram(16000)(wave)
    except Exception as error:  # noqa: BLE001 - any failure here is the message
        versions = ", ".join(f"{n} {_version(n)}" for n in PAIR)
        return [f"torchaudio cannot be used ({versions}): {type(error).__name__}: {error}\n  {FIX}"]
    return []


def check_modules() -> list[str]:
    import codecfw

    problems = []
    for info in pkgutil.walk_packages(codecfw.__path__, "codecfw."):
        if info.name.startswith("codecfw.tests"):
            continue  # test modules import pytest and the example plugin packages; pytest collects them
        try:
            importlib.import_module(info.name)
        except Exception:  # noqa: BLE001
            problems.append(f"cannot import {info.name}:\n{traceback.format_exc(limit=3)}")
    return problems


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "(not installed)"


def main() -> int:
    problems = check_pair() + check_torchaudio() + check_modules()
    if problems:
        print(f"environment check: {len(problems)} problem(s)", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    print(f"environment check: ok (torch {_version('torch')}, torchaudio {_version('torchaudio')}, "
          f"every codecfw module imports)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
