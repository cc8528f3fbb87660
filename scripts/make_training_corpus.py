#!/usr/bin/env python
"""Build codecfw's training corpus from Debian packages: 16 kHz mono FLAC in three domains, with manifests.

* speech: real recordings first (Asterisk's wide-band G.722 prompts in fr/es/it/ru with their transcripts, the
  Italian Menardi prompts, the voices of KTuberling, KLettres, Hedgewars and Warzone 2100), then synthetic voices
  (espeak-ng, flite, festival) reading the King James Bible (public domain, Debian's bible-kjv-text);
* music: MIDI files (OpenTTD's OpenMSX and seeded generated pieces) rendered by fluidsynth with three soundfonts,
  and the soundtracks shipped by game packages;
* sound: the effects and ambiences of game packages and of two desktop sound themes.

Splits are made by source unit: a package for everything a package ships (one package holds one speaker, or one
game's voices, music and effects), a voice for synthetic speech, a track for rendered MIDI. No unit appears in two
of train/valid/test; the held-out units are listed in ``HELD_OUT`` (packages and voices) or chosen from a hash of the
track name (MIDI), so the choice is deterministic.

Reserved packages (kept for independent evaluation) are refused by name before anything is downloaded, read or
installed, including when apt would pull one in as a dependency (``check_packages``, ``ensure_allowed``).

Deterministic: the same package versions give the same FLAC files and manifests, byte for byte. Resumable: a file
that exists is complete (files are written to a hidden temporary name and renamed), so a rerun renders only what is
missing. Packages are fetched with ``apt-get download`` and unpacked with ``dpkg-deb -x`` into ``--cache``; only the
tools (synthesisers, fluidsynth) are installed, with ``--install``.

Usage::

    python scripts/make_training_corpus.py --out ~/codecfw-data/corpus --install        # the real corpus
    python scripts/make_training_corpus.py --out /tmp/tiny --tiny                         # seconds, for tests

Outputs in ``--out``: ``{speech,music,sound}/<unit>/<clip>.flac``, ``manifest.jsonl`` (all rows) and
``train.jsonl`` / ``valid.jsonl`` / ``test.jsonl``, ``stats.json``, ``audio.sha256`` (every FLAC file),
``MANIFEST.sha256`` (the checksums of those), ``licences/<package>.copyright``.
"""

from __future__ import annotations

import argparse
import fnmatch
import functools
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import soundfile as sf
import torch

from codecfw.core.data.audio import read_audio, resample, write_audio
from codecfw.core.atomic import atomic_path as atomic_output

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_demo_corpus import HARVARD, generated_piece, write_midi  # noqa: E402  (one home for the MIDI writer)

SR = 16000
SPLITS = ("train", "valid", "test")

# --------------------------------------------------------------------------------------------------------------
# Reserved for independent evaluation: never download, read, install or use anything derived from these.
# --------------------------------------------------------------------------------------------------------------
RESERVED_PACKAGES = (
    "asterisk-core-sounds-en*", "asterisk-extra-sounds-en*", "pocketsphinx-testdata", "festvox-us-slt-hts",
    "colobot-common-sounds", "colobot-common", "asterisk-moh-opsound-*", "timgm6mb-soundfont", "music21",
    "python3-music21", "lomiri-sounds", "fillets-ng-data*", "oxygen-sounds", "sound-theme-freedesktop",
)
# Files of the reserved packages as installed, refused even if some other route points at them. flite's built-in
# "slt" voice is refused too: it is built from the same CMU ARCTIC speaker as festvox-us-slt-hts.
RESERVED_PATHS = ("*/asterisk/sounds/en*", "*moh*opsound*", "*pocketsphinx*test*", "*us_slt*", "*colobot*",
                  "*TimGM6mb*", "*music21/corpus*", "*/sounds/lomiri*", "*fillets*", "*/sounds/oxygen*",
                  "*/sounds/freedesktop*", "*Oxygen-*")
RESERVED_VOICES = ("slt", "cmu_us_slt*", "*slt*hts*")


class ReservedPackageError(ValueError):
    """A reserved package, file or voice was requested (directly or through a dependency)."""


def reserved_package(name: str) -> str | None:
    """The block-list pattern that ``name`` matches, or None."""
    base = name.split(":")[0].strip().lower()
    return next((p for p in RESERVED_PACKAGES if fnmatch.fnmatchcase(base, p)), None)


def check_packages(names: Iterable[str], why: str = "requested") -> None:
    bad = {n: reserved_package(n) for n in names if reserved_package(n)}
    if bad:
        raise ReservedPackageError(
            f"refusing reserved package(s) {', '.join(f'{n} (matches {p})' for n, p in sorted(bad.items()))}, "
            f"{why}: they are kept for independent evaluation")


def check_path(path: str | os.PathLike) -> None:
    s = str(path)
    hit = next((p for p in RESERVED_PATHS if fnmatch.fnmatch(s, p)), None)
    if hit:
        raise ReservedPackageError(f"refusing {s}: it belongs to a reserved package (matches {hit})")


def check_voice(voice: str) -> None:
    hit = next((p for p in RESERVED_VOICES if fnmatch.fnmatchcase(voice, p)), None)
    if hit:
        raise ReservedPackageError(f"refusing voice {voice}: it is derived from a reserved package (matches {hit})")


def parse_apt_simulation(text: str) -> list[str]:
    """Package names that ``apt-get install -s`` output says it would install ("Inst NAME (...)")."""
    return [line.split()[1] for line in text.splitlines() if line.startswith("Inst ")]


def apt_closure(packages: Sequence[str]) -> list[str]:
    """What apt would install for ``packages`` (dependencies included, recommends excluded)."""
    out = subprocess.run(["apt-get", "install", "-s", "-q", "--no-install-recommends", *packages],
                         capture_output=True, text=True, env={**os.environ, "LC_ALL": "C"})
    if out.returncode != 0:
        raise RuntimeError(f"apt-get install -s {' '.join(packages)} failed:\n{out.stderr.strip()}")
    return parse_apt_simulation(out.stdout)


def ensure_allowed(packages: Sequence[str]) -> None:
    """Refuse the reserved packages by name, then refuse a request through which apt would pull one in."""
    check_packages(packages)
    if shutil.which("apt-get"):
        check_packages(apt_closure(packages), why=f"which apt would install as a dependency of {' '.join(packages)}")


# --------------------------------------------------------------------------------------------------------------
# Packages: fetched with apt-get download and unpacked into the cache (nothing is installed for data).
# --------------------------------------------------------------------------------------------------------------
class PackageCache:
    def __init__(self, root: Path):
        self.root = root
        self.versions: dict[str, str] = {}

    def deb(self, pkg: str) -> Path:
        check_packages([pkg])
        debs = sorted(self.root.glob(f"{pkg}_*.deb"))
        if not debs:
            ensure_allowed([pkg])
            self.root.mkdir(parents=True, exist_ok=True)
            subprocess.run(["apt-get", "download", "-q", pkg], cwd=self.root, check=True, capture_output=True)
            debs = sorted(self.root.glob(f"{pkg}_*.deb"))
        if len(debs) != 1:
            raise RuntimeError(f"expected one {pkg}_*.deb in {self.root}, found {[d.name for d in debs]}")
        return debs[0]

    def unpack(self, pkg: str) -> Path:
        """The package's files under ``<cache>/root/<pkg>/`` (unpacked once; a half-unpacked tree is never used)."""
        target = self.root / "root" / pkg
        if pkg not in self.versions:
            deb = self.deb(pkg)
            self.versions[pkg] = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], capture_output=True,
                                                text=True, check=True).stdout.strip()
            if not target.is_dir():
                tmp = Path(tempfile.mkdtemp(prefix=f".{pkg}.", dir=target.parent if target.parent.is_dir()
                                            else _mkdir(target.parent)))
                subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True)
                os.replace(tmp, target)
        return target

    def describe(self, pkg: str) -> str:
        self.unpack(pkg)
        return f"Debian {pkg} {self.versions[pkg]}"


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


@functools.lru_cache(maxsize=None)
def tool_version(pkg: str) -> str:
    out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True)
    return out.stdout.strip() or "?"


# --------------------------------------------------------------------------------------------------------------
# Jobs: one output file each. The plan (list of jobs) is a pure function of the package contents.
# --------------------------------------------------------------------------------------------------------------
@dataclass
class Job:
    rel: str                               # output path under --out, e.g. speech/asterisk-fr/activated.flac
    domain: str                            # speech | music | sound
    unit: str                              # split unit: package, voice or track
    render: Callable[[Path], tuple[torch.Tensor, int]] = field(repr=False)  # work dir -> (wav [C x N], rate)
    fields: dict = field(default_factory=dict)  # transcript, source, licence, kind, language, speaker
    max_seconds: float = 240.0
    origin: Path | None = None             # the shipped file it comes from, where there is one


def finish(wav: torch.Tensor, sr: int, max_seconds: float) -> torch.Tensor:
    """Any rate, Tensor[C x N] → 16 kHz mono Tensor[1 x M], cut to max_seconds with a 50 ms fade-out, and scaled
    down only where resampling pushed the peak past full scale (levels are otherwise kept as recorded)."""
    wav = wav.float()
    if wav.shape[0] > 1:
        wav = wav.mean(0, keepdim=True)
    limit = int(max_seconds * sr)
    if wav.shape[-1] > limit:
        wav = wav[:, :limit].clone()
        fade = int(0.05 * sr)
        wav[:, -fade:] *= torch.linspace(1, 0, fade)
    wav = resample(wav, sr, SR)
    peak = float(wav.abs().max()) if wav.numel() else 0.0
    return wav * (0.999 / peak) if peak > 0.999 else wav


def read_file(path: Path, max_seconds: float | None = None) -> tuple[torch.Tensor, int]:
    """Tensor[C x N] at the file's rate. Only the first ``max_seconds`` (and one frame more, so that ``finish`` cuts
    and fades exactly as it would the whole file) are decoded."""
    check_path(path)
    sr = sf.info(str(path)).samplerate
    x, sr = sf.read(str(path), frames=int(max_seconds * sr) + 1 if max_seconds else -1, dtype="float32", always_2d=True)
    return torch.from_numpy(np.ascontiguousarray(x.T)), sr


def read_bytes(data: bytes) -> tuple[torch.Tensor, int]:
    x, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return torch.from_numpy(np.ascontiguousarray(x.T)), sr


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def hash_order(items: Iterable, key=str) -> list:
    """A deterministic order that does not follow the file names (so a cap does not keep only album 1)."""
    return sorted(items, key=lambda x: hashlib.sha256(key(x).encode()).hexdigest())


def audio_files(root: Path, patterns: Sequence[str], exclude: Sequence[str] = ()) -> list[Path]:
    """Readable, non-empty audio files below ``root`` matching ``patterns`` (globs relative to root)."""
    exts = (".ogg", ".oga", ".opus", ".wav", ".flac", ".mp3")
    out = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and p.suffix.lower() in exts and any(fnmatch.fnmatch(rel, pat) for pat in patterns) \
                and not any(fnmatch.fnmatch(rel, pat) for pat in exclude):
            try:
                if sf.info(str(p)).frames > 0:
                    out.append(p)
            except (sf.LibsndfileError, RuntimeError):
                pass  # a file libsndfile cannot read (a few packages ship broken or non-audio files)
    return out


def capped(files: list[Path], minutes: float | None, seconds_each: float) -> list[Path]:
    """Files in hash order until their (capped) durations reach ``minutes``, then back in name order."""
    if minutes is None:
        return files
    chosen, total = [], 0.0
    for f in hash_order(files, key=lambda p: p.name + str(p.parent.name)):
        if total >= minutes * 60:
            break
        chosen.append(f)
        total += min(sf.info(str(f)).duration, seconds_each)
    return sorted(chosen)


# --------------------------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------------------------
ASTERISK = {  # language: (voice folder, speaker, licence)
    "fr": ("fr_CA_f_June", "June (fr-CA, f)"), "es": ("es_MX_f_Allison", "Allison (es-MX, f)"),
    "it": ("it_IT_m_Carlo", "Carlo (it-IT, m)"), "ru": ("ru_RU_f_IvrvoiceRU", "IvrvoiceRU (ru-RU, f)"),
}
ASTERISK_LICENCE = "CC-BY-SA-3.0 (Digium, Inc.; Asterisk core sounds)"


def asterisk_transcripts(cache: PackageCache, lang: str) -> dict[str, str]:
    doc = cache.unpack(f"asterisk-core-sounds-{lang}") / f"usr/share/doc/asterisk-core-sounds-{lang}"
    text = gzip.decompress((doc / f"core-sounds-{lang}.txt.gz").read_bytes()).decode("utf-8", "replace")
    out = {}
    for line in text.splitlines():
        if ":" in line and not line.startswith(";"):
            name, said = line.split(":", 1)
            out[name.strip()] = said.strip()
    return out


def decode_g722(path: Path) -> tuple[torch.Tensor, int]:
    """Asterisk's .g722 files: raw ITU-T G.722 at 64 kbit/s, 16 kHz audio (PyPI g722, libg722's decoder)."""
    try:
        import G722  # PyPI package "g722"
    except ImportError as e:
        raise RuntimeError("decoding Asterisk's G.722 prompts needs the PyPI package g722 "
                           "(pip install 'codecfw[corpus]')") from e
    check_path(path)
    pcm = np.asarray(G722.G722(16000, 64000).decode(path.read_bytes()), dtype=np.int16)
    return torch.from_numpy(pcm.astype(np.float32) / 32768.0)[None], 16000


def src_asterisk(cache: PackageCache, lang: str) -> list[Job]:
    pkg = f"asterisk-core-sounds-{lang}-g722"
    folder, speaker = ASTERISK[lang]
    root = cache.unpack(pkg) / "usr/share/asterisk/sounds" / folder
    said = asterisk_transcripts(cache, lang)
    desc = cache.describe(pkg)
    jobs = []
    for f in sorted(root.rglob("*.g722")):
        name = f.relative_to(root).with_suffix("").as_posix()
        if name.startswith("silence/") or f.stat().st_size < 160:  # < 20 ms
            continue
        jobs.append(Job(f"speech/{pkg}/{slug(name)}.flac", "speech", pkg, lambda w, f=f: decode_g722(f),
                        {"transcript": said.get(name, ""), "kind": "recorded", "language": lang, "speaker": speaker,
                         **({"transcript_quality": "script"} if name in said else {}),
                         "source": f"{desc}: {folder}/{name}.g722 (G.722 decoded with libg722)",
                         "licence": ASTERISK_LICENCE}))
    return jobs


def package_files(cache: PackageCache, pkg: str, domain: str, patterns: Sequence[str], licence: str, *,
                  exclude: Sequence[str] = (), minutes: float | None = None, seconds_each: float = 240.0,
                  transcript: Callable[[str], str] | None = None, speaker: Callable[[str], str] | None = None,
                  language: Callable[[str], str] | None = None, kind: str = "recorded",
                  transcript_quality: str = "label") -> list[Job]:
    """Audio files shipped by a package, matched by glob patterns relative to the package root."""
    root = cache.unpack(pkg)
    desc = cache.describe(pkg)
    files = capped(audio_files(root, patterns, exclude), minutes, seconds_each)
    jobs = []
    for f in files:
        rel = f.relative_to(root).as_posix()
        fields = {"transcript": transcript(rel) if transcript else "", "kind": kind,
                  "source": f"{desc}: /{rel}", "licence": licence}
        if fields["transcript"]:
            fields["transcript_quality"] = transcript_quality
        if speaker:
            fields["speaker"] = speaker(rel)
        if language:
            fields["language"] = language(rel)
        name = re.sub(r"^usr/share/(games/)?", "", rel).replace("/", "__").replace(".", "_")  # grow.ogg ≠ grow.wav
        jobs.append(Job(f"{domain}/{pkg}/{slug(name)}.flac", domain, pkg,
                        lambda w, f=f: read_file(f, seconds_each), fields, seconds_each, origin=f))
    return jobs


def src_warzone(cache: PackageCache) -> list[Job]:
    """Warzone 2100's English voice messages (tutorial lines with their subtitles) and its effects, read from the
    base.wz archive (a zip) inside warzone2100-data."""
    pkg = "warzone2100-data"
    wz = cache.unpack(pkg) / "usr/share/games/warzone2100/base.wz"
    desc = cache.describe(pkg)
    with zipfile.ZipFile(wz) as z:
        names = sorted(i.filename for i in z.infolist() if i.filename.endswith(".ogg") and i.file_size > 200)
        tutorial = z.read("script/tutorial.js").decode("utf-8", "replace")
        audio_cfg = z.read("audio/audio.cfg").decode("utf-8", "replace")
    # The tutorial's lines carry their subtitles; the other voice messages are named by a comment in audio.cfg
    # ("pcv464.ogg ... /*5 Minutes Remaining*/"), which is what the voice says, give or take punctuation.
    lines = {m.group(1): m.group(2).replace('\\"', '"') for m in re.finditer(
        r'"audio":\s*"(tut\d+\.ogg)"[^\n]*?"message":\s*_\("((?:[^"\\]|\\.)*)"\)', tutorial)}
    labels = {m.group(1): m.group(2).strip().rstrip(":").strip() for m in re.finditer(
        r'audio\s+"([^"]+\.ogg)"[^\n]*?/\*(.*?)\*/', audio_cfg)}

    def load(name: str) -> tuple[torch.Tensor, int]:
        with zipfile.ZipFile(wz) as z:
            return read_bytes(z.read(name))

    jobs = []
    for n in names:
        if n.startswith("audio/sfx/"):
            domain, fields = "sound", {"kind": "recorded"}
        elif n.startswith(("audio/", "sequenceaudio/")) and not n.startswith("audio/radclick"):
            base = n.rsplit("/", 1)[-1]
            said, quality = ((lines.get(base, ""), "subtitle") if n.startswith("audio/tutorial/")
                             else (labels.get(base, ""), "label"))
            fields = {"kind": "recorded", "language": "en", "speaker": "warzone2100 voice cast", "transcript": said}
            if said:
                fields["transcript_quality"] = quality
            domain = "speech"
        else:
            continue
        fields.update(source=f"{desc}: base.wz:{n}", licence="GPL-2+ / CC-BY-SA-3.0 / CC0 (Warzone 2100 Project; "
                      "per-file terms in licences/warzone2100-data.copyright)")
        jobs.append(Job(f"{domain}/{pkg}/{slug(n[:-4].replace('/', '__'))}.flac", domain, pkg,
                        lambda w, n=n: load(n), fields))
    return jobs


# ---- synthetic speech -----------------------------------------------------------------------------------------
ESPEAK_VOICES = ["en-us+m1", "en-us+f2", "en+m3", "en+f3", "en-gb-x-rp+m7", "en-gb-scotland+m2", "en-029+f4",
                 "en-gb-x-gbclan+m4", "en-gb-x-gbcwmd+f1", "en-us+klatt"]
FLITE_VOICES = ["awb", "rms", "kal16"]  # flite's slt is refused (RESERVED_VOICES)
FESTIVAL_VOICES = [("kal_diphone", "festvox-kallpc16k"), ("ked_diphone", "festvox-kdlpc16k")]
VERSES_PER_VOICE = 45
KJV_BOOKS = "Gen1:1-Deu34:12"


def kjv_verses(n: int) -> list[tuple[str, str]]:
    """The first n verses from Genesis on, as (reference, text), read with Debian's bible-kjv."""
    out = subprocess.run(["bible", "-f", KJV_BOOKS], capture_output=True, text=True, check=True,
                         env={**os.environ, "COLUMNS": "100000"})
    verses = []
    for line in out.stdout.splitlines():
        m = re.match(r"^(\S+\d+:\d+)\s+(.*)$", line.strip())
        if m:
            verses.append((m.group(1), m.group(2).strip()))
        elif verses and line.strip():
            verses[-1] = (verses[-1][0], verses[-1][1] + " " + line.strip())
    if len(verses) < n:
        raise RuntimeError(f"bible {KJV_BOOKS} gave {len(verses)} verses, {n} needed")
    return verses[:n]


def synth(cmd: list[str], text: str, work: Path) -> tuple[torch.Tensor, int]:
    txt, wav = work / "text.txt", work / "speech.wav"
    txt.write_text(text + "\n")
    subprocess.run([c.replace("{txt}", str(txt)).replace("{wav}", str(wav)) for c in cmd], check=True,
                   capture_output=True)
    return read_audio(wav), sf.info(str(wav)).samplerate


def synthetic_voices(texts_for: Callable[[int], list[tuple[str, str]]], text_source: str, text_licence: str,
                     espeak: Sequence[str], flite: Sequence[str], festival: Sequence[tuple[str, str]],
                     per_voice: int) -> list[Job]:
    voices = [("espeak-ng", v, ["espeak-ng", "-v", v, "-f", "{txt}", "-w", "{wav}"], "espeak-ng", "GPL-3+")
              for v in espeak]
    voices += [("flite", v, ["flite", "-voice", v, "-f", "{txt}", "-o", "{wav}"], "flite", "BSD-like (CMU flite)")
               for v in flite]
    voices += [("festival", v, ["text2wave", "-eval", f"(voice_{v})", "{txt}", "-o", "{wav}"], pkg,
                "BSD-like (festvox diphone voice)") for v, pkg in festival]
    texts = texts_for(per_voice * len(voices))
    jobs = []
    for i, (engine, voice, cmd, pkg, vlic) in enumerate(voices):
        check_voice(voice)
        unit = f"{engine}:{voice}"
        for ref, text in texts[i * per_voice:(i + 1) * per_voice]:
            jobs.append(Job(f"speech/synthetic/{slug(engine + '_' + voice)}/{slug(ref)}.flac", "speech", unit,
                            lambda w, cmd=cmd, text=text: synth(cmd, text, w),
                            {"transcript": text, "kind": "synthetic", "language": "en", "speaker": unit,
                             "transcript_quality": "exact",
                             "source": f"{engine} ({pkg} {tool_version(pkg)}) voice {voice} reading {text_source} "
                                       f"{ref}", "licence": f"text {text_licence}; voice {vlic}"}))
    return jobs


# ---- music: MIDI -----------------------------------------------------------------------------------------------
SOUNDFONTS = [  # (package, file inside it, licence)
    ("fluid-soundfont-gm", "usr/share/sounds/sf2/FluidR3_GM.sf2", "MIT"),
    ("musescore-general-soundfont-small", "usr/share/sounds/sf3/MuseScore_General_Lite.sf3", "MIT"),
    ("opl3-soundfont", "usr/share/sounds/sf2/OPL-3_FM_128M.sf2", "CC-BY-SA-4.0 / GPL-3+"),
]


def render_midi(midi: Path | Callable[[Path], Path], soundfont: Path, work: Path) -> tuple[torch.Tensor, int]:
    check_path(soundfont)
    midi_path = midi(work) if callable(midi) else midi
    wav = work / "music.wav"
    subprocess.run(["fluidsynth", "-ni", "-q", "-g", "0.6", "-r", "44100", "-o", "synth.cpu-cores=1",
                    "-F", str(wav), str(soundfont), str(midi_path)], check=True, capture_output=True)
    return read_audio(wav), 44100


def midi_track_split(track: str, valid_test_every: int = 20) -> str:
    """Deterministic held-out MIDI tracks: 1 in 20 to test, 1 in 20 to valid, by a hash of the track name."""
    h = int(hashlib.sha256(track.encode()).hexdigest(), 16) % valid_test_every
    return "test" if h == 0 else "valid" if h == 1 else "train"


def midi_jobs(tracks: list[tuple[str, Path | Callable[[Path], Path], str, str]],
              soundfonts: list[tuple[str, Path, str, str]], per_track: int, seconds_each: float) -> list[Job]:
    """tracks: (track id, MIDI file or writer, description, licence); soundfonts: (name, path, description, licence).
    Track i is rendered with soundfonts i, i+1, ... (per_track of them), so each soundfont plays every kind of
    track."""
    jobs = []
    for i, (track, midi, desc, lic) in enumerate(tracks):
        for k in range(per_track):
            sf_name, sf_path, sf_desc, sf_lic = soundfonts[(i + k) % len(soundfonts)]
            jobs.append(Job(f"music/midi/{slug(track)}/{slug(sf_name)}.flac", "music", f"midi:{track}",
                            lambda w, midi=midi, sf_path=sf_path: render_midi(midi, sf_path, w),
                            {"kind": "rendered", "source": f"{desc}, rendered by fluidsynth {tool_version('fluidsynth')}"
                                                          f" with {sf_desc}",
                             "licence": f"{lic}; soundfont {sf_lic}"}, seconds_each))
    return jobs


def generated_midi_tracks(seeds: Iterable[int]) -> list[tuple[str, Callable[[Path], Path], str, str]]:
    def writer(seed: int) -> Callable[[Path], Path]:
        def write(work: Path) -> Path:
            tempo, programs, notes, _ = generated_piece(seed)
            write_midi(work / "piece.mid", tempo, programs, notes)
            return work / "piece.mid"
        return write
    return [(f"generated-{seed}", writer(seed), generated_piece(seed)[3] + " (make_demo_corpus.generated_piece)",
             "CC0-1.0 (generated)") for seed in seeds]


# ---- sound: generated (tiny builds and tests) --------------------------------------------------------------------
def generated_sound(seed: int, seconds: float = 2.0) -> tuple[torch.Tensor, int]:
    """A seeded synthetic effect: decaying filtered-noise impacts and a chirp."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    x = np.zeros(n)
    for _ in range(rng.integers(2, 6)):
        start = int(rng.uniform(0, seconds * 0.8) * SR)
        burst = rng.standard_normal(n - start) * np.exp(-np.arange(n - start) / (SR * rng.uniform(0.01, 0.2)))
        k = int(rng.integers(1, 30))
        x[start:] += np.convolve(burst, np.ones(k) / k, mode="same") * rng.uniform(0.2, 0.8)
    f0, f1 = rng.uniform(200, 2000, size=2)
    x += 0.2 * np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t ** 2 / (2 * seconds))) * np.exp(-t * rng.uniform(0.5, 3))
    x = 0.5 * x / max(np.abs(x).max(), 1e-8)
    return torch.from_numpy(x.astype(np.float32))[None], SR


def generated_sounds(seeds: Iterable[int]) -> list[Job]:
    return [Job(f"sound/generated/sfx_{seed}.flac", "sound", f"generated-sound:{seed}",
                lambda w, seed=seed: generated_sound(seed),
                {"kind": "generated", "source": f"generated effect (seed {seed}, make_training_corpus.generated_sound)",
                 "licence": "CC0-1.0 (generated)"}) for seed in seeds]


# --------------------------------------------------------------------------------------------------------------
# The real corpus
# --------------------------------------------------------------------------------------------------------------
TOOL_PACKAGES = ["espeak-ng", "flite", "festival", "festvox-kallpc16k", "festvox-kdlpc16k", "fluidsynth",
                 "fluid-soundfont-gm", "bible-kjv"]  # fluid-soundfont-gm satisfies libfluidsynth3's soundfont
# dependency, which apt would otherwise satisfy with the reserved timgm6mb-soundfont.

# Held-out units (deterministic, by hand so the test split holds English real speech with transcripts).
HELD_OUT = {
    "test": {"warzone2100-data", "ktuberling-data", "frozen-bubble-data", "wesnoth-1.16-data", "espeak-ng:en-029+f4"},
    "valid": {"hedgewars-data", "scorched3d-data", "espeak-ng:en-gb-scotland+m2"},
}

# Caps on the music and effects taken from one package (files in hash order until the cap), so that no game
# dominates; held-out packages get a smaller cap, which keeps valid and test near 5-10 % of the hours.
MUSIC_MINUTES_PER_PACKAGE = 40
SOUND_MINUTES_PER_PACKAGE = 45
HELD_OUT_MINUTES_PER_PACKAGE = 12
MUSIC_SECONDS_EACH = 180.0
HEDGEWARS = "usr/share/games/hedgewars/Data/"
HEDGEWARS_ENGLISH = ("British", "Classic", "Default", "HillBilly", "Mobster", "Pirate", "Robot", "Singer", "Surfer")


def _cap(pkg: str, minutes: float) -> float:
    return HELD_OUT_MINUTES_PER_PACKAGE if any(pkg in units for units in HELD_OUT.values()) else minutes


def full_plan(cache: PackageCache) -> list[Job]:
    jobs: list[Job] = []
    # ---- real speech
    for lang in ("fr", "es", "it", "ru"):
        jobs += src_asterisk(cache, lang)
    jobs += package_files(cache, "asterisk-prompt-it-menardi-wav", "speech", ["usr/share/asterisk/sounds/*"],
                          "CC-BY-SA-3.0 (Cristiana Menardi; 8 kHz telephone prompts)",
                          exclude=["*/silence/*"], language=lambda r: "it", speaker=lambda r: "Menardi (it-IT, f)")
    jobs += package_files(cache, "ktuberling-data", "speech", ["usr/share/ktuberling/sounds/*/*"],
                          "GPL-2+ (KDE KTuberling sound themes)",
                          transcript=lambda r: (r.rsplit("/", 1)[-1][:-4].split("_")[-1]
                                                if r.split("/")[-2] == "en" else ""),
                          language=lambda r: r.split("/")[-2], speaker=lambda r: "ktuberling " + r.split("/")[-2])
    jobs += package_files(cache, "klettres-data", "speech", ["usr/share/klettres/*/alpha/*", "usr/share/klettres/*/syllab/*"],
                          "GPL-2+ (KDE KLettres sounds)", language=lambda r: r.split("/")[3],
                          speaker=lambda r: "klettres " + r.split("/")[3])
    jobs += package_files(cache, "hedgewars-data", "speech",
                          [f"{HEDGEWARS}Sounds/voices/{v}/*" for v in HEDGEWARS_ENGLISH],
                          "GPL-2 (Hedgewars; per-file terms in licences/hedgewars-data.copyright)",
                          language=lambda r: "en", speaker=lambda r: "hedgewars " + r.split("/")[-2])
    jobs += src_warzone(cache)
    # ---- synthetic speech
    jobs += synthetic_voices(kjv_verses, "the King James Bible (Debian bible-kjv-text " +
                             tool_version("bible-kjv-text") + ")", "public domain (KJV, 1611/1769)",
                             ESPEAK_VOICES, FLITE_VOICES, FESTIVAL_VOICES, VERSES_PER_VOICE)
    # ---- music: MIDI
    fonts = []
    for pkg, rel, lic in SOUNDFONTS:
        fonts.append((pkg, cache.unpack(pkg) / rel, f"{Path(rel).name} ({cache.describe(pkg)})", lic))
    msx = cache.unpack("openttd-openmsx")
    tracks = [(f"openmsx-{p.stem}", p, f"{cache.describe('openttd-openmsx')}: {p.name}", "GPL-2 (OpenMSX)")
              for p in sorted(msx.rglob("*.mid"))]
    jobs += midi_jobs(tracks, fonts, per_track=1, seconds_each=MUSIC_SECONDS_EACH)
    jobs += midi_jobs(generated_midi_tracks(range(2000, 2090)), fonts, per_track=1, seconds_each=30)
    # ---- music: soundtracks of games (a cap per package keeps any one game from dominating)
    music = [("warzone2100-music", ["usr/share/games/warzone2100/music/*"], "CC-BY-SA-3.0 / GPL-2+ (Warzone 2100 soundtracks)", ()),
             ("wesnoth-1.16-music", ["usr/share/games/wesnoth/*"], "GPL-2+ (Battle for Wesnoth music)", ()),
             ("hedgewars-data", [f"{HEDGEWARS}Music/*"], "GPL-2 / CC-BY-SA-3.0 (Hedgewars music)", ()),
             ("supertux-data", ["usr/share/games/supertux2/music/*"], "GPL-2+ / CC-BY-SA (SuperTux music)", ()),
             ("freedroidrpg-data", ["*/sound/music/*"], "GPL-2+ (FreedroidRPG music)", ()),
             ("extremetuxracer-data", ["*/etr/music/*"], "GPL-2+ (Extreme Tux Racer music)", ()),
             ("lincity-ng-data", ["*/lincity-ng/music/*"], "GPL-2+ (LinCity-NG music)", ()),
             ("frozen-bubble-data", ["*/frozen-bubble/snd/*"], "GPL-2 (Frozen-Bubble music)", ())]
    for pkg, pats, lic, excl in music:
        files = package_files(cache, pkg, "music", pats, lic, exclude=excl, minutes=_cap(pkg, MUSIC_MINUTES_PER_PACKAGE),
                              seconds_each=MUSIC_SECONDS_EACH)
        jobs += [j for j in files if pkg != "frozen-bubble-data" or sf.info(str(j.origin)).duration >= 20.0]  # frozen-bubble/snd mixes music with short effects
    # ---- sound effects and ambiences
    sounds = [("megaglest-data", ["*/megaglest/techs/*", "*/megaglest/tilesets/*"], "CC-BY-SA-3.0 (MegaGlest)",
               ("*/music/*",)),
              ("hedgewars-data", [f"{HEDGEWARS}Sounds/*"], "GPL-2 (Hedgewars effects)", ("*/voices/*",)),
              ("freedroidrpg-data", ["*/sound/effects/*"], "GPL-2+ (FreedroidRPG effects)", ()),
              ("lincity-ng-data", ["*/lincity-ng/sounds/*"], "GPL-2+ (LinCity-NG effects)", ()),
              ("scorched3d-data", ["*/scorched3d/data/*"], "GPL-2+ (Scorched3D effects)", ()),
              ("wesnoth-1.16-data", ["*/wesnoth/*"], "GPL-2+ (Battle for Wesnoth effects)", ("*/music/*",)),
              ("extremetuxracer-data", ["*/etr/sounds/*"], "GPL-2+ (Extreme Tux Racer effects)", ()),
              ("supertux-data", ["usr/share/games/supertux2/sounds/*"], "GPL-2+ / CC-BY-SA (SuperTux effects)", ()),
              ("frozen-bubble-data", ["*/frozen-bubble/snd/*"], "GPL-2 (Frozen-Bubble effects)", ()),
              ("deepin-sound-theme", ["usr/share/sounds/deepin/*"], "GPL-3 (Deepin Technology)", ()),
              ("yaru-theme-sound", ["usr/share/sounds/Yaru/*"], "CC-BY-SA-4.0 (Mads Rosendahl)", ())]
    for pkg, pats, lic, excl in sounds:
        files = package_files(cache, pkg, "sound", pats, lic, exclude=excl, minutes=_cap(pkg, SOUND_MINUTES_PER_PACKAGE),
                              seconds_each=60.0)
        jobs += [j for j in files if pkg != "frozen-bubble-data" or sf.info(str(j.origin)).duration < 20.0]
    return jobs


def tiny_plan(cache: PackageCache | None, fluid_soundfont: Path | None) -> list[Job]:
    """Seconds of each domain from what is cheap and present: espeak-ng reading Harvard sentences (public domain),
    a generated MIDI piece rendered by fluidsynth, generated effects."""
    jobs: list[Job] = []
    if shutil.which("espeak-ng"):
        harvard = [(f"H{li + 1}.{si + 1}", s) for li, lst in enumerate(HARVARD) for si, s in enumerate(lst)]
        jobs += synthetic_voices(lambda n: harvard[:n], "Harvard sentences (IEEE 1969)", "public domain",
                                 ["en-us+m1", "en-us+f2", "en+m3"], [], [], per_voice=2)
    if shutil.which("fluidsynth") and fluid_soundfont and fluid_soundfont.is_file():
        fonts = [("FluidR3_GM", fluid_soundfont, f"{fluid_soundfont.name} (installed)", "MIT")]
        jobs += midi_jobs(generated_midi_tracks([3, 4, 5]), fonts, per_track=1, seconds_each=30)
    jobs += generated_sounds(range(6))
    return jobs


TINY_HELD_OUT = {"test": {"espeak-ng:en+m3", "midi:generated-5", "generated-sound:5"},
                 "valid": {"espeak-ng:en-us+f2", "midi:generated-4", "generated-sound:4"}}


def assign_splits(jobs: list[Job], held_out: dict[str, set[str]]) -> dict[str, str]:
    """unit → split. Listed units go where listed; MIDI tracks by hash; everything else to train."""
    split_of = {}
    for job in jobs:
        u = job.unit
        if u in split_of:
            continue
        listed = [s for s, units in held_out.items() if u in units]
        if len(listed) > 1:
            raise ValueError(f"unit {u} is held out in two splits: {listed}")
        split_of[u] = listed[0] if listed else midi_track_split(u) if u.startswith("midi:openmsx") else "train"
    return split_of


# --------------------------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------------------------
MARKER = ".codecfw-training-corpus"


def prune(out: Path, planned: set[str]) -> None:
    """Delete the FLAC files of an earlier build that the plan no longer has (a changed cap or package), so the folder
    holds what a fresh build would. Only in a folder this script made (it leaves a marker file there)."""
    out.mkdir(parents=True, exist_ok=True)
    marker = out / MARKER
    if not marker.exists():
        if any((out / d).exists() for d in ("speech", "music", "sound")):
            raise FileExistsError(f"{out} has speech/music/sound folders but no {MARKER}: not a corpus this script "
                                  "built; choose an empty or new --out")
        marker.write_text("made by scripts/make_training_corpus.py; FLAC files not in its plan are deleted\n")
        return
    stale = [p for d in ("speech", "music", "sound") for p in sorted((out / d).rglob("*.flac"))
             if p.relative_to(out).as_posix() not in planned]
    for p in stale:
        p.unlink()
    if stale:
        print(f"removed {len(stale)} files no longer in the plan", file=sys.stderr)


def _render(out: Path, job: Job) -> None:
    with tempfile.TemporaryDirectory(prefix="corpus-work-") as work:
        try:
            wav, sr = job.render(Path(work))
            if wav.shape[-1] == 0:
                raise ValueError("no audio")
        except Exception as e:
            raise RuntimeError(f"{job.rel} ({job.fields.get('source', job.unit)}): {e}") from e
        write_audio(out / job.rel, finish(wav, sr, job.max_seconds), SR, subtype="PCM_16")


def build(out: Path, jobs: list[Job], held_out: dict[str, set[str]], progress: bool = True,
          workers: int = 1) -> list[dict]:
    """Render every missing file (``workers`` at a time), then write the manifests. Returns the manifest rows,
    sorted by path. Each file depends only on its job, so the result does not depend on ``workers``.

    Workers are threads: rendering is mostly external synthesizers (subprocesses) and torch kernels, both of which
    release the GIL, and threads need neither pickling (jobs hold closures) nor fork, which deadlocks a child when
    the parent's OpenMP or onnxruntime threads held a lock at the moment of the fork."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    ordered = sorted(jobs, key=lambda j: j.rel)
    dup = sorted({a.rel for a, b in zip(ordered, ordered[1:]) if a.rel == b.rel})
    if dup:
        raise ValueError(f"two jobs write the same file: {dup[:5]}")
    split_of = assign_splits(jobs, held_out)
    prune(out, {j.rel for j in ordered})
    missing = [j for j in ordered if not (out / j.rel).is_file()]
    with tqdm(total=len(ordered), initial=len(ordered) - len(missing), desc="corpus", unit="file",
              disable=not progress, mininterval=2.0) as bar:
        if workers > 1 and len(missing) > 1:
            with ThreadPoolExecutor(workers) as pool:
                for _ in pool.map(lambda job: _render(out, job), missing):
                    bar.update()
        else:
            for job in missing:
                _render(out, job)
                bar.update()
    rows = []
    for job in ordered:
        frames = sf.info(str(out / job.rel)).frames
        rows.append({"path": job.rel, "domain": job.domain, "transcript": job.fields.get("transcript", ""),
                     "split": split_of[job.unit], "unit": job.unit, "seconds": round(frames / SR, 3),
                     **{k: v for k, v in job.fields.items() if k != "transcript"}})
    write_manifests(out, rows)
    build.rendered = len(missing)  # for tests and the summary line
    return rows


def verify(out: Path, jobs: list[Job], n: int) -> list[str]:
    """Render n jobs (a deterministic spread over all sources) into a temporary folder; the paths that differ."""
    sample = hash_order(jobs, key=lambda j: j.rel)[:n]
    differ = []
    with tempfile.TemporaryDirectory(prefix="corpus-verify-") as tmp:
        for job in sample:
            _render(Path(tmp), job)
            if (Path(tmp) / job.rel).read_bytes() != (out / job.rel).read_bytes():
                differ.append(job.rel)
    return differ


def write_manifests(out: Path, rows: list[dict]) -> None:
    def dump(name: str, subset: list[dict]) -> None:
        with atomic_output(out / name) as tmp:
            tmp.write_text("".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in subset))

    dump("manifest.jsonl", rows)
    for split in SPLITS:
        dump(f"{split}.jsonl", [r for r in rows if r["split"] == split])
    stats = corpus_stats(rows)
    with atomic_output(out / "stats.json") as tmp:
        tmp.write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n")
    with atomic_output(out / "audio.sha256") as tmp:  # pins every FLAC file, byte for byte
        tmp.write_text("".join(f"{hashlib.sha256((out / r['path']).read_bytes()).hexdigest()}  {r['path']}\n"
                               for r in rows))
    names = ["manifest.jsonl", *(f"{s}.jsonl" for s in SPLITS), "stats.json", "audio.sha256"]
    with atomic_output(out / "MANIFEST.sha256") as tmp:
        tmp.write_text("".join(f"{hashlib.sha256((out / n).read_bytes()).hexdigest()}  {n}\n" for n in names))


def corpus_stats(rows: list[dict]) -> dict:
    hours: dict = defaultdict(lambda: defaultdict(float))
    files: dict = defaultdict(lambda: defaultdict(int))
    units: dict = defaultdict(set)
    kinds: dict = defaultdict(float)
    for r in rows:
        hours[r["domain"]][r["split"]] += r["seconds"] / 3600
        files[r["domain"]][r["split"]] += 1
        units[(r["domain"], r["split"])].add(r["unit"])
        kinds[f"{r['domain']}/{r.get('kind', '?')}/{r['split']}"] += r["seconds"] / 3600
    speakers = defaultdict(set)
    for r in rows:
        if r["domain"] == "speech":
            speakers[r["split"]].add(r.get("speaker", r["unit"]))
    return {"hours": {d: {s: round(h, 3) for s, h in v.items()} for d, v in hours.items()},
            "files": {d: dict(v) for d, v in files.items()},
            "units": {f"{d}/{s}": len(u) for (d, s), u in sorted(units.items())},
            "hours_by_kind": {k: round(v, 3) for k, v in sorted(kinds.items())},
            "speakers_or_voices": {s: len(v) for s, v in sorted(speakers.items())},
            "total_hours": round(sum(r["seconds"] for r in rows) / 3600, 3)}


def copy_licences(cache: PackageCache, out: Path) -> None:
    for pkg in sorted(cache.versions):
        src = cache.unpack(pkg) / "usr/share/doc" / pkg / "copyright"
        if src.is_file():
            with atomic_output(out / "licences" / f"{pkg}.copyright") as tmp:
                shutil.copyfile(src, tmp)


def install_tools(packages: Sequence[str]) -> None:
    ensure_allowed(packages)
    missing = [p for p in packages if tool_version(p) == "?"]
    if missing:
        subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        tool_version.cache_clear()  # it cached "?" for what was just installed (the build then refused to start)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="corpus folder (outside the repository)")
    ap.add_argument("--cache", type=Path, default=None, help="where .deb files are fetched and unpacked "
                                                              "(default: OUT/.cache)")
    ap.add_argument("--install", action="store_true", help="apt-get install the synthesis/rendering tools "
                                                           f"({' '.join(TOOL_PACKAGES)}) after checking them")
    ap.add_argument("--tiny", action="store_true", help="a few seconds per domain from what is installed (tests)")
    ap.add_argument("--workers", type=int, default=1, help="files rendered at a time, in threads (the output does not depend on it)")
    ap.add_argument("--verify", type=int, default=0, metavar="N",
                    help="after building, render N files again in a temporary folder and compare them byte for byte")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    out = args.out.expanduser().resolve()
    cache = PackageCache((args.cache or out / ".cache").expanduser().resolve())
    torch.set_num_threads(1)
    t0 = time.time()
    if args.tiny:
        jobs, held = tiny_plan(None, Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")), TINY_HELD_OUT
    else:
        check_packages(TOOL_PACKAGES)
        if args.install:
            install_tools(TOOL_PACKAGES)
        missing = [p for p in TOOL_PACKAGES if tool_version(p) == "?"]
        if missing:
            print(f"make_training_corpus: missing tools {' '.join(missing)}; rerun with --install", file=sys.stderr)
            return 2
        jobs, held = full_plan(cache), HELD_OUT
    out.mkdir(parents=True, exist_ok=True)
    rows = build(out, jobs, held, progress=not args.no_progress, workers=args.workers)
    if not args.tiny:
        copy_licences(cache, out)
    if args.verify:
        differ = verify(out, jobs, args.verify)
        print(f"verify: {args.verify - len(differ)}/{args.verify} files re-rendered identical" +
              (f"; differ: {differ}" if differ else ""))
        if differ:
            return 1
    stats = corpus_stats(rows)
    print(json.dumps(stats["hours"], sort_keys=True))
    print(f"{len(rows)} files ({build.rendered} rendered now) in {out}, {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
