"""scripts/make_training_corpus.py: a tiny build (espeak-ng speech, a generated MIDI piece, generated effects; each
skipped when its tool is missing) checked for manifest format, disjoint splits, determinism and resumability, and
the refusal of the reserved packages."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from codecfw.core.data import load_entries, read_manifest

REPO = Path(__file__).resolve().parent.parent


def _load_script():
    spec = importlib.util.spec_from_file_location("make_training_corpus", REPO / "scripts" / "make_training_corpus.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_training_corpus"] = module
    spec.loader.exec_module(module)
    return module


mtc = _load_script()


def _tiny(out: Path, workers: int = 1):
    return mtc.build(out, mtc.tiny_plan(None, Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")), mtc.TINY_HELD_OUT,
                     progress=False, workers=workers)


def _digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    rows = _tiny(out)
    return out, rows


def test_manifest_format_and_audio(tiny):
    out, rows = tiny
    assert {r["domain"] for r in rows} >= {"sound"}
    for split in mtc.SPLITS:
        entries = read_manifest(out / f"{split}.jsonl")  # codecfw's own reader accepts every line
        assert entries and all(e.split == split and e.domain and e.meta["source"] and e.meta["licence"]
                               for e in entries)
    entries = load_entries(out / "manifest.jsonl", split="train")
    assert entries and all(Path(e.path).is_file() for e in entries)
    for r in rows:
        assert set(r) >= {"path", "domain", "transcript", "split", "source", "licence", "unit", "seconds"}
        assert r["domain"] in ("speech", "music", "sound") and r["split"] in mtc.SPLITS
        info = sf.info(str(out / r["path"]))
        assert (info.samplerate, info.channels, info.format, info.subtype) == (16000, 1, "FLAC", "PCM_16")
        assert abs(info.frames / 16000 - r["seconds"]) < 1e-3 and info.frames > 0
        if r.get("kind") == "synthetic":
            assert r["transcript"], r  # synthetic speech keeps the text it read
    # the checksum file covers the manifests as written
    for line in (out / "MANIFEST.sha256").read_text().splitlines():
        digest, name = line.split()
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest
    stats = json.loads((out / "stats.json").read_text())
    assert stats["total_hours"] == pytest.approx(sum(r["seconds"] for r in rows) / 3600, abs=1e-3)


def test_splits_are_disjoint_by_unit(tiny):
    _, rows = tiny
    split_of_unit: dict[str, set[str]] = {}
    for r in rows:
        split_of_unit.setdefault(r["unit"], set()).add(r["split"])
    assert all(len(s) == 1 for s in split_of_unit.values()), split_of_unit
    assert {r["split"] for r in rows} == set(mtc.SPLITS)
    # voices: the same speaker never appears in two splits either
    speakers: dict[str, set[str]] = {}
    for r in rows:
        if r["domain"] == "speech":
            speakers.setdefault(r["speaker"], set()).add(r["split"])
    assert all(len(s) == 1 for s in speakers.values())


def test_a_unit_held_out_twice_is_an_error():
    jobs = mtc.generated_sounds([1])
    with pytest.raises(ValueError, match="two splits"):
        mtc.assign_splits(jobs, {"valid": {"generated-sound:1"}, "test": {"generated-sound:1"}})


def test_deterministic_and_resumable(tiny, tmp_path):
    out, rows = tiny
    first = _digest(out)
    again = tmp_path / "again"
    rows2 = _tiny(again, workers=2)
    assert rows2 == rows and _digest(again) == first  # same inputs → same files and manifests, byte for byte,
    # whatever the number of rendering processes

    # resume: nothing to do when complete; a deleted file is rendered again, identical; a leftover temporary
    # (a write interrupted before its rename) is never taken for a finished file
    _tiny(again)
    assert mtc.build.rendered == 0
    victim = again / rows[0]["path"]
    victim.unlink()
    leftover = victim.parent / f".{victim.stem}.abc123.flac"
    leftover.write_bytes(b"half-written")
    assert mtc.build(again, mtc.tiny_plan(None, Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")), mtc.TINY_HELD_OUT,
                     progress=False) == rows
    assert mtc.build.rendered == 1
    assert hashlib.sha256(victim.read_bytes()).hexdigest() == first[rows[0]["path"]]
    assert not leftover.exists()  # not in the plan: pruned


def test_files_no_longer_planned_are_pruned_only_in_a_corpus_folder(tmp_path):
    rows = mtc.build(tmp_path / "c", mtc.generated_sounds([1, 2]), {}, progress=False)
    assert len(rows) == 2
    rows = mtc.build(tmp_path / "c", mtc.generated_sounds([1]), {}, progress=False)
    assert [p.name for p in (tmp_path / "c").rglob("*.flac")] == ["sfx_1.flac"] and len(rows) == 1
    foreign = tmp_path / "foreign"
    (foreign / "sound").mkdir(parents=True)
    (foreign / "sound" / "mine.flac").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="not a corpus this script"):
        mtc.build(foreign, mtc.generated_sounds([1]), {}, progress=False)
    assert (foreign / "sound" / "mine.flac").exists()


def test_interrupted_write_leaves_no_file(tmp_path, monkeypatch):
    jobs = mtc.generated_sounds([7])

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(mtc.sf, "write", boom)
    with pytest.raises(KeyboardInterrupt):
        mtc.build(tmp_path, jobs, {}, progress=False)
    assert not any(tmp_path.rglob("*.flac"))


@pytest.mark.parametrize("name", ["asterisk-core-sounds-en-g722", "asterisk-extra-sounds-en-gsm", "timgm6mb-soundfont",
                                  "festvox-us-slt-hts", "asterisk-moh-opsound-wav", "sound-theme-freedesktop",
                                  "oxygen-sounds", "lomiri-sounds", "fillets-ng-data", "colobot-common",
                                  "colobot-common-sounds", "pocketsphinx-testdata", "music21", "Oxygen-Sounds:all"])
def test_reserved_packages_are_refused_by_name(name):
    with pytest.raises(mtc.ReservedPackageError, match="reserved"):
        mtc.check_packages([name])


def test_allowed_packages_pass():
    mtc.check_packages(["asterisk-core-sounds-fr-g722", "asterisk-core-sounds-es", "fluid-soundfont-gm",
                        "festvox-kallpc16k", "yaru-theme-sound", "espeak-ng"])


def test_refused_before_any_download(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(mtc.subprocess, "run", lambda *a, **k: calls.append(a) or pytest.fail("ran a command"))
    with pytest.raises(mtc.ReservedPackageError):
        mtc.PackageCache(tmp_path).unpack("oxygen-sounds")
    assert calls == [] and not any(tmp_path.iterdir())


def test_refused_through_a_dependency(tmp_path, monkeypatch):
    """fluidsynth alone makes apt pull in timgm6mb-soundfont (libfluidsynth3's first soundfont alternative)."""
    simulated = ("NOTE: This is only a simulation!\n"
                 "Inst libinstpatch-1.0-2 (1.1.6-1 Debian:12 [amd64])\n"
                 "Inst timgm6mb-soundfont (0.4 Debian:12 [all])\n"
                 "Inst libfluidsynth3 (2.3.1-2 Debian:12 [amd64])\n"
                 "Inst fluidsynth (2.3.1-2 Debian:12 [amd64])\n")
    assert mtc.parse_apt_simulation(simulated) == ["libinstpatch-1.0-2", "timgm6mb-soundfont", "libfluidsynth3",
                                                   "fluidsynth"]

    def fake_run(cmd, **kw):
        assert cmd[:3] == ["apt-get", "install", "-s"], cmd  # only the simulation may run
        return subprocess.CompletedProcess(cmd, 0, stdout=simulated, stderr="")

    monkeypatch.setattr(mtc.shutil, "which", lambda exe: "/usr/bin/" + exe)
    monkeypatch.setattr(mtc.subprocess, "run", fake_run)
    with pytest.raises(mtc.ReservedPackageError, match="timgm6mb-soundfont.*dependency of fluidsynth"):
        mtc.ensure_allowed(["fluidsynth"])
    with pytest.raises(mtc.ReservedPackageError, match="dependency"):
        mtc.PackageCache(tmp_path).unpack("fluidsynth")
    with pytest.raises(mtc.ReservedPackageError):
        mtc.install_tools(["fluidsynth"])


def test_reserved_files_and_voices_are_refused():
    for path in ["/usr/share/sounds/sf2/TimGM6mb.sf2", "/usr/share/asterisk/sounds/en/hello.gsm",
                 "/usr/share/sounds/freedesktop/stereo/bell.oga", "/x/root/oxygen-sounds/usr/share/sounds/Oxygen-Sys.ogg"]:
        with pytest.raises(mtc.ReservedPackageError):
            mtc.check_path(path)
    for voice in ["slt", "cmu_us_slt_arctic_hts"]:
        with pytest.raises(mtc.ReservedPackageError):
            mtc.check_voice(voice)
    with pytest.raises(mtc.ReservedPackageError):
        mtc.synthetic_voices(lambda n: [("1", "text")] * n, "t", "pd", [], ["slt"], [], per_voice=1)
    mtc.check_path("/usr/share/asterisk/sounds/fr_CA_f_June/activated.g722")
    mtc.check_voice("awb")


def test_install_tools_sees_what_it_just_installed(monkeypatch):
    """--install on a machine without the tools: the versions looked up before apt-get ran are not reused after it
    (a cached "not installed" made the first build on a fresh machine stop with 'missing tools')."""
    installed: set[str] = set()

    def fake_run(cmd, **kwargs):
        if cmd[0] == "dpkg-query":
            return subprocess.CompletedProcess(cmd, 0, stdout="1.0" if cmd[-1] in installed else "", stderr="")
        if cmd[:2] == ["apt-get", "install"]:
            installed.update(c for c in cmd[2:] if not c.startswith("-"))
            return subprocess.CompletedProcess(cmd, 0)
        raise AssertionError(f"unexpected command {cmd}")

    monkeypatch.setattr(mtc.subprocess, "run", fake_run)
    monkeypatch.setattr(mtc, "ensure_allowed", lambda packages: None)
    mtc.tool_version.cache_clear()
    try:
        assert mtc.tool_version("flite") == "?"
        mtc.install_tools(["flite", "festival"])
        assert installed == {"flite", "festival"}
        assert [mtc.tool_version(p) for p in ("flite", "festival")] == ["1.0", "1.0"]
    finally:
        mtc.tool_version.cache_clear()
