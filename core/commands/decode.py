"""``codecfw decode TOKENS... -o OUT --checkpoint CKPT``: token files (``.cfwt``) → FLAC/WAV audio.

Token files written by another codec (different config hash) and damaged or truncated files are reported with the
reason and skipped; the exit status is 1 if any failed. Long recordings are decoded window by window and streamed
to the output file; every output is written atomically.
"""

from __future__ import annotations

from ._io import (Report, UsageError, add_codec_arguments, assign_targets, exists_skip, expand_inputs, finish,
                  open_tokenizer, progress_bar, usage_error)


def run(args) -> int:
    from ..tokenizer.tokens import SUFFIX, TokenFile, TokenFileError

    report = Report("decoded")
    suffix = f".{args.format}"
    jobs = assign_targets(expand_inputs(args.inputs, (SUFFIX,), report), args.output, suffix, (".flac", ".wav"),
                          report)
    if args.sample_rate is not None and args.sample_rate <= 0:
        return usage_error(UsageError(f"--sample-rate must be > 0, got {args.sample_rate}"))
    try:
        tok = open_tokenizer(args)
    except UsageError as exc:
        return usage_error(exc)
    todo = []
    for job in jobs:
        if exists_skip(job, args, report):
            continue
        try:
            tf = TokenFile.load(job.source)
            tok.check(tf, job.source)
        except TokenFileError as exc:
            report.fail(str(exc))
            continue
        todo.append((job, tf))
    bar = progress_bar(sum(tf.duration for _, tf in todo), args.quiet, "decode")
    results = tok.decode_files([tf for _, tf in todo], [job.target for job, _ in todo],
                               sample_rate="source" if args.original_rate else args.sample_rate,
                               subtype=args.subtype, batch_size=args.batch_size, chunked=not args.no_chunk,
                               progress=lambda n: bar.update(n / tok.sample_rate))
    return finish(results, [job for job, _ in todo], report, bar, args.output, "decoding",
                  lambda i, _: todo[i][1].duration)


def register(sub) -> None:
    p = sub.add_parser("decode", help="decode token files into FLAC/WAV audio",
                       description=__doc__.split("\n\n")[0].replace("``", ""))
    p.add_argument("inputs", nargs="+", metavar="TOKENS", help="token files (.cfwt), folders (recursive) or globs")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output folder (relative paths mirrored), or a .flac/.wav file for a single input")
    add_codec_arguments(p)
    p.add_argument("--format", choices=("flac", "wav"), default="flac", help="output format (default flac)")
    p.add_argument("--subtype", default=None, choices=("PCM_16", "PCM_24", "FLOAT"),
                   help="sample format (default PCM_16; FLOAT only for wav)")
    rate = p.add_mutually_exclusive_group()
    rate.add_argument("--sample-rate", type=int, default=None, metavar="HZ",
                      help="resample the output to this rate (default: the codec's rate)")
    rate.add_argument("--original-rate", action="store_true",
                      help="resample the output to the rate of the file that was encoded (recorded in the tokens)")
    p.set_defaults(func=run)
