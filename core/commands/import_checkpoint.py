"""``codecfw import SOURCE ... -o DST``: published checkpoints → codecfw checkpoint folders.

- ``pretrained NAME``: any registered pretrained name (``codecfw.core.pretrained``; ``codecfw plugins`` lists them).
- every importer a plugin registers (slot ``importer``); codecfw's own: ``xcodec SRC`` (a reference ``.pth`` of
  ``ZhenYe234/xcodec`` or a transformers port) and ``semanticodec`` (the official ``haoheliu/SemantiCodec`` files).

The output folder (``model.safetensors`` + ``meta.json``) loads with ``codecfw.load(DST)`` and every command that
takes ``--checkpoint``. Importers are looked up in the registry only when ``codecfw import`` runs, so the other
commands start without loading plugins. Exit status 2 when the source cannot be read or converted (missing files, a
pickle codecfw refuses, another layout), with one line naming the file; nothing is written then.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PROG = "codecfw import"


def _convert_pretrained(name: str, dst: str, files_dir: str | None) -> Path:
    from ..pretrained import fetch_files, save_converted
    from ..registry import get_registry

    registry = get_registry()
    reg = registry.get("pretrained", name)
    spec = reg.config()
    if spec.folder:  # shipped as a codecfw checkpoint already: a copy, written atomically
        import shutil

        from ..atomic import atomic_folder

        with atomic_folder(Path(dst)) as tmp:
            for file in ("model.safetensors", "meta.json"):
                shutil.copy2(Path(spec.folder) / file, tmp / file)
        return Path(dst)
    if files_dir is not None:
        folder = Path(files_dir)
        missing = [f for f in spec.files if not (folder / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{folder}: missing {', '.join(missing)} (the files of {spec.repo_id} that "
                                    f"{name!r} needs, same relative paths)")
        files = {f: folder / f for f in spec.files}
    else:
        files = fetch_files(spec)
    return save_converted(Path(dst), spec, reg.build(spec, files), registry)


def build_parser(registry) -> argparse.ArgumentParser:
    """``codecfw import``'s own parser: ``pretrained`` plus one sub-command per registered importer."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0].replace("``", ""))
    which = parser.add_subparsers(dest="source", metavar="SOURCE", required=True)
    sources = []
    for kind, reg in sorted(registry.kinds("importer").items()):
        q = which.add_parser(kind, help=reg.capabilities.get("help"))
        reg.capabilities["arguments"](q)
        sources.append(q)
    n = which.add_parser("pretrained", help="any registered pretrained name")
    n.add_argument("name", metavar="NAME")
    n.add_argument("--files", default=None, metavar="DIR", help="folder with the official files (else download)")
    for q in (*sources, n):
        q.add_argument("-o", "--output", required=True, metavar="DST", help="checkpoint folder to write")
    return parser


def run(args) -> int:
    from ..registry import get_registry

    registry = get_registry()
    opts = build_parser(registry).parse_args(args.words)
    try:
        if opts.source == "pretrained":
            out = _convert_pretrained(opts.name, opts.output, opts.files)
        else:
            reg = registry.get("importer", opts.source)
            out = reg.build(reg.config(), opts)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:  # the input cannot be converted: a usage error
        print(f"{PROG} {opts.source}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


def register(sub) -> None:
    # Every word after `import` goes to build_parser's parser (which knows the registered sources) when the command
    # runs; no prefix character here, so `-o`, `-h` and the sources' options reach it untouched.
    p = sub.add_parser("import", help="convert published checkpoints (X-Codec, SemantiCodec, ...) to codecfw ones",
                       add_help=False, prefix_chars="\0")
    p.add_argument("words", nargs="*")
    p.set_defaults(func=run)
