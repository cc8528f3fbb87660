"""``codecfw encode INPUT... -o OUT --checkpoint CKPT``: audio files → token files (``.cfwt``).

Inputs are files, folders (recursive) and globs; outputs mirror the inputs' relative paths below OUT (a single input
may name its output file). Long files are streamed in windows (bounded memory); short files of equal length are
encoded together, ``--batch-size`` at a time. A bad file is reported and skipped; the exit status is 1 if any
failed, 2 if the codec could not be loaded.
"""

from __future__ import annotations

import sys

from ._io import (Report, UsageError, add_codec_arguments, assign_targets, describe, exists_skip, expand_inputs,
                  open_tokenizer, progress_bar, usage_error)


def run(args) -> int:
    from ..data.audio import AUDIO_EXTENSIONS, MIXDOWNS, AudioError, audio_info
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
    window = tok.policy.window if not args.no_chunk else float("inf")
    resample = not args.no_resample
    # Probe every file first: unreadable/empty/wrong-rate files fail before any compute, and the bar knows the total.
    todo = []
    for job in jobs:
        if exists_skip(job, args, report):
            continue
        try:
            info = audio_info(job.source)
            if info.sample_rate != tok.sample_rate and not resample:
                raise AudioError(job.source, f"sample rate {info.sample_rate} Hz, but the codec expects "
                                             f"{tok.sample_rate} Hz (drop --no-resample to resample it)")
            if args.mixdown == "error" and info.channels > 1:
                raise AudioError(job.source, f"has {info.channels} channels but --mixdown error requires mono")
        except AudioError as exc:
            report.fail(str(exc))
            continue
        todo.append((job, info))
    bar = progress_bar(sum(i.duration for _, i in todo), args.quiet, "encode")
    meta_of = lambda job, info: {"source": str(job.rel), "source_sample_rate": info.sample_rate,  # noqa: E731
                                 "source_channels": info.channels, "mixdown": args.mixdown}

    def save(job, info, tf) -> None:
        tf.metadata.update(meta_of(job, info))
        tf.save(job.target)
        report.files += 1
        report.seconds_audio += tf.duration

    batch: list = []

    def flush() -> None:
        # Short files: read whole (they fit one window), encode equal lengths together.
        items, ok = [], []
        for job, info in batch:
            try:
                items.append(AudioSource(job.source, tok.sample_rate, mixdown=args.mixdown, resample=resample).read())
                ok.append((job, info))
            except AudioError as exc:
                report.fail(str(exc))
        if items:
            try:
                files = tok.encode(items, tok.sample_rate, batch_size=args.batch_size, chunked=not args.no_chunk)
            except Exception as exc:  # noqa: BLE001 - one bad batch must not end the run
                for job, _ in ok:
                    report.fail(f"{job.source}: encoding failed: {describe(exc)}")
            else:
                for (job, info), tf in zip(ok, files):
                    try:
                        save(job, info, tf)
                    except OSError as exc:
                        report.fail(f"{job.target}: cannot write: {describe(exc)}")
                    bar.update(info.duration)
        batch.clear()

    for job, info in todo:
        expected = info.frames * tok.sample_rate / info.sample_rate
        if expected <= window:
            batch.append((job, info))
            if len(batch) >= args.batch_size:
                flush()
            continue
        try:
            tf = tok.encode_file(job.source, mixdown=args.mixdown, resample_input=resample,
                                 batch_size=args.batch_size, chunked=not args.no_chunk,
                                 progress=lambda n: bar.update(n / tok.sample_rate))
            save(job, info, tf)
        except (AudioError, OSError, RuntimeError, ValueError) as exc:
            report.fail(describe(exc) if isinstance(exc, AudioError) else f"{job.source}: {describe(exc)}")
    flush()
    bar.close()
    print(report.line(args.output))
    return report.exit_code


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
