"""Dataloader throughput on the demo corpus: batches/s, samples/s and seconds of audio per second.

Grid: 0/1/2 workers × 1 s/4 s crops at the corpus rate (16 kHz), plus crops resampled to 24 kHz (the sinc resampler
runs on every item). Peer, measured in the same run: a naive dataset that decodes and resamples the *whole* file for
every item with ``torchaudio.functional.resample`` (kernel rebuilt per call; the encodec-pytorch#27 pattern), 0
workers. A last pair of rows uses long files (2-minute 44.1 kHz stereo FLAC written to a temporary folder), where
reading only the crop matters most. Timings on a shared 2-core machine are noisy; compare ratios, not absolute numbers.

    .venv/bin/python benchmarks/data_loading.py [--small] [--batch-size 16] [--batches 40]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio
from torch.utils.data import DataLoader, Dataset

from codecfw.core.config import DataConfig
from codecfw.core.data.dataset import AudioDataset, build_dataloader, collate_audio

DEMO = Path(__file__).resolve().parent.parent / "data" / "demo" / "manifest.jsonl"


class NaiveDataset(Dataset):
    """Whole-file decode + whole-file resample + random crop per item."""

    def __init__(self, base: AudioDataset, segment: int, sample_rate: int) -> None:
        self.entries, self.segment, self.sample_rate = base.entries, segment, sample_rate
        self.rng = np.random.default_rng(0)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, key):
        index = key[0] if isinstance(key, tuple) else key
        e = self.entries[index]
        x, sr = sf.read(e.path, dtype="float32", always_2d=True)
        wav = torchaudio.functional.resample(torch.from_numpy(x.mean(1))[None], sr, self.sample_rate)
        start = int(self.rng.integers(0, max(1, wav.shape[-1] - self.segment)))
        wav = torch.nn.functional.pad(wav[:, start:start + self.segment], (0, self.segment))[:, :self.segment]
        return {"waveform": wav, "length": self.segment, "domain": e.domain, "transcript": e.transcript,
                "path": e.path, "index": index}


def measure(loader: DataLoader, batches: int) -> tuple[float, float]:
    """(batches/s, samples/s) over ``batches`` batches after one warm-up batch (worker start-up excluded)."""
    it, epoch = iter(loader), 0
    next(it)
    done, samples, t0 = 0, 0, time.perf_counter()
    while done < batches:
        try:
            batch = next(it)
        except StopIteration:
            epoch += 1
            loader.sampler.set_epoch(epoch)
            it = iter(loader)
            continue
        done += 1
        samples += batch["waveform"].shape[0]
    dt = time.perf_counter() - t0
    return done / dt, samples / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", action="store_true", help="fewer batches, 16 kHz grid only")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--batches", type=int, default=40)
    args = ap.parse_args()
    batches = 10 if args.small else args.batches
    torch.set_num_threads(1)
    rows = []
    grid = [(sr, seg, w) for sr in ((16000,) if args.small else (16000, 24000)) for seg in (1.0, 4.0) for w in (0, 1, 2)]
    print(f"demo corpus {DEMO}, batch {args.batch_size}, {batches} timed batches per setting, "
          f"{torch.get_num_threads()} intra-op thread(s) in the main process")
    print(f"{'rate':>6} {'crop':>5} {'workers':>7} {'mode':>10} {'batches/s':>10} {'samples/s':>10} {'audio x RT':>10}"
          f" {'vs naive':>9}")
    naive_cache: dict[tuple[int, float], float] = {}
    for sr, seg, workers in grid:
        cfg = DataConfig(train=str(DEMO), segment_seconds=seg, batch_size=args.batch_size, num_workers=workers,
                         prefetch_factor=2, pin_memory=False)
        base = AudioDataset(DEMO, sr, seg, split="train")
        if (sr, seg) not in naive_cache:
            naive = DataLoader(NaiveDataset(base, round(seg * sr), sr), batch_size=args.batch_size,
                               sampler=build_dataloader(cfg, "train", sr, dataset=base).sampler,
                               collate_fn=collate_audio, drop_last=True)
            naive_cache[(sr, seg)] = measure(naive, batches)[1]
            print(f"{sr:>6} {seg:>4.0f}s {0:>7} {'naive':>10} {'':>10} {naive_cache[(sr, seg)]:>10.1f} "
                  f"{naive_cache[(sr, seg)] * seg:>10.0f} {1.0:>8.2f}x")
        modes = [("crop-read", False)] + ([("cached", True)] if workers == 0 else [])
        for mode, cache in modes:
            base.cache_audio = cache
            bps, sps = measure(build_dataloader(cfg, "train", sr, dataset=base), batches)
            rows.append((sr, seg, workers, mode, bps, sps))
            print(f"{sr:>6} {seg:>4.0f}s {workers:>7} {mode:>10} {bps:>10.1f} {sps:>10.1f} {sps * seg:>10.0f} "
                  f"{sps / naive_cache[(sr, seg)]:>8.2f}x", flush=True)
    if not args.small:
        long_files(args.batch_size, batches)


def long_files(batch_size: int, batches: int) -> None:
    """1 s crops at 16 kHz from four 2-minute 44.1 kHz stereo files: naive whole-file vs crop-region reads."""
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        t = np.arange(120 * 44100) / 44100
        for i in range(4):
            x = 0.3 * np.sin(2 * np.pi * (220 + 40 * i) * t) + 0.05 * rng.standard_normal(len(t))
            sf.write(f"{tmp}/long{i}.flac", np.stack([x, 0.5 * x], 1).astype("float32"), 44100)
        cfg = DataConfig(train=tmp, segment_seconds=1.0, batch_size=batch_size // 4)
        base = AudioDataset(tmp, 16000, 1.0)
        sampler = build_dataloader(cfg, "train", 16000, dataset=base).sampler
        naive = DataLoader(NaiveDataset(base, 16000, 16000), batch_size=cfg.batch_size, sampler=sampler,
                           collate_fn=collate_audio)
        n = max(2, batches // 8)
        _, naive_sps = measure(naive, n)
        _, sps = measure(build_dataloader(cfg, "train", 16000, dataset=base), n)
        print(f"long files (4 x 120 s, 44.1 kHz stereo → 16 kHz, 1 s crops, 0 workers): naive {naive_sps:.1f} "
              f"samples/s, crop-read {sps:.1f} samples/s: {sps / naive_sps:.1f}x")


if __name__ == "__main__":
    main()
