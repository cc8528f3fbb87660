"""The ``codecfw`` command line.

Each sub-command lives in its own module under ``codecfw.core.commands`` and exposes
``register(subparsers)``; the CLI discovers them, so a command exists exactly when its module does.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from . import commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="codecfw", description="Semantic audio codecs from interchangeable plugins.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # argparse stops filling the trailing KEY.SUB=VALUE positional at the first option after the recipe
        # (`codecfw train r.yaml --run-dir x train.lr=1e-4`); such words are overrides all the same.
        words = [w for w in extra if "=" in w and not w.startswith("-")]
        target = "recipes" if hasattr(args, "recipes") else "overrides"
        if len(words) != len(extra) or not hasattr(args, "override_options"):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        setattr(args, target, [*getattr(args, target), *words])
    if args.version:
        from .. import __version__

        print(f"codecfw {__version__}")
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
