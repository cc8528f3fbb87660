"""Regenerate requirements/lock.txt: the exact versions of the whole environment `pip install -e ".[EXTRAS]"` resolves.

Run from the repository root:

    python3 scripts/lock.py

pip resolves codecfw with every optional extra of pyproject.toml (``--dry-run --ignore-installed``: nothing is
installed, the current environment is not read) and the report's versions become the lock. pyproject.toml keeps the
ranges a library user needs; the lock is the one environment CI and the README's set-up command install
(``pip install -c requirements/lock.txt -e ".[test]"``), so what the tests pass on is what a new user gets.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements" / "lock.txt"


def resolve(extras: list[str]) -> list[tuple[str, str]]:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--dry-run", "--ignore-installed",
             "--report", str(report), "-e", f".[{','.join(extras)}]"],
            cwd=ROOT, check=True,
        )
        installs = json.loads(report.read_text())["install"]
    pins = {(item["metadata"]["name"], item["metadata"]["version"]) for item in installs}
    return sorted((name, version) for name, version in pins if name.lower() != "codecfw")


def main() -> None:
    extras = sorted(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    pins = resolve(extras)
    header = [
        "# The exact environment CI and the README's set-up command install (constraints for pip's -c).",
        f"# Resolved for Python {platform.python_version()} on {sys.platform}-{platform.machine()} with the extras: "
        + ", ".join(extras) + ".",
        "# Regenerate with `python3 scripts/lock.py` after changing pyproject.toml; see docs/install.md.",
    ]
    text = "\n".join(header + [f"{name}=={version}" for name, version in pins]) + "\n"
    LOCK.parent.mkdir(exist_ok=True)
    tmp = LOCK.with_name(f".{LOCK.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, LOCK)
    print(f"{LOCK.relative_to(ROOT)}: {len(pins)} pinned distributions")


if __name__ == "__main__":
    main()
