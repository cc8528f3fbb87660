"""Atomic file and folder writes: every output codecfw writes appears whole or not at all.

A file is written under a temporary name beside its target (same folder, so the rename never crosses a file system)
and renamed over the target (``os.replace``, atomic on POSIX) only when the writer finished without an exception;
on any exception, ``KeyboardInterrupt`` included, the temporary file is removed and the target is left as it was.
Temporary names start with ``.`` and keep the target's extension, so writers that pick a format from the extension
(soundfile, matplotlib) work and globs such as ``*.flac`` or ``shard_*.npy`` never see a half-written file.

Files are created with mode ``0o666 & ~umask``, as ``open(path, "w")`` would create them (``tempfile.mkstemp``'s
0600 would leave outputs unreadable to the group). Folders (checkpoints, converted codecs) are written under a
``.tmp-<name>-<pid>`` sibling and swapped in whole; :func:`codecfw.core.checkpoint.remove_incomplete` removes what an
interrupted swap leaves.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any, Iterator


def _create_temp(path: Path) -> Path:
    """A new empty file beside ``path``, mode 0666 & ~umask, with a name no other writer uses."""
    while True:
        tmp = path.with_name(f".{path.stem}.{os.getpid()}-{secrets.token_hex(4)}.tmp{path.suffix}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:  # pragma: no cover - 32 random bits
            continue


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file's or a folder's contents to disk (best effort: some file systems refuse folder fsync)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (parent folders created) for any writer to fill; when the block exits
    normally the file is flushed to disk (``fsync``) and renamed over ``path``; on an exception it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temp(path)
    mode = os.stat(tmp).st_mode
    try:
        yield tmp
        if fsync:
            fsync_path(tmp)
        os.chmod(tmp, mode)  # some writers replace the file with their own mode (safetensors: 0600)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2, sort_keys: bool = False,
               default: Any = None, newline: bool = False) -> Path:
    """``json.dumps(obj, indent=..., sort_keys=..., default=...)`` (+ a final newline if asked), atomically."""
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys, default=default)
    return write_text(path, text + "\n" if newline else text)


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; when the block exits normally its files are flushed and it
    replaces ``path`` (an existing folder is swapped out, then deleted); on an exception it is deleted."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        for p in tmp.iterdir():
            fsync_path(p)
        fsync_path(tmp)
        if final.exists():  # rename the old folder away first: os.replace cannot replace a non-empty folder
            old = final.parent / f".old-{final.name}-{os.getpid()}"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        fsync_path(final.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
