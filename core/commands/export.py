"""``codecfw export TOKENS... -o OUT --format npy|pt``: token files → arrays for language-model pipelines.

``npy`` writes one integer array per file: ``[streams x frames]`` (``--layout stacked``, rows in the codec's stream
order) or ``[frames*streams]`` time-major (``--layout interleaved``), in the smallest signed dtype that holds the
codebooks (int16 up to 32768 entries). ``pt`` writes a dict (``tokens`` per stream as LongTensor plus the header
fields) that ``torch.load(..., weights_only=True)`` reads. Damaged token files are reported and skipped.
"""

from __future__ import annotations

import time

from ._io import Report, assign_targets, describe, expand_inputs


def run(args) -> int:
    from ..tokenizer.tokens import SUFFIX, TokenFile, TokenFileError, export_tokens

    report = Report("exported")
    jobs = assign_targets(expand_inputs(args.inputs, (SUFFIX,), report), args.output, f".{args.format}",
                          (f".{args.format}",), report)
    for job in jobs:
        if args.skip_existing and job.target.exists():
            report.skipped += 1
            continue
        try:
            tf = TokenFile.load(job.source)
            if args.expect_config and tf.config_hash != args.expect_config:
                raise TokenFileError(job.source, f"written by codec {tf.codec!r} (config {tf.config_hash}), "
                                                 f"expected config {args.expect_config}")
            export_tokens(tf, job.target, args.format, args.layout)
        except (TokenFileError, ValueError, OSError) as exc:
            report.fail(describe(exc) if isinstance(exc, TokenFileError) else f"{job.source}: {describe(exc)}")
            continue
        report.files += 1
        report.seconds_audio += tf.duration
    # Export reads no audio: report the token count instead of a real-time factor.
    wall = time.perf_counter() - report.started
    print(f"exported {report.files} file(s), {report.failed} failed, {report.seconds_audio / 3600:.4f} h of audio "
          f"in {wall:.1f} s -> {args.output}")
    return report.exit_code


def register(sub) -> None:
    p = sub.add_parser("export", help="export token files to .npy or .pt for language-model pipelines",
                       description=__doc__.split("\n\n")[0].replace("``", ""))
    p.add_argument("inputs", nargs="+", metavar="TOKENS", help="token files (.cfwt), folders (recursive) or globs")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output folder (relative paths mirrored), or a .npy/.pt file for a single input")
    p.add_argument("--format", choices=("npy", "pt"), default="npy")
    p.add_argument("--layout", choices=("stacked", "interleaved"), default="stacked",
                   help="npy only: [streams x frames] or time-major interleaved [frames*streams]")
    p.add_argument("--expect-config", default=None, metavar="HASH",
                   help="refuse token files whose codec config hash differs from HASH")
    p.add_argument("--skip-existing", action="store_true")
    p.set_defaults(func=run)
