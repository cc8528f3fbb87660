"""``codecfw eval SYSTEM --data MANIFEST -o OUT``: score a codec (and anchors) with the registered metrics.

    codecfw eval runs/xcodec-1a2b3c --data data/demo/valid.jsonl -o eval/xcodec
    codecfw eval recipes/xcodec.yaml --data data/demo --split valid -o eval/untrained --metrics mel stft pesq
    codecfw eval identity --data data/demo/valid.jsonl -o eval/anchors --anchors codec2,opus
    codecfw eval --command 'opusenc --bitrate 6 {in} {bits} && opusdec --rate 16000 {bits} {out}' \\
        --command-name opus-cli-6k --data data/demo/valid.jsonl -o eval/opus-cli
    codecfw eval CKPT --data speech.csv -o out --metrics "mel:params=dac_train_7scale,sample_rate=44100" \\
        "wer:asr=transformers,model=/models/whisper-large-v3,normaliser=whisper_english" --probe domain
    codecfw eval --list-metrics

SYSTEM is a checkpoint folder or run directory, a recipe (an untrained codec: plumbing checks), a registered
pretrained name, or ``identity``; a codec runs through the path users ship (``AudioTokenizer.encode`` → a ``.cfwt``
token file on disk → ``decode``, chunked as configured). ``--command`` adds any external codec as a shell command
(placeholders ``{in}``, ``{bits}``, ``{out}``, ``{rate}``); SYSTEM may then be omitted. Metrics are ``kind`` or
``kind:key=value,...`` (or a YAML file with a list). Writes clips.csv, summary.csv, results.json, report.md,
plots/ and audio/ under OUT (see core/evaluation/).
"""

from __future__ import annotations

import logging
import sys


def _list_metrics() -> int:
    from ..registry import get_registry

    for kind, reg in sorted(get_registry().kinds("metric").items()):
        caps = ", ".join(f"{k}={v}" for k, v in reg.capabilities.items())
        print(f"{kind:10s} {reg.distribution} {reg.version}  {caps}")
        for name, f in reg.config.model_fields.items():
            if name != "kind":
                print(f"    {name} = {f.default!r}  {f.description or ''}".rstrip())
    return 0


def run(args) -> int:
    from ..config import RecipeError
    from ..metric import MetricSpecError, build_metrics, load_metric_configs
    from ..registry import get_registry

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if args.list_metrics:
        return _list_metrics()
    if not (args.system or args.commands) or not args.data or not args.out:
        print("codecfw eval: SYSTEM (or --command), --data and -o/--out are required (or --list-metrics)",
              file=sys.stderr)
        return 2
    if args.command_names and len(args.command_names) != len(args.commands):
        print(f"error: {len(args.command_names)} --command-name for {len(args.commands)} --command",
              file=sys.stderr)
        return 2
    if args.chunk_seconds is not None and args.chunk_seconds <= 0:
        print(f"error: --chunk-seconds must be > 0, got {args.chunk_seconds}", file=sys.stderr)
        return 2
    if args.batch_size < 1:
        print(f"error: --batch-size must be >= 1, got {args.batch_size}", file=sys.stderr)
        return 2
    from ..data.dataset import ManifestError, NoUsableAudioError, load_clips
    from ..evaluation.anchors import CommandSystem, build_anchors
    from ..evaluation.evaluate import evaluate, load_system

    registry = get_registry()
    try:
        metrics = build_metrics(load_metric_configs(args.metrics, registry), registry)
        anchors = build_anchors(args.anchors) if args.anchors else []
        names = args.command_names or [f"command{i + 1}" if len(args.commands) > 1 else "command"
                                       for i in range(len(args.commands))]
        commands = [CommandSystem(cmd, name, args.command_rate) for cmd, name in zip(args.commands, names)]
        systems = [load_system(args.system, registry, args.device, args.overrides, chunk_seconds=args.chunk_seconds,
                               chunked=not args.no_chunk, batch_size=args.batch_size)] if args.system else []
        clips = load_clips(args.data, split=args.split, limit=args.limit)
    except (MetricSpecError, RecipeError, FileNotFoundError, ManifestError, NoUsableAudioError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report_clips = [c for c in args.clips.split(",") if c] if args.clips else args.report_clips
    probe = {"label_key": args.probe} if args.probe else None
    result = evaluate([*systems, *commands, *anchors], clips, metrics, args.out, sample_rate=args.sample_rate,
                      max_seconds=args.max_seconds, report_clips=report_clips, probe=probe,
                      progress=not args.no_progress, data_source=args.data, group_by=args.group_by)
    from ..evaluation.report import fmt

    cols = [c for c in ("bitrate_kbps", "mel", "stft", "si_sdr", "pesq", "stoi", "wer", "dwer") if c in result.columns]
    for name in result.settings["systems"]:
        row = result.overall(name)
        print(f"{name}: " + ", ".join(f"{c} {fmt(row.get(c))}" for c in cols))
    for what, items in result.unavailable.items():
        for k, v in items.items():
            print(f"unavailable {what[:-1]} {k}: {v}", file=sys.stderr)
    n_err = sum(e["count"] for items in result.errors.values() for e in items.values())
    if n_err:
        print(f"{n_err} metric/clip failure(s) recorded as NaN (see results.json)", file=sys.stderr)
    print(f"report: {result.out_dir / 'report.md'}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a codec (and Codec2/Opus anchors) with the registered metrics")
    p.add_argument("system", nargs="?", metavar="RECIPE_OR_CHECKPOINT",
                   help="checkpoint folder / run directory, recipe, pretrained name, or 'identity' (optional with "
                        "--command)")
    p.add_argument("--data", help="manifest (.jsonl/.csv) or folder of audio")
    p.add_argument("-o", "--out", help="output folder")
    p.add_argument("--metrics", nargs="+", default=None, metavar="METRIC",
                   help="kind or kind:key=value,... or a YAML list (default: mel stft l1 si_sdr pesq stoi visqol wer "
                        "codebook bitrate)")
    p.add_argument("--anchors", action="append", default=[], metavar="LIST",
                   help="non-neural anchors: codec2, opus, codec2-1200, opus-8k (comma-separated, repeatable)")
    p.add_argument("--split", default=None, help="keep manifest rows of this split (and rows without one)")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N clips only")
    p.add_argument("--max-seconds", type=float, default=None, help="crop each clip to its first S seconds")
    p.add_argument("--sample-rate", type=int, default=None, help="evaluation rate (default: the codec's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--chunk-seconds", type=float, default=None, metavar="S",
                   help="override the codec's chunk window (as codecfw encode/decode --chunk-seconds)")
    p.add_argument("--no-chunk", action="store_true", help="process every clip whole, as codecfw encode --no-chunk")
    p.add_argument("--batch-size", type=int, default=8, metavar="N", help="windows per forward pass (default 8)")
    p.add_argument("--command", dest="commands", action="append", default=[], metavar="CMD",
                   help="evaluate an external codec: a shell command with {in} (input WAV), {bits} (encoded "
                        "file), {out} (decoded audio) and {rate}, e.g. 'ENC {in} {bits} && DEC {bits} {out}' "
                        "(repeatable)")
    p.add_argument("--command-name", dest="command_names", action="append", default=[], metavar="NAME",
                   help="name of each --command in the tables (in order; default command, command2, ...)")
    p.add_argument("--command-rate", type=int, default=16000, metavar="HZ",
                   help="sample rate of the WAV given to --command (default 16000)")
    p.add_argument("--report-clips", type=int, default=3, help="clips shown in the report (one per domain first)")
    p.add_argument("--clips", default=None, help="comma-separated clip ids to show in the report instead")
    p.add_argument("--group-by", default=None, metavar="COLUMN",
                   help="also summarise each domain per value of this manifest column (e.g. kind: "
                        "speech/recorded, speech/synthetic)")
    p.add_argument("--probe", nargs="?", const="domain", default=None, metavar="LABEL",
                   help="semantic probe (SemantiCodec Table III) on this manifest column (default: domain)")
    p.add_argument("--override", dest="overrides", action="append", default=[], metavar="KEY.SUB=VALUE",
                   help="recipe override when SYSTEM is a recipe (repeatable)")
    p.add_argument("--list-metrics", action="store_true", help="list metric kinds and their settings, then exit")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)
