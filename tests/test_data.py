"""Data pipeline: sources, scan, mixdown, resampling, crops, sampler, loaders, and the shipped demo corpus."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from codecfw.core.data import dataset as D
from codecfw.core.config import DataConfig

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "data" / "demo"


def sine(seconds: float, sr: int, freq: float = 440.0, channels: int = 1, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    x = amp * np.sin(2 * np.pi * freq * t)
    return np.stack([x * (c + 1) / channels for c in range(channels)], axis=1).astype("float32")


def write(path: Path, x: np.ndarray, sr: int, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x, sr, **kw)
    return path


@pytest.fixture(autouse=True)
def _fresh_memo():
    D._SCAN_MEMO.clear()  # tmp files may reuse (path, size, mtime); tests must not see each other's scans
    yield


# ---------------------------------------------------------------------------------------------------------------
# sources
# ---------------------------------------------------------------------------------------------------------------


def test_folder_is_recursive_sorted_and_infers_domains(tmp_path):
    write(tmp_path / "speech" / "b.wav", sine(0.5, 16000), 16000)
    write(tmp_path / "speech" / "deeper" / "a.flac", sine(0.5, 16000), 16000)
    write(tmp_path / "music" / "c.ogg", sine(0.5, 16000), 16000)
    write(tmp_path / "misc" / "d.mp3", sine(0.5, 16000), 16000)
    (tmp_path / "notes.txt").write_text("not audio")
    write(tmp_path / ".hidden.wav", sine(0.5, 16000), 16000)
    ds = D.AudioDataset(tmp_path, 16000, 0.25)
    rel = [str(Path(e.path).relative_to(tmp_path)) for e in ds.entries]
    assert rel == ["misc/d.mp3", "music/c.ogg", "speech/b.wav", "speech/deeper/a.flac"]
    assert ds.domains == [None, "music", "speech", "speech"]
    assert all(ds[i]["waveform"].shape == (1, 4000) for i in range(len(ds)))


def test_manifest_jsonl_and_csv(tmp_path):
    a = write(tmp_path / "clips" / "a.wav", sine(1, 16000), 16000)
    b = write(tmp_path / "elsewhere" / "b.flac", sine(1, 16000), 16000)
    rows = [{"path": "clips/a.wav", "domain": "speech", "transcript": "hello", "split": "train", "source": "me"},
            {"path": str(b), "domain": "Music", "split": "valid"},
            {"path": "clips/a.wav"}]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    entries = D.load_entries(tmp_path / "m.jsonl")
    assert [e.path for e in entries] == [str(a), str(b), str(a)]
    assert [e.domain for e in entries] == ["speech", "music", None]
    assert entries[0].transcript == "hello" and entries[0].meta == {"source": "me"}
    # a split keeps its rows and the rows without a split
    assert [e.domain for e in D.load_entries(tmp_path / "m.jsonl", split="valid")] == ["music", None]

    (tmp_path / "m.csv").write_text("path,domain,transcript,split\nclips/a.wav,sound,,train\n"
                                    f"{b},speech,\"hi, there\",valid\n")
    ds = D.AudioDataset(tmp_path / "m.csv", 16000, 0.5, split="valid", mode="valid")
    assert len(ds) == 1 and ds[0]["domain"] == "speech" and ds[0]["transcript"] == "hi, there"
    with pytest.raises(D.NoUsableAudioError, match="no row has split 'test'"):
        D.load_entries(tmp_path / "m.csv", split="test")


@pytest.mark.parametrize("content, match", [
    ('{"path": "a.wav", "domain": "speach"}', r"m\.jsonl:1: domain 'speach' is not one of speech, music, sound"),
    ('{"path": "a.wav"}\n{"file": "b.wav"}', r"m\.jsonl:2: 'path' is missing"),
    ('{"path": "a.wav"}\n{oops', r"m\.jsonl:2: not valid JSON"),
    ('["a.wav"]', r"m\.jsonl:1: expected a JSON object"),
])
def test_manifest_errors_name_file_and_line(tmp_path, content, match):
    (tmp_path / "m.jsonl").write_text(content)
    with pytest.raises(D.ManifestError, match=match):
        D.read_manifest(tmp_path / "m.jsonl")


def test_csv_without_path_column(tmp_path):
    (tmp_path / "m.csv").write_text("file,domain\na.wav,speech\n")
    with pytest.raises(D.ManifestError, match=r"m\.csv: the CSV header must have a 'path' column"):
        D.read_manifest(tmp_path / "m.csv")


# ---------------------------------------------------------------------------------------------------------------
# reading: mixdown, resampling
# ---------------------------------------------------------------------------------------------------------------


def test_mixdown_mean_or_first_channel(tmp_path):
    left, right = np.full(800, 0.2, "float32"), np.full(800, -0.6, "float32")
    path = write(tmp_path / "st.wav", np.stack([left, right], 1), 16000, subtype="FLOAT")
    assert torch.allclose(D.read_audio(path), torch.full((1, 800), -0.2))
    assert torch.allclose(D.read_audio(path, mixdown="first"), torch.full((1, 800), 0.2))
    ds = D.AudioDataset(tmp_path, 16000, 0.05, mixdown="first", mode="valid")
    assert torch.allclose(ds[0]["waveform"], torch.full((1, 800), 0.2))


@pytest.mark.parametrize("sr", [44100, 48000, 8000])
def test_resampling_keeps_pitch_and_duration(tmp_path, sr):
    path = write(tmp_path / f"s{sr}.wav", sine(1.5, sr, freq=440.0), sr, subtype="FLOAT")
    wav = D.read_audio(path, 16000)
    assert wav.dtype == torch.float32 and wav.shape == (1, math.ceil(int(1.5 * sr) * 16000 / sr))
    spec = torch.fft.rfft(wav[0, 2000:-2000] * torch.hann_window(wav.shape[-1] - 4000))
    peak_hz = spec.abs().argmax().item() * 16000 / (wav.shape[-1] - 4000)
    assert abs(peak_hz - 440.0) < 2.0
    # crops decode only their region, yet equal the whole file resampled then sliced
    ds = D.AudioDataset(tmp_path, 16000, 0.3, seed=3)
    for start in (0, 5, 3001, wav.shape[-1] - 4800, wav.shape[-1] - 100):
        seg = ds.load_segment(0, start, 4800)
        ref = torch.nn.functional.pad(wav[:, start:start + 4800], (0, max(0, start + 4800 - wav.shape[-1])))
        assert torch.allclose(seg, ref, atol=1e-5), start


def test_write_audio_round_trip(tmp_path):
    wav = torch.linspace(-0.5, 0.5, 1600)[None]
    D.write_audio(tmp_path / "out" / "a.wav", wav, 16000, subtype="FLOAT")
    assert torch.equal(D.read_audio(tmp_path / "out" / "a.wav"), wav)
    D.write_audio(tmp_path / "b.flac", torch.stack([wav[0], -wav[0]]), 8000)
    info = sf.info(tmp_path / "b.flac")
    assert (info.channels, info.samplerate, info.frames) == (2, 8000, 1600)
    assert D.read_audio(tmp_path / "b.flac", mixdown="first").sub(wav).abs().max() < 1e-4
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left behind


def test_read_audio_errors_name_the_file(tmp_path):
    bad = tmp_path / "broken.flac"
    bad.write_bytes(b"this is not a flac file at all" * 10)
    with pytest.raises(D.AudioReadError, match="broken.flac"):
        D.read_audio(bad)
    with pytest.raises(D.AudioReadError, match="nowhere.wav: no such file"):
        D.read_audio(tmp_path / "nowhere.wav")


# ---------------------------------------------------------------------------------------------------------------
# crops
# ---------------------------------------------------------------------------------------------------------------


def test_train_crops_are_random_within_file_reproducible_and_padded(tmp_path):
    x = np.linspace(-0.5, 0.5, 16000 * 3, dtype="float32")[:, None]  # a ramp: a crop's values tell its offset
    write(tmp_path / "long.wav", x, 16000, subtype="FLOAT")
    write(tmp_path / "short.wav", x[:4000], 16000, subtype="FLOAT")
    ds = D.AudioDataset(tmp_path, 16000, 1.0, seed=7)
    long_i = [Path(e.path).name for e in ds.entries].index("long.wav")
    starts = set()
    for epoch in range(6):
        item = ds[(long_i, epoch)]
        start = ds.crop_start(long_i, epoch)
        assert item["waveform"].shape == (1, 16000) and item["length"] == 16000
        assert torch.equal(item["waveform"][0], torch.from_numpy(x[start:start + 16000, 0]))
        assert torch.equal(item["waveform"], D.AudioDataset(tmp_path, 16000, 1.0, seed=7)[(long_i, epoch)]["waveform"])
        starts.add(start)
    assert len(starts) > 1  # the crop moves between epochs
    short = ds[1 - long_i]
    assert short["waveform"].shape == (1, 16000) and short["length"] == 4000
    assert torch.equal(short["waveform"][0, :4000], torch.from_numpy(x[:4000, 0]))
    assert short["waveform"][0, 4000:].abs().sum() == 0


def test_validation_crops_are_fixed_and_centred(tmp_path):
    x = np.linspace(-0.5, 0.5, 16000 * 3, dtype="float32")[:, None]
    write(tmp_path / "long.wav", x, 16000, subtype="FLOAT")
    a = D.AudioDataset(tmp_path, 16000, 1.0, mode="valid", seed=1)
    b = D.AudioDataset(tmp_path, 16000, 1.0, mode="valid", seed=2)
    items = [a[(0, 0)], a[(0, 5)], b[0]]
    assert all(torch.equal(items[0]["waveform"], it["waveform"]) for it in items)
    assert torch.equal(items[0]["waveform"][0], torch.from_numpy(x[16000:32000, 0]))


# ---------------------------------------------------------------------------------------------------------------
# scan: bad files
# ---------------------------------------------------------------------------------------------------------------


def _bad_files(folder: Path) -> dict[str, Path]:
    nan = sine(0.5, 16000)
    nan[100] = np.nan
    inf = sine(0.5, 16000)
    inf[7] = np.inf
    (folder / "corrupt.wav").write_bytes(b"RIFF\x00\x00garbage" * 20)
    return {"corrupt": folder / "corrupt.wav",
            "empty": write(folder / "empty.wav", np.zeros((0, 1), "float32"), 16000),
            "silent": write(folder / "silent.flac", np.zeros((8000, 1), "float32"), 16000),
            "nan": write(folder / "nan.wav", nan, 16000, subtype="FLOAT"),
            "inf": write(folder / "inf.wav", inf, 16000, subtype="FLOAT")}


def test_bad_files_are_skipped_counted_and_logged_once_each(tmp_path, caplog):
    good = write(tmp_path / "good.wav", sine(1, 16000), 16000)
    bad = _bad_files(tmp_path)
    rows = [{"path": p.name} for p in [good, *bad.values()]] + [{"path": "missing.wav"}]
    (tmp_path / "m.jsonl").write_text("\n".join(map(json.dumps, rows)))
    with caplog.at_level(logging.WARNING, logger="codecfw.data"):
        ds = D.AudioDataset(tmp_path / "m.jsonl", 16000, 0.5)
    assert [e.path for e in ds.entries] == [str(good)]
    assert ds.skipped_counts == {"unreadable": 1, "empty": 1, "silent": 1, "non-finite": 2, "missing": 1}
    assert ds.skipped["non-finite"] == [str(bad["nan"]), str(bad["inf"])]
    assert ds.summary()["skipped"] == ds.skipped_counts and ds.summary()["files"] == 1
    skip_lines = [r.getMessage() for r in caplog.records if r.name == "codecfw.data" and "skipping" in r.getMessage()]
    assert len(skip_lines) == 6
    for path in [*bad.values(), tmp_path / "missing.wav"]:
        assert sum(str(path) in line for line in skip_lines) == 1


def test_no_usable_file_is_a_clear_error(tmp_path):
    _bad_files(tmp_path)
    with pytest.raises(D.NoUsableAudioError) as err:
        D.AudioDataset(tmp_path, 16000, 0.5)
    msg = str(err.value)
    assert str(tmp_path) in msg and "no usable audio file among 5" in msg
    for reason in ("unreadable: 1", "empty: 1", "silent: 1", "non-finite: 2"):
        assert reason in msg
    (tmp_path / "nothing_here").mkdir()
    with pytest.raises(D.NoUsableAudioError, match="nothing_here: no audio files"):
        D.AudioDataset(tmp_path / "nothing_here", 16000, 0.5)


def test_scan_cache_is_reused_and_invalidated(tmp_path, monkeypatch):
    a = write(tmp_path / "a.wav", sine(1, 16000), 16000)
    cache = tmp_path / "cache" / "scan.json"
    D.AudioDataset(tmp_path, 16000, 0.5, scan_cache=str(cache))
    assert json.loads(cache.read_text())["files"][str(a)]["probe"]["frames"] == 16000
    D._SCAN_MEMO.clear()
    calls = []
    real_probe = D.probe_audio_file
    monkeypatch.setattr(D, "probe_audio_file", lambda p, *a, **k: calls.append(p) or real_probe(p, *a, **k))
    D.AudioDataset(tmp_path, 16000, 0.5, scan_cache=str(cache))
    assert calls == []  # served from the JSON cache
    write(a, sine(2, 16000), 16000)  # size changes → probed again
    ds = D.AudioDataset(tmp_path, 16000, 0.5, scan_cache=str(cache))
    assert calls == [str(a)] and ds.entries[0].frames == 32000


# ---------------------------------------------------------------------------------------------------------------
# sampler and loaders
# ---------------------------------------------------------------------------------------------------------------


def test_sampler_matches_distributed_sampler_and_resumes():
    from torch.utils.data import DistributedSampler

    for world in (1, 2, 3):
        shards = []
        for rank in range(world):
            ours = D.AudioSampler(10, num_replicas=world, rank=rank, seed=5)
            ref = DistributedSampler(range(10), num_replicas=world, rank=rank, seed=5)
            ours.set_epoch(3)
            ref.set_epoch(3)
            assert [i for i, _ in ours] == list(ref) and len(ours) == len(ref)
            shards.append([i for i, _ in ours])
        assert len({len(s) for s in shards}) == 1  # every rank the same count: the same number of batches
        assert set().union(*shards) == set(range(10))
    s = D.AudioSampler(10, seed=1)
    s.set_epoch(2)
    full = list(s)
    s.set_epoch(2, skip=4)
    assert list(s) == full[4:] and len(s) == 6 and all(epoch == 2 for _, epoch in full)


def _corpus(folder: Path) -> None:
    for i, domain in enumerate(["speech", "music", "sound", "speech", "music", "sound", "music"]):
        write(folder / domain / f"c{i}.wav", sine(0.4 + 0.2 * i, 22050, freq=200 + 50 * i, channels=2), 22050)


def test_build_dataloader_batches_carry_metadata_and_do_not_depend_on_workers(tmp_path):
    _corpus(tmp_path)
    cfg = DataConfig(train=str(tmp_path), valid=str(tmp_path), segment_seconds=0.5, batch_size=3)
    loader = D.build_dataloader(cfg, "train", 16000, seed=4)
    batches = list(loader)
    assert len(batches) == len(loader) == 2  # 7 files, drop_last
    b = batches[0]
    assert b["waveform"].shape == (3, 1, 8000) and b["waveform"].dtype == torch.float32
    assert b["length"].dtype == torch.long and b["index"].tolist() == [i for i, _ in list(loader.sampler)[:3]]
    ds = loader.dataset
    assert b["domain"] == [ds.entries[i].domain for i in b["index"].tolist()]
    assert b["path"] == [ds.entries[i].path for i in b["index"].tolist()]
    cfg2 = cfg.model_copy(update={"num_workers": 2, "prefetch_factor": 1})
    loader2 = D.build_dataloader(cfg2, "train", 16000, seed=4)
    for epoch in (0, 1):
        loader.sampler.set_epoch(epoch)
        loader2.sampler.set_epoch(epoch)
        for x, y in zip(loader, loader2):
            assert torch.equal(x["waveform"], y["waveform"]) and x["index"].tolist() == y["index"].tolist()
    valid = D.build_dataloader(cfg, "valid", 16000, seed=4)
    assert sum(len(b["path"]) for b in valid) == 7  # validation keeps the last partial batch
    with pytest.raises(ValueError, match="data.valid is not set"):
        D.build_dataloader(DataConfig(train=str(tmp_path)), "valid", 16000)


def test_ranks_get_disjoint_shards_with_equal_batch_counts(tmp_path):
    _corpus(tmp_path)
    cfg = DataConfig(train=str(tmp_path), segment_seconds=0.25, batch_size=2)
    ds = D.build_dataset(cfg, "train", 16000)
    loaders = [D.build_dataloader(cfg, "train", 16000, rank=r, world_size=2, dataset=ds) for r in range(2)]
    seen = [[i for b in loader for i in b["index"].tolist()] for loader in loaders]
    assert len(loaders[0]) == len(loaders[1]) == 2
    assert set(seen[0]) | set(seen[1]) == set(range(7))
    assert len(set(seen[0]) & set(seen[1])) == 1  # 7 items on 2 ranks: one is repeated, as DistributedSampler does


# ---------------------------------------------------------------------------------------------------------------
# the demo corpus shipped in data/demo
# ---------------------------------------------------------------------------------------------------------------


def test_demo_corpus_manifest_files_domains_and_budget():
    rows = [json.loads(line) for line in (DEMO / "manifest.jsonl").read_text().splitlines()]
    split_rows = {s: [json.loads(line) for line in (DEMO / f"{s}.jsonl").read_text().splitlines()]
                  for s in ("train", "valid")}
    assert sorted(map(json.dumps, split_rows["train"] + split_rows["valid"])) == sorted(map(json.dumps, rows))
    counts = {d: sum(r["domain"] == d for r in rows) for d in D.DOMAINS}
    assert 30 <= counts["speech"] <= 40 and 20 <= counts["music"] <= 30 and 20 <= counts["sound"] <= 30
    for r in rows:
        assert r["path"].startswith(r["domain"] + "/") and r["path"].endswith(".flac")
        assert r["split"] in ("train", "valid") and r["source"] and r["licence"]
        assert bool(r.get("transcript")) == (r["domain"] == "speech")
        info = sf.info(DEMO / r["path"])
        assert (info.samplerate, info.channels, info.format) == (16000, 1, "FLAC")
        assert 2.0 <= info.duration <= 6.0
    for split in ("train", "valid"):
        assert {r["domain"] for r in split_rows[split]} == set(D.DOMAINS)
    size = sum(f.stat().st_size for f in DEMO.rglob("*") if f.is_file())
    assert size <= 15_000_000  # the 15 MB budget


def test_demo_corpus_loads_through_the_dataset_with_declared_domains(caplog):
    cfg = DataConfig(train="data/demo/train.jsonl", valid="data/demo/manifest.jsonl", segment_seconds=1.0,
                     batch_size=16)
    with caplog.at_level(logging.WARNING, logger="codecfw.data"):
        train = D.build_dataset(cfg, "train", 16000)
        valid = D.build_dataset(cfg, "valid", 16000)  # the full manifest, filtered on its split column
    assert train.skipped == {} and valid.skipped == {} and not caplog.records
    rows = {str(DEMO / r["path"]): r for r in map(json.loads, (DEMO / "manifest.jsonl").read_text().splitlines())}
    assert len(train) + len(valid) == len(rows)
    for ds in (train, valid):
        for e in ds.entries:
            assert e.domain == rows[e.path]["domain"] and e.split == ds.mode
    loader = D.build_dataloader(cfg, "valid", 16000, dataset=valid)
    for batch in loader:
        assert batch["waveform"].shape[1:] == (1, 16000)
        assert torch.isfinite(batch["waveform"]).all() and batch["waveform"].abs().amax() <= 1.0
        assert batch["domain"] == [rows[p]["domain"] for p in batch["path"]]


def test_demo_corpus_script_fails_clearly_without_its_tools(monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_demo_corpus", REPO / "scripts" / "make_demo_corpus.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr(script.shutil, "which", lambda name: None)
    monkeypatch.setattr(script, "SOUNDFONT", "/nonexistent/FluidR3_GM.sf2")
    with pytest.raises(SystemExit) as err:
        script.check_tools()
    msg = str(err.value)
    assert "program text2wave (apt-get install festival)" in msg
    assert "soundfont /nonexistent/FluidR3_GM.sf2 (apt-get install fluid-soundfont-gm)" in msg
    assert "Install them with: apt-get install festival" in msg
