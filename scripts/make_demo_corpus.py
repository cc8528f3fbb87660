#!/usr/bin/env python
"""Regenerate codecfw's demo corpus (data/demo/): 16 kHz mono FLAC clips of 2-6 s in three domains.

* speech: festival reading public-domain Harvard sentences (IEEE 1969) with three free Debian voices;
* music:  generated MIDI (seeded) and six public-domain melodies rendered by fluidsynth with FluidR3_GM (MIT);
* sound:  effects from Debian's sound-theme packages, each under its upstream free licence (recorded per file).

Everything is deterministic: the same Debian packages give the same samples (``--check`` verifies the committed
corpus against a fresh rendering). Needs, besides codecfw's venv::

    apt-get install festival festvox-us-slt-hts festvox-kallpc16k festvox-kdlpc16k fluidsynth fluid-soundfont-gm \\
        sound-theme-freedesktop deepin-sound-theme oxygen-sounds yaru-theme-sound

Usage: ``python scripts/make_demo_corpus.py [--out data/demo] [--check]``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from codecfw.core.data.dataset import read_audio, resample

REPO = Path(__file__).resolve().parent.parent
SR = 16000
PEAK = 10 ** (-1 / 20)  # -1 dBFS
MIN_S, MAX_S = 2.0, 6.0
SOUNDFONT = "/usr/share/sounds/sf2/FluidR3_GM.sf2"
SOUNDS = "/usr/share/sounds"
VALID_EVERY = 5  # every 5th clip of each domain goes to the validation split

# --------------------------------------------------------------------------------------------------------------
# Speech: Harvard sentences, lists 1-4 (IEEE Recommended Practice for Speech Quality Measurements, 1969).
# --------------------------------------------------------------------------------------------------------------
HARVARD = [
    ["The birch canoe slid on the smooth planks.", "Glue the sheet to the dark blue background.",
     "It's easy to tell the depth of a well.", "These days a chicken leg is a rare dish.",
     "Rice is often served in round bowls.", "The juice of lemons makes fine punch.",
     "The box was thrown beside the parked truck.", "The hogs were fed chopped corn and garbage.",
     "Four hours of steady work faced us.", "Large size in stockings is hard to sell."],
    ["The boy was there when the sun rose.", "A rod is used to catch pink salmon.",
     "The source of the huge river is the clear spring.", "Kick the ball straight and follow through.",
     "Help the woman get back to her feet.", "A pot of tea helps to pass the evening.",
     "Smoky fires lack flame and heat.", "The soft cushion broke the man's fall.",
     "The salt breeze came across from the sea.", "The girl at the booth sold fifty bonds."],
    ["The small pup gnawed a hole in the sock.", "The fish twisted and turned on the bent hook.",
     "Press the pants and sew a button on the vest.", "The swan dive was far short of perfect.",
     "The beauty of the view stunned the young boy.", "Two blue fish swam in the tank.",
     "Her purse was full of useless trash.", "The colt reared and threw the tall rider.",
     "It snowed, rained, and hailed the same morning.", "Read verse out loud for pleasure."],
    ["Hoist the load to your left shoulder.", "Take the winding path to reach the lake.",
     "Note closely the size of the gas tank.", "Wipe the grease off his dirty face.",
     "Mend the coat before you go out.", "The wrist was badly strained and hung limp.",
     "The stray cat gave birth to kittens.", "The young girl gave no clear response.",
     "The meal was cooked before the bell rang.", "What joy there is in living."],
]
VOICES = [  # (festival voice, short name, Debian package, licence of the voice)
    ("cmu_us_slt_arctic_hts", "slt", "festvox-us-slt-hts", "EST-2003 (CMU, permissive)"),
    ("kal_diphone", "kal", "festvox-kallpc16k", "festival diphone licence (permissive)"),
    ("ked_diphone", "ked", "festvox-kdlpc16k", "festival diphone licence (permissive)"),
]
SPEECH_CLIPS = 36

# --------------------------------------------------------------------------------------------------------------
# Music: public-domain melodies as (MIDI note, beats); generated pieces from seeds.
# --------------------------------------------------------------------------------------------------------------
MELODIES = {
    "ode_to_joy": ("Beethoven, Symphony No. 9 (1824), theme", 150, 73, 48,
                   [(64, 1), (64, 1), (65, 1), (67, 1), (67, 1), (65, 1), (64, 1), (62, 1), (60, 1), (60, 1),
                    (62, 1), (64, 1), (64, 1.5), (62, 0.5), (62, 2)]),
    "twinkle": ("traditional (Ah! vous dirai-je, maman, 1761)", 150, 0, 48,
                [(60, 1), (60, 1), (67, 1), (67, 1), (69, 1), (69, 1), (67, 2), (65, 1), (65, 1), (64, 1),
                 (64, 1), (62, 1), (62, 1), (60, 2)]),
    "frere_jacques": ("traditional (Frère Jacques, 18th c.)", 180, 11, 48,
                      [(60, 1), (62, 1), (64, 1), (60, 1), (60, 1), (62, 1), (64, 1), (60, 1), (64, 1), (65, 1),
                       (67, 2), (64, 1), (65, 1), (67, 2)]),
    "greensleeves": ("traditional (Greensleeves, 16th c.)", 220, 24, 45,
                     [(69, 1), (72, 2), (74, 1), (76, 1.5), (77, 0.5), (76, 1), (74, 2), (71, 1), (67, 1.5),
                      (69, 0.5), (71, 1), (72, 2), (69, 1), (69, 1.5), (68, 0.5), (69, 1), (71, 2), (68, 1)]),
    "minuet_in_g": ("Petzold, Minuet in G (BWV Anh. 114, c. 1725)", 150, 6, 43,
                    [(74, 1), (67, 0.5), (69, 0.5), (71, 0.5), (72, 0.5), (74, 1), (67, 1), (67, 1), (76, 1),
                     (72, 0.5), (74, 0.5), (76, 0.5), (78, 0.5), (79, 1), (67, 1), (67, 1)]),
    "amazing_grace": ("traditional (New Britain, 1829)", 200, 40, 43,
                      [(62, 1), (67, 2), (71, 0.5), (67, 0.5), (71, 2), (69, 1), (67, 2), (64, 1), (62, 2),
                       (62, 1), (67, 2), (71, 0.5), (67, 0.5), (71, 2), (69, 1), (74, 3)]),
}
MELODY_PROGRAMS = [0, 4, 11, 13, 24, 25, 40, 46, 56, 65, 71, 73, 68, 19, 81, 105]  # GM programs (0-based)
CHORD_PROGRAMS = [0, 4, 19, 24, 48, 49, 52, 89]
GENERATED_MUSIC = 18

# --------------------------------------------------------------------------------------------------------------
# Sound: (clip name, Debian package, files under /usr/share/sounds, licence, copyright holder).
# Several files in one entry are played one after another with 0.2 s gaps (short UI effects).
# --------------------------------------------------------------------------------------------------------------
_FD, _DP, _OX, _YA = "sound-theme-freedesktop", "deepin-sound-theme", "oxygen-sounds", "yaru-theme-sound"
SOUND_CLIPS = [
    ("fd_alarm_clock", _FD, ["freedesktop/stereo/alarm-clock-elapsed.oga"], "CC-BY-SA-3.0", "Tim/corsica_s"),
    ("fd_phone_busy", _FD, ["freedesktop/stereo/phone-outgoing-busy.oga"], "GPL-2+", "Damien Sandras"),
    ("fd_service_login", _FD, ["freedesktop/stereo/service-login.oga"], "GPL-2", "The Pidgin developers"),
    ("fd_bells", _FD, ["freedesktop/stereo/bell.oga", "freedesktop/stereo/complete.oga",
                       "freedesktop/stereo/trash-empty.oga"], "CC-BY-3.0", "Dr. Richard Boulanger et al"),
    ("fd_devices", _FD, ["freedesktop/stereo/camera-shutter.oga", "freedesktop/stereo/device-added.oga",
                         "freedesktop/stereo/device-removed.oga", "freedesktop/stereo/message.oga"], "CC-BY-SA-3.0",
     "freesound user horsthorstensen (camera-shutter); Ivica Bukvic (device-added, device-removed, message)"),
    ("deepin_login", _DP, ["deepin/stereo/desktop-login.wav"], "GPL-3", "2015 Deepin Technology Co., Ltd."),
    ("deepin_logout", _DP, ["deepin/stereo/desktop-logout.wav"], "GPL-3", "2015 Deepin Technology Co., Ltd."),
    ("deepin_shutdown", _DP, ["deepin/stereo/system-shutdown.wav"], "GPL-3", "2015 Deepin Technology Co., Ltd."),
    ("deepin_resume", _DP, ["deepin/stereo/suspend-resume.wav"], "GPL-3", "2015 Deepin Technology Co., Ltd."),
    ("deepin_effects", _DP, ["deepin/stereo/camera-shutter.wav", "deepin/stereo/complete-copy.wav",
                             "deepin/stereo/power-plug.wav", "deepin/stereo/trash-empty.wav"], "GPL-3",
     "2015 Deepin Technology Co., Ltd."),
    ("yaru_login", _YA, ["Yaru/stereo/desktop-login.oga"], "CC-BY-SA-4.0", "2018 Mads Rosendahl"),
    ("yaru_logoff", _YA, ["Yaru/stereo/desktop-logoff.oga"], "CC-BY-SA-4.0", "2018 Mads Rosendahl"),
    ("yaru_dialogs", _YA, ["Yaru/stereo/bell.oga", "Yaru/stereo/dialog-question.oga",
                           "Yaru/stereo/message-new-email.oga", "Yaru/stereo/complete.oga"], "CC-BY-SA-4.0",
     "2018 Mads Rosendahl"),
    ("yaru_devices", _YA, ["Yaru/stereo/battery-low.oga", "Yaru/stereo/device-added.oga",
                           "Yaru/stereo/device-removed.oga", "Yaru/stereo/trash-empty.oga"], "CC-BY-SA-4.0",
     "2018 Mads Rosendahl"),
    ("yaru_warnings", _YA, ["Yaru/stereo/dialog-error.oga", "Yaru/stereo/dialog-warning.oga",
                            "Yaru/stereo/power-plug.oga", "Yaru/stereo/power-unplug.oga"], "CC-BY-SA-4.0",
     "2018 Mads Rosendahl"),
] + [
    (f"oxygen_{name.lower().replace('-', '_')}", _OX, [f"Oxygen-{name}.ogg"], "LGPL-3.0-or-later",
     "2008 Nuno Filipe Povoa")
    for name in ["Im-Phone-Ring", "Im-Sms", "K3B-Finish-Error", "K3B-Finish-Success", "Sys-App-Error-Critical",
                 "Sys-App-Positive", "Sys-App-Negative", "Sys-Log-In-Short", "Sys-Log-Out-Long", "Sys-Trash-Emptied",
                 "Sys-Warning", "Sys-Question"]
] + [
    ("oxygen_windows", _OX, ["Oxygen-Window-Close.ogg", "Oxygen-Window-Maximize.ogg", "Oxygen-Window-Minimize.ogg",
                             "Oxygen-Window-Move.ogg"], "LGPL-3.0-or-later", "2008 Nuno Filipe Povoa"),
]

APT_PACKAGES = ["festival", "festvox-us-slt-hts", "festvox-kallpc16k", "festvox-kdlpc16k", "fluidsynth",
                "fluid-soundfont-gm", _FD, _DP, _OX, _YA]


def check_tools() -> None:
    """Fail with the list of missing tools/files and the apt packages that provide them."""
    missing = []
    for exe, pkg in (("text2wave", "festival"), ("fluidsynth", "fluidsynth")):
        if shutil.which(exe) is None:
            missing.append(f"program {exe} (apt-get install {pkg})")
    voice_dirs = {"cmu_us_slt_arctic_hts": "/usr/share/festival/voices/us/cmu_us_slt_arctic_hts",
                  "kal_diphone": "/usr/share/festival/voices/english/kal_diphone",
                  "ked_diphone": "/usr/share/festival/voices/english/ked_diphone"}
    for voice, _, pkg, _ in VOICES:
        if not os.path.isdir(voice_dirs[voice]):
            missing.append(f"festival voice {voice} (apt-get install {pkg})")
    if not os.path.isfile(SOUNDFONT):
        missing.append(f"soundfont {SOUNDFONT} (apt-get install fluid-soundfont-gm)")
    for _, pkg, files, _, _ in SOUND_CLIPS:
        for f in files:
            if not os.path.isfile(os.path.join(SOUNDS, f)):
                missing.append(f"sound file {SOUNDS}/{f} (apt-get install {pkg})")
    if missing:
        sys.exit("make_demo_corpus: missing tools or files:\n  " + "\n  ".join(missing) +
                 "\nInstall them with: apt-get install " + " ".join(APT_PACKAGES))


def package_version(pkg: str) -> str:
    if shutil.which("dpkg-query") is None:
        return "?"
    out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True)
    return out.stdout.strip() or "?"


def finish(wav: torch.Tensor, sr: int) -> torch.Tensor:
    """Any rate, Tensor[1 x N] → 16 kHz, trimmed to 6 s (50 ms fade-out) or padded to 2 s, peak at -1 dBFS."""
    wav = resample(wav.float(), sr, SR)
    if wav.shape[-1] > MAX_S * SR:
        wav = wav[:, : int(MAX_S * SR)].clone()
        fade = int(0.05 * SR)
        wav[:, -fade:] *= torch.linspace(1, 0, fade)
    if wav.shape[-1] < MIN_S * SR:
        wav = torch.nn.functional.pad(wav, (0, int(MIN_S * SR) - wav.shape[-1]))
    return wav * (PEAK / wav.abs().max().clamp_min(1e-8))


# --------------------------------------------------------------------------------------------------------------
# MIDI: a minimal standard-MIDI-file writer (format 0, one track).
# --------------------------------------------------------------------------------------------------------------
TPB = 480


def _vlq(value: int) -> bytes:
    out = [value & 0x7F]
    while value > 0x7F:
        value >>= 7
        out.append((value & 0x7F) | 0x80)
    return bytes(reversed(out))


def write_midi(path: Path, tempo_bpm: float, programs: dict[int, int],
               notes: list[tuple[float, float, int, int, int]]) -> None:
    """notes: (start beat, beats, channel, MIDI note, velocity)."""
    events = [(0, bytes([0xFF, 0x51, 0x03]) + int(60e6 / tempo_bpm).to_bytes(3, "big"))]
    events += [(0, bytes([0xC0 | ch, prog])) for ch, prog in sorted(programs.items())]
    for start, dur, ch, note, vel in notes:
        events.append((round(start * TPB), bytes([0x90 | ch, note, vel])))
        events.append((round((start + dur) * TPB) - 1, bytes([0x80 | ch, note, 0])))
    events.sort(key=lambda e: (e[0], e[1][0] & 0xF0 == 0x90))  # note-offs before note-ons at the same tick
    track, now = b"", 0
    for tick, data in events:
        track += _vlq(tick - now) + data
        now = tick
    track += _vlq(0) + bytes([0xFF, 0x2F, 0x00])
    path.write_bytes(b"MThd" + struct.pack(">IHHH", 6, 0, 1, TPB) + b"MTrk" + struct.pack(">I", len(track)) + track)


def render_midi(midi: Path, wav: Path) -> torch.Tensor:
    subprocess.run(["fluidsynth", "-ni", "-q", "-g", "0.6", "-r", "44100", "-o", "synth.cpu-cores=1",
                    "-F", str(wav), SOUNDFONT, str(midi)], check=True, capture_output=True)
    return read_audio(wav)  # 44.1 kHz stereo → mean of channels


def generated_piece(seed: int) -> tuple[float, dict[int, int], list, str]:
    rng = random.Random(seed)
    tempo = rng.randint(84, 150)
    beats = 4 * max(1, int(5.0 / (4 * 60 / tempo)))  # whole bars that fit in ~5 s
    root = rng.randint(48, 59)
    minor = rng.random() < 0.4
    scale = [0, 2, 3, 5, 7, 8, 10] if minor else [0, 2, 4, 5, 7, 9, 11]
    progression = rng.choice([[0, 4, 5, 3], [0, 5, 3, 4], [0, 3, 4, 0], [5, 3, 0, 4], [0, 3, 0, 4]])
    melody_prog, chord_prog = rng.choice(MELODY_PROGRAMS), rng.choice(CHORD_PROGRAMS)
    arpeggio, drums = rng.random() < 0.5, rng.random() < 0.5
    pitch = lambda degree, octave: root + 12 * (octave + degree // 7) + scale[degree % 7]  # noqa: E731
    notes = []
    for i in range(beats // 2):  # a chord every two beats
        degree = progression[i % len(progression)]
        chord = [pitch(degree + k, 0) for k in (0, 2, 4)]
        if arpeggio:
            notes += [(2 * i + 0.5 * k, 0.5, 1, chord[(k % 3)] + 12 * (k == 3), 70) for k in range(4)]
        else:
            notes += [(2 * i, 2, 1, n, 62) for n in chord]
        notes.append((2 * i, 2, 2, pitch(degree, -1), 80))  # bass
    t, degree = 0.0, rng.randint(7, 11)
    while t < beats:
        dur = min(rng.choice([0.5, 0.5, 1, 1, 1, 1.5, 2]), beats - t)
        degree = min(16, max(5, degree + rng.choice([-2, -1, -1, 0, 1, 1, 2, 3])))
        notes.append((t, dur, 0, pitch(degree, 1), rng.randint(80, 110)))
        t += dur
    if drums:
        for b in range(beats * 2):  # eighth notes: hi-hat; kick on 1 and 3, snare on 2 and 4
            notes.append((b / 2, 0.25, 9, 42, 60))
            if b % 4 == 0:
                notes.append((b / 2, 0.25, 9, 36 if b % 8 == 0 else 38, 100))
    programs = {0: melody_prog, 1: chord_prog, 2: 32}
    desc = (f"generated (seed {seed}): {tempo} bpm, {'minor' if minor else 'major'} key on MIDI {root}, "
            f"programs melody {melody_prog} chords {chord_prog}{', drums' if drums else ''}")
    return tempo, programs, notes, desc


# --------------------------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------------------------


def build(out: Path, work: Path) -> list[dict]:
    rows: list[dict] = []
    versions = {p: package_version(p) for p in APT_PACKAGES}

    def emit(domain: str, name: str, wav: torch.Tensor, sr: int, **fields) -> None:
        path = out / domain / f"{name}.flac"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, finish(wav, sr)[0].numpy(), SR, subtype="PCM_16")
        n = sum(r["domain"] == domain for r in rows)
        rows.append({"path": f"{domain}/{name}.flac", "domain": domain,
                     "split": "valid" if n % VALID_EVERY == VALID_EVERY - 1 else "train", **fields})

    sentences = [(li + 1, si + 1, s) for li, lst in enumerate(HARVARD) for si, s in enumerate(lst)][:SPEECH_CLIPS]
    for k, (lst, num, text) in enumerate(sentences):
        voice, short, pkg, licence = VOICES[k % len(VOICES)]
        txt, wav_path = work / "s.txt", work / "s.wav"
        txt.write_text(text + "\n")
        subprocess.run(["text2wave", "-eval", f"(voice_{voice})", str(txt), "-o", str(wav_path)], check=True,
                       capture_output=True)
        info = sf.info(wav_path)
        emit("speech", f"harvard_l{lst:02d}_s{num:02d}_{short}", read_audio(wav_path), info.samplerate,
             transcript=text, source=f"festival {versions['festival']} voice {voice} ({pkg} {versions[pkg]}) reading "
                                     f"Harvard sentence list {lst} no. {num} (IEEE 1969)",
             licence=f"CC0-1.0 (synthesised; text public domain; voice {licence})")

    pieces = [(name, *spec) for name, spec in MELODIES.items()]
    for name, origin, tempo, program, bass, melody in pieces:
        notes, t = [], 0.0
        for note, beats in melody:
            notes.append((t, beats, 0, note, 96))
            t += beats
        notes += [(b, 1, 1, bass, 70) for b in range(0, int(t), 2)]
        write_midi(work / "m.mid", tempo, {0: program, 1: 32}, notes)
        emit("music", f"pd_{name}", render_midi(work / "m.mid", work / "m.wav"), 44100,
             source=f"{origin}; MIDI by make_demo_corpus.py, rendered by fluidsynth {versions['fluidsynth']} with "
                    f"FluidR3_GM ({versions['fluid-soundfont-gm']}), GM program {program}",
             licence="CC0-1.0 (composition public domain; FluidR3_GM soundfont MIT)")
    for i in range(GENERATED_MUSIC):
        tempo, programs, notes, desc = generated_piece(1000 + i)
        write_midi(work / "m.mid", tempo, programs, notes)
        emit("music", f"gen_{i:02d}", render_midi(work / "m.mid", work / "m.wav"), 44100,
             source=f"{desc}; MIDI by make_demo_corpus.py, rendered by fluidsynth {versions['fluidsynth']} with "
                    f"FluidR3_GM ({versions['fluid-soundfont-gm']})",
             licence="CC0-1.0 (generated; FluidR3_GM soundfont MIT)")

    for name, pkg, files, licence, holder in SOUND_CLIPS:
        parts = []
        for f in files:
            parts += [resample(read_audio(os.path.join(SOUNDS, f)), sf.info(os.path.join(SOUNDS, f)).samplerate, SR),
                      torch.zeros(1, int(0.2 * SR))]
        wav = torch.cat(parts[:-1], dim=-1) if len(files) > 1 else parts[0]
        emit("sound", name, wav, SR, source=f"Debian {pkg} {versions[pkg]}: " + ", ".join(f"{SOUNDS}/{f}" for f in files)
             + (" (played in sequence, 0.2 s gaps)" if len(files) > 1 else "") + f"; © {holder}; resampled to 16 kHz "
             "mono, trimmed/padded, peak-normalised", licence=licence)
    return rows


def write_manifests(out: Path, rows: list[dict]) -> None:
    def dump(name: str, subset: list[dict]) -> None:
        (out / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in subset))

    dump("manifest.jsonl", rows)
    for split in ("train", "valid"):
        dump(f"{split}.jsonl", [r for r in rows if r["split"] == split])


def compare(new: Path, old: Path) -> list[str]:
    problems = []
    for name in ("manifest.jsonl", "train.jsonl", "valid.jsonl"):
        if not (old / name).is_file() or (new / name).read_text() != (old / name).read_text():
            problems.append(f"{name} differs")
    for row in map(json.loads, (new / "manifest.jsonl").read_text().splitlines()):
        a, b = new / row["path"], old / row["path"]
        if not b.is_file():
            problems.append(f"{row['path']}: missing")
        elif not np.array_equal(sf.read(a, dtype="int16")[0], sf.read(b, dtype="int16")[0]):
            problems.append(f"{row['path']}: samples differ")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "data" / "demo")
    ap.add_argument("--check", action="store_true", help="render to a temporary folder and compare with --out")
    args = ap.parse_args(argv)
    check_tools()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        target = tmp / "corpus" if args.check else args.out
        if not args.check:
            for domain in ("speech", "music", "sound"):
                shutil.rmtree(target / domain, ignore_errors=True)
        target.mkdir(parents=True, exist_ok=True)
        (tmp / "work").mkdir()
        rows = build(target, tmp / "work")
        write_manifests(target, rows)
        if args.check:
            problems = compare(target, args.out)
            print("\n".join(problems) or f"{args.out}: identical to a fresh rendering ({len(rows)} clips)")
            return 1 if problems else 0
    size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    counts = {d: sum(r["domain"] == d for r in rows) for d in ("speech", "music", "sound")}
    print(f"wrote {len(rows)} clips {counts} to {args.out}: {size / 2**20:.2f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
