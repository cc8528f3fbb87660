"""Encode and decode speed of a codecfw codec on ONE CPU core, beside Opus and Codec2 on the same audio.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/small_codec_speed.py [-c codecfw-sacodec-small-16k]
        [--audio FILE_OR_MANIFEST ...] [--seconds 60] [--rounds 3]

The audio (files or manifests' files, concatenated up to ``--seconds``, resampled to the codec's rate; a synthetic
signal when none is given: speed does not depend on content) is encoded and decoded whole-file through
:class:`codecfw.AudioTokenizer` (the chunked path ``codecfw encode/decode`` use), ``torch.set_num_threads(1)``.
RTF = compute seconds / audio seconds (< 1: faster than real time); the best of ``--rounds`` is reported, loading
excluded (it is printed apart). Peers, timed the same way on the same audio as subprocesses (single-threaded tools):
``opusenc --bitrate 6`` / ``opusdec`` and Codec2 2400 (``c2enc``/``c2dec`` on 8 kHz raw PCM, sox for the rate
change, which is included). The ratio column is codecfw / peer (> 1: codecfw slower).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch


def load_audio(sources: list[str], seconds: float, sample_rate: int) -> torch.Tensor:
    from codecfw.core.data.audio import read_audio
    from codecfw.core.data.dataset import load_entries

    paths: list[str] = []
    for source in sources:
        if source.endswith((".jsonl", ".csv")):
            paths += [e.path for e in load_entries(source)]
        else:
            paths.append(source)
    pieces, total = [], 0
    for path in paths:
        pieces.append(read_audio(path, sample_rate).reshape(-1))
        total += pieces[-1].numel()
        if total >= seconds * sample_rate:
            break
    if not pieces:
        g = torch.Generator().manual_seed(0)
        t = torch.arange(int(seconds * sample_rate)) / sample_rate
        return 0.2 * torch.sin(2 * torch.pi * 180 * t) + 0.02 * torch.randn(t.shape, generator=g)
    return torch.cat(pieces)[: int(seconds * sample_rate)]


def best_of(rounds: int, fn) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def peer_times(wave: np.ndarray, sample_rate: int, rounds: int) -> dict[str, tuple[float, float]]:
    out: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.wav"
        sf.write(src, wave, sample_rate, subtype="PCM_16")
        run = lambda *cmd: subprocess.run(cmd, check=True, capture_output=True)  # noqa: E731
        if shutil.which("opusenc") and shutil.which("opusdec"):
            enc = best_of(rounds, lambda: run("opusenc", "--quiet", "--bitrate", "6", str(src), f"{tmp}/a.opus"))
            dec = best_of(rounds, lambda: run("opusdec", "--quiet", "--rate", str(sample_rate), f"{tmp}/a.opus",
                                              f"{tmp}/a.wav"))
            out["opus 6 kbps"] = (enc, dec)
        if shutil.which("c2enc") and shutil.which("c2dec") and shutil.which("sox"):
            def c2_enc():
                run("sox", str(src), "-r", "8000", "-t", "raw", "-e", "signed", "-b", "16", f"{tmp}/a.raw")
                run("c2enc", "2400", f"{tmp}/a.raw", f"{tmp}/a.c2")

            def c2_dec():
                run("c2dec", "2400", f"{tmp}/a.c2", f"{tmp}/b.raw")
                run("sox", "-r", "8000", "-t", "raw", "-e", "signed", "-b", "16", "-c", "1", f"{tmp}/b.raw", "-r",
                    str(sample_rate), f"{tmp}/b.wav")

            out["codec2 2400"] = (best_of(rounds, c2_enc), best_of(rounds, c2_dec))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--checkpoint", default="codecfw-sacodec-small-16k",
                        help="pretrained name, checkpoint folder or run directory")
    parser.add_argument("--audio", nargs="*", default=[], help="audio files or manifests (default: synthetic)")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    import codecfw

    start = time.perf_counter()
    tok = codecfw.load(args.checkpoint)
    load_s = time.perf_counter() - start
    wave = load_audio(args.audio, args.seconds, tok.sample_rate)
    seconds = wave.numel() / tok.sample_rate
    box: dict = {}
    with torch.inference_mode():
        enc = best_of(args.rounds, lambda: box.update(tf=tok.encode(wave[None], tok.sample_rate)[0]))
        dec = best_of(args.rounds, lambda: box.update(y=tok.decode(box["tf"])[0]))
    figures = {"codecfw": (enc, dec), **peer_times(wave.numpy(), tok.sample_rate, args.rounds)}
    print(f"{args.checkpoint}: {seconds:.1f} s of audio at {tok.sample_rate} Hz, {args.threads} thread(s), best of "
          f"{args.rounds}; bitrate {tok.codec.bitrate / 1000:.2f} kbps; loading took {load_s:.2f} s (not counted)")
    print(f"{'system':<14} {'encode RTF':>11} {'decode RTF':>11} {'x real time (enc/dec)':>22} "
          f"{'codecfw/peer (enc/dec)':>23}")
    for name, (e, d) in figures.items():
        ratio = "" if name == "codecfw" else f"{enc / e:.1f} / {dec / d:.1f}"
        print(f"{name:<14} {e / seconds:>11.4f} {d / seconds:>11.4f} {seconds / e:>10.1f} / {seconds / d:<9.1f} "
              f"{ratio:>23}")
    if args.json:
        print(json.dumps({k: {"encode_rtf": e / seconds, "decode_rtf": d / seconds} for k, (e, d) in figures.items()}))


if __name__ == "__main__":
    main()
