"""``codecfw encode INPUT... -o OUT --checkpoint CKPT``: audio files → token files (``.cfwt``).

Inputs are files, folders (recursive) and globs; outputs mirror the inputs' relative paths below OUT (a single input
may name its output file). Long files are streamed in windows (bounded memory); short files of equal length are
encoded together, ``--batch-size`` at a time. A bad file is reported and skipped; the exit status is 1 if any
failed, 2 if the codec could not be loaded.
"""

from __future__ import annotations

import sys

from ._io import (Report, UsageError, add_codec_arguments, assign_targets, exists_skip, expand_inputs, finish,
                  open_tokenizer, progress_bar, usage_error)


def run(args) -> int:
    from ..data.audio import AUDIO_EXTENSIONS, MIXDOWNS, AudioError
    from ..data.stream import AudioSource
    from ..tokenizer.tokens import SUFFIX

    if args.mixdown not in MIXDOWNS:  # argparse choices already checks; kept for programmatic calls
        print(f"error: --mixdown must be one of {', '.join(MIXDOWNS)}", file=sys.stderr)
        return 2
    report = Report("encoded")
    jobs = assign_targets(expand_inputs(args.inputs, AUDIO_EXTENSIONS, report), args.output, SUFFIX, (SUFFIX,), report)
    try:
        tok = open_tokenizer(args)
    except UsageError as exc:
        return usage_error(exc)
    # Open every file first: unreadable/empty/wrong-rate files fail before any compute, and the bar knows the total.
    todo = []
    for job in jobs:
        if exists_skip(job, args, report):
            continue
        try:
            todo.append((job, AudioSource(job.source, tok.sample_rate, mixdown=args.mixdown,
                                          resample=not args.no_resample)))
        except AudioError as exc:
            report.fail(str(exc))
    bar = progress_bar(sum(source.info.duration for _, source in todo), args.quiet, "encode")
    results = tok.encode_files([source for _, source in todo], names=[str(job.rel) for job, _ in todo],
                               batch_size=args.batch_size, chunked=not args.no_chunk,
                               progress=lambda n: bar.update(n / tok.sample_rate))

    def save(i: int, tf) -> float:
        tf.save(todo[i][0].target)
        return tf.duration

    return finish(results, [job for job, _ in todo], report, bar, args.output, "encoding", save)


def register(sub) -> None:
    p = sub.add_parser("encode", help="encode audio files, folders or globs into token files",
                       description=__doc__.split("\n\n")[0].replace("``", ""))
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="audio files, folders (recursive) or globs")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output folder (relative paths mirrored), or a .cfwt file for a single input")
    add_codec_arguments(p)
    p.add_argument("--no-resample", action="store_true",
                   help="refuse audio whose sample rate differs from the codec's instead of resampling it")
    p.add_argument("--mixdown", choices=("mean", "first", "error"), default="mean",
                   help="multichannel audio: average the channels, keep channel 0, or refuse (default mean)")
    p.set_defaults(func=run)
