"""Shared plumbing of ``codecfw encode`` / ``decode`` / ``export``: inputs, output paths, the codec, progress."""

from __future__ import annotations

import argparse
import glob
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from ..files import printable, unreadable_reason, walk_files

_MAGIC = set("*?[")


class UsageError(Exception):
    """A command-line problem that stops the command before any file is processed (exit status 2)."""


@dataclass
class Job:
    """One input file and where its result goes."""

    source: Path
    rel: Path  # path relative to the input root it was found under (mirrored below the output folder)
    target: Path | None = None


@dataclass
class Report:
    """Counts for the summary line."""

    verb: str
    files: int = 0
    failed: int = 0
    skipped: int = 0
    seconds_audio: float = 0.0
    started: float = field(default_factory=time.perf_counter)
    errors: list[str] = field(default_factory=list)

    def fail(self, message: str) -> None:
        self.failed += 1
        self.errors.append(message)
        print(f"error: {printable(message)}", file=sys.stderr)

    def line(self, out: str) -> str:
        wall = time.perf_counter() - self.started
        rtf = wall / self.seconds_audio if self.seconds_audio else float("nan")
        speed = f" ({1 / rtf:.1f}x real time)" if self.seconds_audio and rtf > 0 else ""
        extra = f", {self.skipped} skipped (exist)" if self.skipped else ""
        return (f"{self.verb} {self.files} file(s), {self.failed} failed{extra}; "
                f"{self.seconds_audio / 3600:.4f} h of audio in {wall:.1f} s: real-time factor {rtf:.4f}{speed} "
                f"-> {out}")

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


def expand_inputs(inputs: Sequence[str], suffixes: Sequence[str], report: Report) -> list[Job]:
    """Files as given, folders recursively (files with one of ``suffixes``; hidden ones skipped), globs (``**``
    allowed) relative to their first magic-free directory. Unmatched inputs are reported as failures."""
    jobs: list[Job] = []
    suffixes = tuple(s.lower() for s in suffixes)
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(walk_files(path, suffixes))  # bounded and cycle-safe, hidden names skipped
            if not found:
                report.fail(f"{item}: folder has no {'/'.join(suffixes)} files")
            jobs += [Job(p, p.relative_to(path)) for p in found]
        elif path.is_file():
            jobs.append(Job(path, Path(path.name)))
        elif _MAGIC & set(item):
            base = Path(*_until_magic(Path(item).parts))
            found = sorted(_glob(item, base))
            if not found:
                report.fail(f"{item}: no file matches this pattern")
            jobs += [Job(p, p.relative_to(base) if p.is_relative_to(base) else Path(p.name)) for p in found]
        else:
            reason = unreadable_reason(path)
            report.fail(f"{item}: {reason[1] if reason and reason[0] != 'missing' else 'no such file or folder'}")
    return jobs


def _glob(pattern: str, base: Path) -> list[Path]:
    """Files matching ``pattern``. ``**`` patterns are matched over :func:`walk_files` below ``base`` (Python's
    recursive glob follows symlinked folders without a cycle check); others go to :func:`glob.glob`."""
    if "**" not in pattern:
        return [Path(p) for p in glob.glob(pattern) if Path(p).is_file()]
    parts = Path(pattern).parts[len(base.parts) if base != Path(".") else 0:]
    regex = "/".join("(?:[^/]+/)*[^/]+" if part == "**" and i == len(parts) - 1 else
                     "(?:[^/]+/)*" if part == "**" else _translate(part) for i, part in enumerate(parts))
    regex = regex.replace("(?:[^/]+/)*/", "(?:[^/]+/)*")
    matcher = re.compile(regex)
    return [p for p in walk_files(base) if matcher.fullmatch(p.relative_to(base).as_posix())]


def _translate(part: str) -> str:
    """One glob path component → a regex that never crosses ``/``."""
    out, i = [], 0
    while i < len(part):
        c = part[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[" and "]" in part[i + 2:]:  # a class; its first character may be ']' or '!'
            end = part.index("]", i + 2)
            body = part[i + 1:end]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def _until_magic(parts: Sequence[str]) -> list[str]:
    out = []
    for part in parts:
        if _MAGIC & set(part):
            break
        out.append(part)
    return out or ["."]


def assign_targets(jobs: list[Job], out: str, suffix: str, single_suffixes: Sequence[str], report: Report
                   ) -> list[Job]:
    """Mirror relative paths below ``out`` with ``suffix``; a single input may name its output file directly.
    Two inputs mapping to one output are errors (both dropped)."""
    out_path = Path(out)
    if len(jobs) == 1 and out_path.suffix.lower() in single_suffixes and not out_path.is_dir():
        jobs[0].target = out_path
        return jobs
    by_target: dict[Path, list[Job]] = {}
    for job in jobs:
        job.target = out_path / job.rel.with_suffix(suffix)
        by_target.setdefault(job.target, []).append(job)
    kept = []
    for target, group in by_target.items():
        if len(group) > 1:
            report.fail(f"{target}: {len(group)} inputs would write here ({', '.join(str(j.source) for j in group)})"
                        f"; rename them or encode them into separate folders")
        else:
            kept.append(group[0])
    return kept


def add_codec_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", "-c", required=True, metavar="CKPT",
                   help="checkpoint folder, run directory, or registered pretrained name (see `codecfw plugins`)")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--batch-size", type=int, default=8, metavar="N",
                   help="windows (long files) or equal-length short files per forward pass (default 8)")
    p.add_argument("--chunk-seconds", type=float, default=None, metavar="S",
                   help="override the codec's chunk window for long recordings")
    p.add_argument("--no-chunk", action="store_true", help="process every recording whole (memory grows with "
                                                          "duration; the reference for chunked results)")
    p.add_argument("--skip-existing", action="store_true", help="leave outputs that already exist alone")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def open_tokenizer(args: argparse.Namespace) -> Any:
    """Load the codec named by ``--checkpoint``; raises :class:`UsageError` with a message on failure."""
    import torch

    from ..tokenizer.api import load

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise UsageError(f"--device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {device!r}: CUDA is not available on this machine")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.chunk_seconds is not None and args.chunk_seconds <= 0:
        raise UsageError(f"--chunk-seconds must be > 0, got {args.chunk_seconds}")
    try:
        return load(args.checkpoint, device=dev, chunk_seconds=args.chunk_seconds)
    except (ValueError, KeyError, FileNotFoundError, RuntimeError, TypeError) as exc:
        raise UsageError(f"--checkpoint {args.checkpoint}: {str(exc).strip()}") from None


def finish(results: Iterator[tuple[int, Any]], jobs: Sequence[Job], report: Report, bar: Any, out: str, verb: str,
           done: Callable[[int, Any], float]) -> int:
    """Drain a tokenizer's file loop (``encode_files``/``decode_files``: ``(index, result or exception)``): pass each
    result to ``done(index, result)`` (which saves it if needed and returns the seconds of audio it holds), report
    each failure and go on; then print the summary line. Returns the exit status."""
    from ..data.audio import AudioError

    def failure(job: Job, exc: Exception) -> str:
        """Always names the input; the output too when writing it failed."""
        if isinstance(exc, AudioError) and exc.path == str(job.source):
            return str(exc)  # names the input already
        if isinstance(exc, AudioError) and exc.path == str(job.target):
            return f"{job.source}: cannot write {exc}"
        if isinstance(exc, OSError):
            return f"{job.source}: cannot write {job.target}: {describe(exc)}"
        return f"{job.source}: {verb} failed: {describe(exc)}"

    for i, result in results:
        job = jobs[i]
        if isinstance(result, Exception):
            report.fail(failure(job, result))
            continue
        try:
            seconds = done(i, result)
        except OSError as exc:
            report.fail(failure(job, exc))
            continue
        report.files += 1
        report.seconds_audio += seconds
    bar.close()
    print(report.line(out))
    return report.exit_code


def usage_error(exc: UsageError) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return 2


def progress_bar(total_seconds: float, quiet: bool, desc: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=round(total_seconds, 2), unit="s", desc=desc, disable=quiet, leave=False,
                bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s audio [{elapsed}<{remaining}, {rate_fmt}]")


def exists_skip(job: Job, args: argparse.Namespace, report: Report) -> bool:
    if args.skip_existing and job.target is not None and job.target.exists():
        report.skipped += 1
        return True
    return False


def describe(exc: BaseException) -> str:
    text = str(exc)
    return text if text else type(exc).__name__
