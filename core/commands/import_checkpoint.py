"""``codecfw import {xcodec,semanticodec,pretrained} ... -o DST``: published checkpoints → codecfw checkpoint folders.

- ``xcodec SRC``: a reference ``.pth`` (``ZhenYe234/xcodec``; its ``config.yaml`` beside it or ``--config``) or a
  transformers port (``hf-audio/xcodec-*`` directory or hub id).
- ``semanticodec``: the official SemantiCodec files (``haoheliu/SemantiCodec``) at a token rate and vocabulary,
  downloaded or taken from ``--files DIR``.
- ``pretrained NAME``: any registered pretrained name (``codecfw.core.pretrained``; ``codecfw plugins`` lists them).

The output folder (``model.safetensors`` + ``meta.json``) loads with ``codecfw.load(DST)`` and every command that
takes ``--checkpoint``. Each importer is a function; a plugin adds one by registering a pretrained name.
"""

from __future__ import annotations

import sys
from pathlib import Path


_VOCAB = {"4k": 4096, "8k": 8192, "16k": 16384, "32k": 32768}


def _convert_pretrained(name: str, dst: str, files_dir: str | None) -> Path:
    from ..pretrained import fetch_files, save_converted
    from ..registry import get_registry

    registry = get_registry()
    reg = registry.get("pretrained", name)
    spec = reg.config()
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


def run(args) -> int:
    try:
        if args.source == "xcodec":
            from codecfw.plugins.semantic.xcodec_checkpoint import convert_xcodec

            out = convert_xcodec(args.src, args.output, config=args.config, teacher=args.teacher,
                                 teacher_config=args.teacher_config, name=args.name, gain=args.gain,
                                 verify=not args.no_verify)
        elif args.source == "semanticodec":
            from codecfw.plugins.semantic.semanticodec_checkpoint import import_semanticodec

            sizes = [4096, 8192, 16384, 32768] if args.vocab_sizes == ["all"] else [
                _VOCAB[v] for v in args.vocab_sizes or []]
            out = import_semanticodec(args.output, args.files or args.hub, args.token_rate, _VOCAB[args.vocab], sizes,
                                      args.revision, args.keep_vae_encoder)
        else:
            out = _convert_pretrained(args.name, args.output, args.files)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        print(f"codecfw import {args.source}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("import", help="convert published checkpoints (X-Codec, SemantiCodec, ...) to codecfw ones",
                       description=__doc__.split("\n\n")[0].replace("``", ""))
    which = p.add_subparsers(dest="source", metavar="SOURCE", required=True)

    x = which.add_parser("xcodec", help="an X-Codec .pth (reference) or a transformers XcodecModel port")
    x.add_argument("src", metavar="SRC", help=".pth file, transformers directory, or hub id (hf-audio/xcodec-...)")
    x.add_argument("--config", default=None, help="the reference's config.yaml (default: config.yaml beside SRC)")
    x.add_argument("--teacher", default=None, help="teacher hub id or directory whose config.json describes the "
                                                   "SSL model inside the .pth (default: from config.yaml)")
    x.add_argument("--teacher-config", default=None, help="the teacher's config.json, instead of --teacher")
    x.add_argument("--gain", type=float, default=None, help="data.gain of the recipe (default 0.95, the reference's)")
    x.add_argument("--name", default=None, help="recipe name (default: from SRC)")
    x.add_argument("--no-verify", action="store_true", help="skip building the codec to check the weights fit")

    s = which.add_parser("semanticodec", help="the official SemantiCodec checkpoints")
    s.add_argument("--token-rate", type=int, choices=(100, 50, 25), default=100)
    s.add_argument("--vocab", choices=("4k", "8k", "16k", "32k"), default="16k")
    s.add_argument("--files", "--source", default=None, metavar="DIR",
                   help="local copy of the hub repository (or its semanticodec_tokenrate_<rate> folder), or a hub "
                        "repository id; default: download from --hub")
    s.add_argument("--hub", default="haoheliu/SemantiCodec", metavar="REPO_ID", help="hub repository to download from")
    s.add_argument("--revision", default=None, help="hub branch, tag or commit")
    s.add_argument("--vocab-sizes", nargs="+", choices=("4k", "8k", "16k", "32k", "all"), default=None,
                   help="semantic codebooks to include, e.g. `all` for the paper's variable vocabulary "
                        "(default: only --vocab)")
    s.add_argument("--keep-vae-encoder", action="store_true",
                   help="keep the VAE encoder (training needs it; inference does not)")

    n = which.add_parser("pretrained", help="any registered pretrained name")
    n.add_argument("name", metavar="NAME")
    n.add_argument("--files", default=None, metavar="DIR", help="folder with the official files (else download)")

    for q in (x, s, n):
        q.add_argument("-o", "--output", required=True, metavar="DST", help="checkpoint folder to write")
        q.set_defaults(func=run)
