"""core/atomic.py: outputs appear whole or not at all, with the permissions a plain ``open(path, "w")`` gives."""

from __future__ import annotations

import os
import stat

import pytest

from codecfw.core import atomic


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def test_files_honour_the_umask_not_mkstemps_0600(tmp_path, umask_027):
    path = atomic.write_text(tmp_path / "a.json", "{}")
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~0o027 == 0o640
    with atomic.atomic_path(tmp_path / "b.flac") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".") and tmp.suffix == ".flac"
        tmp.write_bytes(b"x")
    assert stat.S_IMODE((tmp_path / "b.flac").stat().st_mode) == 0o640


def test_an_exception_leaves_the_old_file_and_no_temporary(tmp_path):
    target = atomic.write_json(tmp_path / "sub" / "x.json", {"a": 1}, sort_keys=True)
    with pytest.raises(KeyboardInterrupt):
        with atomic.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt
    assert target.read_text() == '{\n  "a": 1\n}'
    assert sorted(p.name for p in target.parent.iterdir()) == ["x.json"]


def test_folders_are_swapped_whole(tmp_path):
    final = tmp_path / "ckpt"
    with atomic.atomic_folder(final) as tmp:
        (tmp / "meta.json").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic.atomic_folder(final) as tmp:
            (tmp / "meta.json").write_text("2")
            raise RuntimeError("crash")
    assert (final / "meta.json").read_text() == "1"
    with atomic.atomic_folder(final) as tmp:
        (tmp / "model.safetensors").write_text("3")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    assert sorted(p.name for p in final.iterdir()) == ["model.safetensors"]
