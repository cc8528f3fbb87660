"""Walking folders of user files: one bounded, cycle-safe walk for every folder source (training and validation data,
``cluster``, ``eval``, ``encode``/``decode``/``export`` inputs).

``os.walk(followlinks=True)`` follows a symlink loop (``sub/up -> ..``) until the path is too long: each file is
listed dozens of times, and two loops make the walk exponential. :func:`walk_files` follows linked folders (a corpus
assembled from links is common) but enters each real folder once, keyed by ``(st_dev, st_ino)``, and stops with a
:class:`WalkError` naming the folder beyond ``max_depth`` levels or ``max_files`` files. Names are ``str`` as the
file system gives them: a name that is not UTF-8 keeps its bytes as surrogate escapes (``os.fsdecode``), and
``os.fsencode`` gives them back.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Iterator, Sequence

MAX_DEPTH = 64
MAX_FILES = 10_000_000


class WalkError(ValueError):
    """A folder is too deep or holds too many files to be a data source; the message names it."""


_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def unreadable_reason(path: str | os.PathLike) -> tuple[str, str] | None:
    """Why ``path`` cannot be read as a regular file, as ``(reason, detail)`` with reason ``"missing"`` or
    ``"unreadable"``; None when it can. Never opens anything but a regular file, so a FIFO cannot block the caller."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "missing", "no such file"
    except OSError as exc:
        return "unreadable", exc.strerror or str(exc)
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _KINDS if test(mode)), "not a file")
        return "unreadable", f"not a regular file ({kind})"
    try:
        os.close(os.open(path, os.O_RDONLY))
    except OSError as exc:
        return "unreadable", exc.strerror or str(exc)
    return None


def printable(text: str) -> str:
    """``text`` safe to print on any stream: file names that are not UTF-8 (surrogate escapes) shown as ``\\udcXX``."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def walk_files(root: str | os.PathLike, suffixes: Sequence[str] | None = None, *, hidden: bool = False,
               max_depth: int = MAX_DEPTH, max_files: int = MAX_FILES) -> Iterator[Path]:
    """Regular files below ``root`` (symlinks followed, each real folder entered once), sorted by path within each
    folder, folders before deeper ones as ``os.walk`` would. ``suffixes`` filters on the lower-cased suffix;
    names starting with ``.`` are skipped unless ``hidden``."""
    suffixes = tuple(s.lower() for s in suffixes) if suffixes is not None else None
    root = Path(root)
    seen: set[tuple[int, int]] = set()
    count = 0

    def visit(folder: Path, depth: int) -> Iterator[Path]:
        nonlocal count
        try:
            st = folder.stat()
        except OSError:
            return
        key = (st.st_dev, st.st_ino)
        if key in seen:  # a loop, or a second link to a folder already walked
            return
        seen.add(key)
        if depth > max_depth:
            raise WalkError(f"{folder}: more than {max_depth} folder levels below {root}; not a data folder?")
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            return
        folders = []
        for entry in entries:
            if not hidden and entry.name.startswith("."):
                continue
            try:
                mode = os.stat(entry.path).st_mode  # follows links; a dangling link raises
            except OSError:
                continue
            if stat.S_ISDIR(mode):
                folders.append(Path(entry.path))
            elif stat.S_ISREG(mode) and (suffixes is None or os.path.splitext(entry.name)[1].lower() in suffixes):
                count += 1
                if count > max_files:
                    raise WalkError(f"{root}: more than {max_files} files; give a manifest instead")
                yield Path(entry.path)
        for sub in folders:
            yield from visit(sub, depth + 1)

    yield from visit(root, 0)
