"""Audio datasets: a folder or a manifest, scanned once, read and resampled crop by crop.

Sources
    * a folder: every ``.wav .flac .ogg .oga .opus .mp3`` below it (recursive, sorted, hidden files ignored; linked
      folders followed, each real folder once: :func:`codecfw.core.files.walk_files`). A path
      component named ``speech``, ``music`` or ``sound`` gives the file its domain (``data/demo/music/x.flac``).
    * a manifest, JSONL (one object per line) or CSV (header row): ``path`` (relative to the manifest's folder, or
      absolute) and optional ``domain`` (speech | music | sound), ``transcript`` and ``split``. Other columns are kept
      in ``meta``. Given a ``split``, rows whose split differs are dropped; rows without one serve every split.

Audio
    Multichannel audio is mixed down to the **channel mean** (``mixdown="mean"``); SemantiCodec's reference takes
    **channel 0** instead (``mixdown="first"``). Resampling uses torchaudio's sinc resampler (``transforms.Resample``,
    the same kernel as ``functional.resample``, built once per rate pair). A training item is a random crop of
    ``segment_seconds`` (zero-padded at the end when the file is shorter); a validation item is the centred crop of
    each file, the same every time. Only the crop's region (plus the resampling filter's support) is decoded, so long
    files cost what their crops cost; ``cache_audio=True`` instead keeps whole resampled files in each worker's
    memory (small corpora such as the demo).

Scan
    At construction every file is checked once (``soundfile.info`` + one streamed pass): missing, unreadable, empty,
    all-silent (peak ≤ ``silence_threshold``) or non-finite (NaN/Inf) files are skipped with one warning each on the
    logger ``codecfw.data`` and counted in :attr:`AudioDataset.skipped`. Scan results are memoised in-process and,
    with ``scan_cache``, in a JSON file keyed by path, size and mtime. No usable file → :class:`NoUsableAudioError`.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from ..atomic import write_json
from .audio import (AUDIO_EXTENSIONS, AudioError, AudioReadError, Mixdown, probe_audio_file, read_audio, read_frames,
                    resample, write_audio)

__all__ = ["AUDIO_EXTENSIONS", "DOMAINS", "AudioDataset", "AudioEntry", "AudioError", "AudioReadError",
           "AudioSampler", "Clip", "ManifestError", "NoUsableAudioError", "ScanReport", "build_dataloader",
           "build_dataset", "collate_audio", "list_audio_files", "load_clips", "load_entries", "probe_audio_file",
           "read_audio", "read_clip", "read_manifest", "resample", "scan_audio", "write_audio"]
# read_audio/write_audio/resample live in codecfw.core.data.audio

logger = logging.getLogger("codecfw.data")

DOMAINS = ("speech", "music", "sound")
SKIP_REASONS = ("missing", "unreadable", "empty", "silent", "non-finite")
REPO_ROOT = Path(__file__).resolve().parent.parent


class ManifestError(ValueError):
    """A manifest is malformed; the message names the file, the line and the key."""


class NoUsableAudioError(RuntimeError):
    """A dataset source has no usable audio file; the message names the source and the skip reasons."""


# ----------------------------------------------------------------------------------------------------------------
# Listing: folders and manifests
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class AudioEntry:
    """One file of a source. ``frames``/``sample_rate``/``channels`` are filled by the scan."""

    path: str
    domain: str | None = None
    transcript: str | None = None
    split: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    frames: int = 0
    sample_rate: int = 0
    channels: int = 0

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def resolve_source(source: str | os.PathLike) -> Path:
    """A data path as written in a recipe, made absolute: relative to the working directory, else to the repository
    root (so ``data/demo/train.jsonl`` works from anywhere in a source checkout)."""
    path = Path(source).expanduser()
    if not path.exists() and not path.is_absolute() and (REPO_ROOT / path).exists():
        return REPO_ROOT / path
    return path.absolute()


def list_audio_files(folder: str | os.PathLike) -> list[AudioEntry]:
    """Every audio file under ``folder``, sorted; a ``speech``/``music``/``sound`` path component sets the domain."""
    from ..files import walk_files

    folder = Path(folder)
    entries = []
    for path in walk_files(folder, AUDIO_EXTENSIONS):  # bounded and cycle-safe: symlink loops are entered once
        parts = path.relative_to(folder).parts[:-1]
        domain = next((p for p in reversed(parts) if p in DOMAINS), None)
        entries.append(AudioEntry(str(path), domain=domain))
    return entries


def _entry_from_row(row: dict[str, Any], base: Path, where: str) -> AudioEntry:
    row = {str(k).strip(): (v.strip() if isinstance(v, str) else v) for k, v in row.items() if k is not None}
    row = {k: (None if v == "" else v) for k, v in row.items()}
    path = row.pop("path", None)
    if not isinstance(path, str):
        raise ManifestError(f"{where}: 'path' is missing or not a string (keys: {', '.join(row) or 'none'})")
    domain = row.pop("domain", None)
    if domain is not None:
        domain = str(domain).lower()
        if domain not in DOMAINS:
            raise ManifestError(f"{where}: domain {domain!r} is not one of {', '.join(DOMAINS)}")
    transcript, split = row.pop("transcript", None), row.pop("split", None)
    full = Path(path) if os.path.isabs(path) else base / path
    return AudioEntry(str(full), domain, None if transcript is None else str(transcript),
                      None if split is None else str(split), meta=row)


def read_manifest(path: str | os.PathLike) -> list[AudioEntry]:
    """Rows of a JSONL or CSV manifest (see the module docstring)."""
    path = Path(path)
    base = path.parent
    entries = []
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ManifestError(f"cannot read manifest {path}: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); a "
                            f"manifest is a JSONL or CSV text file") from None
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        if reader.fieldnames is None or "path" not in [f.strip() for f in reader.fieldnames]:
            raise ManifestError(f"{path}: the CSV header must have a 'path' column, got {reader.fieldnames}")
        for lineno, row in enumerate(reader, start=2):
            entries.append(_entry_from_row(row, base, f"{path}:{lineno}"))
    else:
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ManifestError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise ManifestError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            entries.append(_entry_from_row(row, base, f"{path}:{lineno}"))
    return entries


def load_entries(source: str | os.PathLike, split: str | None = None) -> list[AudioEntry]:
    """The entries of a folder or manifest (``.jsonl``/``.json``/``.csv``), filtered by ``split``."""
    path = resolve_source(source)
    if path.is_dir():
        entries = list_audio_files(path)
        if not entries:
            raise NoUsableAudioError(f"{path}: no audio files ({' '.join(AUDIO_EXTENSIONS)}) found in this folder")
        return entries
    if not path.is_file():
        raise NoUsableAudioError(f"{source}: no such manifest or folder")
    if path.suffix.lower() not in (".jsonl", ".json", ".csv"):
        raise ManifestError(f"{path}: a data source is a folder or a .jsonl/.csv manifest")
    entries = read_manifest(path)
    if split is not None:
        kept = [e for e in entries if e.split in (None, split)]
        if not kept and entries:
            found = sorted({str(e.split) for e in entries})
            raise NoUsableAudioError(f"{path}: no row has split {split!r} (splits present: {', '.join(found)})")
        entries = kept
    if not entries:
        raise NoUsableAudioError(f"{path}: the manifest lists no files")
    return entries


# ----------------------------------------------------------------------------------------------------------------
# Scan
# ----------------------------------------------------------------------------------------------------------------

_SCAN_MEMO: dict[tuple[str, int, int], dict[str, Any]] = {}


def _skip_reason(probe: dict[str, Any], silence_threshold: float) -> tuple[str, str] | None:
    if "error" in probe:
        return probe["error"], probe["detail"]
    if probe["frames"] == 0:
        return "empty", "0 frames"
    if not probe["finite"]:
        return "non-finite", "contains NaN or Inf samples"
    if probe["peak"] <= silence_threshold:
        return "silent", f"peak {probe['peak']:.2e} <= {silence_threshold:.0e}"
    return None


@dataclass
class ScanReport:
    """The usable entries of a source and the skipped files per reason."""

    usable: list[AudioEntry]
    skipped: dict[str, list[str]]

    @property
    def skipped_counts(self) -> dict[str, int]:
        return {reason: len(paths) for reason, paths in self.skipped.items()}


def _file_key(path: str) -> tuple[str, int, int]:
    try:
        st = os.stat(path)
        return os.path.abspath(path), st.st_size, st.st_mtime_ns
    except OSError:
        return os.path.abspath(path), -1, -1


def scan_audio(entries: Sequence[AudioEntry], *, silence_threshold: float = 1e-4, cache: str | None = None,
               workers: int = 4, source: str = "<entries>") -> ScanReport:
    """Probe every entry (memoised per path/size/mtime, optionally in a JSON ``cache``); skip the bad ones."""
    keys = [_file_key(e.path) for e in entries]
    stored: dict[str, Any] = {}
    if cache and os.path.isfile(cache):
        try:
            stored = json.loads(Path(cache).read_text()).get("files", {})
        except (OSError, ValueError):
            logger.warning("ignoring unreadable scan cache %s", cache)
    for key in keys:
        hit = stored.get(key[0])
        if key not in _SCAN_MEMO and hit and (hit.get("size"), hit.get("mtime_ns")) == key[1:]:
            _SCAN_MEMO[key] = hit["probe"]
    todo = sorted({k for k in keys if k not in _SCAN_MEMO or k[1] < 0})
    if todo:
        with ThreadPoolExecutor(max(1, workers)) as pool:  # libsndfile releases the GIL while decoding
            for key, probe in zip(todo, pool.map(lambda k: probe_audio_file(k[0]), todo)):
                _SCAN_MEMO[key] = probe
        if cache:
            files = dict(stored)
            files.update({k[0]: {"size": k[1], "mtime_ns": k[2], "probe": _SCAN_MEMO[k]} for k in keys})
            write_json(cache, {"version": 1, "files": files}, indent=None)
    usable, skipped = [], {}
    for entry, key in zip(entries, keys):
        probe = _SCAN_MEMO[key]
        reason = _skip_reason(probe, silence_threshold)
        if reason is not None:
            logger.warning("skipping %s: %s (%s)", entry.path, *reason)
            skipped.setdefault(reason[0], []).append(entry.path)
            continue
        entry.frames, entry.sample_rate, entry.channels = probe["frames"], probe["sample_rate"], probe["channels"]
        usable.append(entry)
    hours = sum(e.duration for e in usable) / 3600
    counts = ", ".join(f"{r}: {len(p)}" for r, p in skipped.items())
    logger.info("%s: %d of %d files usable (%.2f h)%s", source, len(usable), len(entries), hours,
                f", skipped {counts}" if counts else "")
    if not usable:
        examples = "; ".join(f"{r}: {', '.join(p[:3])}" for r, p in skipped.items())
        raise NoUsableAudioError(f"{source}: no usable audio file among {len(entries)} listed "
                                 f"(skipped {counts}; {examples})")
    return ScanReport(usable, skipped)


# ----------------------------------------------------------------------------------------------------------------
# Dataset
# ----------------------------------------------------------------------------------------------------------------


class AudioDataset(Dataset):
    """Crops of a folder or manifest at ``sample_rate``.

    ``mode="train"``: a random crop per item, drawn from ``(seed, epoch, index)`` so runs and resumes are
    reproducible whatever the number of workers. ``mode="valid"``: the centred crop of each file.
    An index may be an ``int`` (the epoch set by :meth:`set_epoch`) or ``(index, epoch)`` as :class:`AudioSampler`
    yields it (works with persistent workers, whose dataset copies never see ``set_epoch``).

    Items: ``waveform`` Tensor[1 x S] float32 (S = segment samples), ``length`` (samples before padding),
    ``domain``, ``transcript``, ``path``, ``index``.
    """

    def __init__(self, source: str | os.PathLike, sample_rate: int, segment_seconds: float | None, *,
                 mode: Literal["train", "valid"] = "train", split: str | None = None, seed: int = 0,
                 mixdown: Mixdown = "mean", silence_threshold: float = 1e-4, scan_cache: str | None = None,
                 cache_audio: bool = False, scan_workers: int = 4, gain: float = 1.0) -> None:
        if mode not in ("train", "valid"):
            raise ValueError(f"mode must be 'train' or 'valid', got {mode!r}")
        self.source, self.sample_rate, self.mode, self.seed = str(source), int(sample_rate), mode, seed
        self.segment = None if segment_seconds is None else max(1, round(segment_seconds * sample_rate))
        self.mixdown, self.cache_audio, self.epoch = mixdown, cache_audio, 0
        self.gain = float(gain)  # data.gain (X-Codec's audio_norm_scale 0.95)
        entries = load_entries(source, split)
        report = scan_audio(entries, silence_threshold=silence_threshold, cache=scan_cache, workers=scan_workers,
                            source=self.source + (f" [{split}]" if split else ""))
        self.entries, self.skipped = report.usable, report.skipped
        self._cache: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def skipped_counts(self) -> dict[str, int]:
        return {reason: len(paths) for reason, paths in self.skipped.items()}

    @property
    def domains(self) -> list[str | None]:
        return [e.domain for e in self.entries]

    def summary(self) -> dict[str, Any]:
        """Counts for the run summary: files, hours, files per domain, skipped files per reason (with paths)."""
        per_domain: dict[str, int] = {}
        for e in self.entries:
            per_domain[e.domain or "none"] = per_domain.get(e.domain or "none", 0) + 1
        return {"source": self.source, "files": len(self.entries),
                "hours": sum(e.duration for e in self.entries) / 3600, "domains": per_domain,
                "skipped": self.skipped_counts, "skipped_paths": self.skipped}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def num_samples(self, index: int) -> int:
        """Length of file ``index`` at the dataset's rate (torchaudio's resampled length)."""
        e = self.entries[index]
        return math.ceil(e.frames * self.sample_rate / e.sample_rate)

    def crop_start(self, index: int, epoch: int | None = None) -> int:
        """First sample (at the dataset's rate) of the crop of item ``index``."""
        if self.segment is None:
            return 0
        spare = self.num_samples(index) - self.segment
        if spare <= 0:
            return 0
        if self.mode == "valid":
            return spare // 2
        rng = np.random.default_rng([self.seed, self.epoch if epoch is None else epoch, index])
        return int(rng.integers(0, spare + 1))

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, epoch = key if isinstance(key, (tuple, list)) else (key, None)
        index = int(index)
        entry = self.entries[index]
        start = self.crop_start(index, epoch)
        length = self.segment if self.segment is not None else self.num_samples(index) - start
        wav = self.load_segment(index, start, length)
        if self.gain != 1.0:
            wav = wav * self.gain
        valid = min(length, self.num_samples(index) - start)
        return {"waveform": wav, "length": valid, "domain": entry.domain, "transcript": entry.transcript,
                "path": entry.path, "index": index}

    def load_segment(self, index: int, start: int, length: int) -> torch.Tensor:
        """Samples ``[start, start+length)`` of file ``index`` at the dataset's rate, zero-padded: Tensor[1 x length].

        Decodes only the source frames the resampling filter needs, aligned on the rates' common grid so the result
        matches resampling the whole file and slicing it (to float rounding).
        """
        entry = self.entries[index]
        if self.cache_audio:
            if index not in self._cache:
                self._cache[index] = read_audio(entry.path, self.sample_rate, mixdown=self.mixdown)
            out = self._cache[index][:, start:start + length]
        elif entry.sample_rate == self.sample_rate:
            mono, _ = read_frames(entry.path, start, length, self.mixdown)
            out = mono[None]
        else:
            sr, target = entry.sample_rate, self.sample_rate
            g = math.gcd(sr, target)
            down, up = sr // g, target // g  # `down` source frames ↔ `up` output samples
            # torchaudio's kernel spans `width` frames each side plus one stride (in reduced units of gcd)
            width = math.ceil(6 * down / (min(down, up) * 0.99))
            margin = 2 + math.ceil(width / down)  # in blocks of `down` frames
            block0 = max(0, start // up - margin)  # before the file start torchaudio zero-pads, and so do we
            offset = start - block0 * up
            blocks = math.ceil((offset + length) / up) + margin
            mono, _ = read_frames(entry.path, block0 * down, blocks * down, self.mixdown)
            wav = resample(mono[None], sr, target)
            out = wav[:, offset:offset + length]
        if out.shape[-1] < length:
            out = torch.nn.functional.pad(out, (0, length - out.shape[-1]))
        return out.contiguous()


# ----------------------------------------------------------------------------------------------------------------
# Sampling, batching, loaders
# ----------------------------------------------------------------------------------------------------------------


class AudioSampler(Sampler):
    """``DistributedSampler`` semantics (same permutation for the same seed and epoch, padded so every rank gets
    ``ceil(N / world)`` items, or truncated with ``drop_last``) yielding ``(index, epoch)`` so crops depend on the
    epoch even inside persistent workers. ``set_epoch(epoch, skip=k)`` resumes mid-epoch after ``k`` items.
    """

    def __init__(self, num_items: int, *, num_replicas: int = 1, rank: int = 0, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = False) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        self.n, self.num_replicas, self.rank = num_items, num_replicas, rank
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.epoch, self.skip = 0, 0
        self.num_samples = (num_items // num_replicas if drop_last and num_items % num_replicas
                            else math.ceil(num_items / num_replicas))
        self.total_size = self.num_samples * num_replicas

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        if self.total_size > len(order):
            pad = self.total_size - len(order)
            order += (order * math.ceil(pad / len(order)))[:pad]
        return order[:self.total_size][self.rank:self.total_size:self.num_replicas]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter([(i, self.epoch) for i in self.indices()[self.skip:]])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.skip)


def collate_audio(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack ``waveform`` → Tensor[B x 1 x S], ``length``/``index`` → LongTensor[B]; other keys stay lists."""
    batch: dict[str, Any] = {"waveform": torch.stack([it["waveform"] for it in items])}
    for key in ("length", "index"):
        batch[key] = torch.tensor([it[key] for it in items], dtype=torch.long)
    for key in items[0]:
        if key not in batch:
            batch[key] = [it[key] for it in items]
    return batch


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # N workers × M intra-op threads would oversubscribe the cores the trainer needs


def build_dataset(data_cfg: Any, split: Literal["train", "valid"], sample_rate: int, seed: int = 0) -> AudioDataset:
    """The dataset of ``data.train`` or ``data.valid`` of a recipe's :class:`~codecfw.core.config.DataConfig`."""
    source = getattr(data_cfg, split)
    if source is None:
        raise ValueError(f"data.{split} is not set in the recipe: give a manifest (.jsonl/.csv) or a folder")
    segment = data_cfg.segment_seconds
    if split == "valid" and data_cfg.valid_segment_seconds is not None:
        segment = data_cfg.valid_segment_seconds
    return AudioDataset(source, sample_rate, segment, mode="train" if split == "train" else "valid", split=split,
                        seed=seed, mixdown=data_cfg.mixdown, silence_threshold=data_cfg.silence_threshold,
                        scan_cache=data_cfg.scan_cache, cache_audio=data_cfg.cache_audio,
                        gain=getattr(data_cfg, "gain", 1.0))


def build_dataloader(data_cfg: Any, split: Literal["train", "valid"], sample_rate: int, seed: int = 0,
                     rank: int = 0, world_size: int = 1, *, dataset: AudioDataset | None = None,
                     batch_size: int | None = None, shuffle: bool | None = None, drop_last: bool | None = None,
                     epoch: int = 0) -> DataLoader:
    """A DataLoader over :func:`build_dataset` with an :class:`AudioSampler` for ``rank`` of ``world_size``.

    Training shuffles and drops the last incomplete batch; the sampler pads every rank to the same item count, so
    all ranks see the same number of batches. Call ``loader.sampler.set_epoch(epoch, skip=items_done)`` each epoch.
    The dataset is ``loader.dataset`` (its ``summary()`` holds the skipped files).
    """
    train = split == "train"
    dataset = dataset or build_dataset(data_cfg, split, sample_rate, seed)
    sampler = AudioSampler(len(dataset), num_replicas=world_size, rank=rank,
                           shuffle=train if shuffle is None else shuffle, seed=seed)
    sampler.set_epoch(epoch)
    workers = data_cfg.num_workers
    pin = torch.cuda.is_available() if data_cfg.pin_memory is None else data_cfg.pin_memory
    extra = dict(prefetch_factor=data_cfg.prefetch_factor, persistent_workers=data_cfg.persistent_workers,
                 worker_init_fn=_worker_init) if workers > 0 else {}
    return DataLoader(dataset, batch_size=batch_size or data_cfg.batch_size, sampler=sampler,
                      num_workers=workers, collate_fn=collate_audio, pin_memory=pin,
                      drop_last=train if drop_last is None else drop_last, **extra)


# ------------------------------------------------------------------------------------------------------------
# Evaluation clips (codecfw eval, the semantic probe, ablations)
# ------------------------------------------------------------------------------------------------------------


@dataclass
class Clip:
    """One evaluation item. ``id`` is the path relative to the source without its extension."""

    id: str
    path: str
    domain: str | None = None
    transcript: str | None = None
    split: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def load_clips(source: str | Path, split: str | None = None, limit: int | None = None) -> list[Clip]:
    """Clips of a manifest (JSONL/CSV: path, domain, transcript, split, any label column) or a folder of audio."""
    root = resolve_source(source)
    base = root if root.is_dir() else root.parent
    clips = []
    for entry in load_entries(source, split=split):
        path = Path(entry.path)
        try:
            cid = str(path.relative_to(base).with_suffix(""))
        except ValueError:
            cid = str(path.with_suffix(""))
        clips.append(Clip(cid, str(path), entry.domain, entry.transcript, entry.split, dict(entry.meta)))
    return clips[:limit] if limit else clips


def read_clip(clip: Clip, sample_rate: int, max_seconds: float | None = None) -> Tensor:
    """Mono float32 ``Tensor[N]`` at ``sample_rate`` (channel mean, torchaudio sinc resampling)."""
    wav = read_audio(clip.path, sample_rate)[0]
    if max_seconds:
        wav = wav[: int(round(max_seconds * sample_rate))]
    if wav.numel() == 0:
        raise ValueError(f"{clip.path}: empty audio")
    return wav
