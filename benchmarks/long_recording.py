"""Long recordings: peak memory and real-time factor of chunked encode/decode of a synthetic 1-hour file.

    .venv/bin/python benchmarks/long_recording.py [--small] [--checkpoint CKPT] [--no-peer]

Writes a synthetic recording (speech-like tone bursts + noise) block by block, then runs each measurement in a fresh
Python process so ``ru_maxrss`` is that step's own peak:

* ``baseline``: import codecfw, build/load the codec, nothing else (the floor every step pays);
* ``encode``: ``AudioTokenizer.encode_file`` (streamed, chunked) → a token file;
* ``decode``: ``AudioTokenizer.decode_to_file`` (chunked, streamed into a FLAC);
* peers (unless ``--no-peer``): the same with ``chunked=False`` on the whole waveform held in memory.

It prints peak RSS above the baseline, the real-time factor (wall time / audio duration; lower is faster), the
chunked/whole ratios, and checks the stated bound: chunked peak RSS ≤ baseline + ``BOUND_MB``, for any duration.
Without ``--checkpoint`` the codec is the framework's toy codec (untrained): its compute is negligible, so the
figures measure codecfw's own overhead (I/O, resampling, windowing, packing), not a real model's speed.
``--small`` uses 6 minutes instead of 60.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: The stated bound: chunked encode/decode stay within this many MiB above the baseline process, whatever the
#: duration (a 30 s window, 1 s context, batch 8: ~16 MB of audio per batch, plus allocator slack).
BOUND_MB = 300


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _tokenizer(checkpoint: str | None):
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    if checkpoint:
        from codecfw import load

        return load(checkpoint)
    from codecfw.core.tokenizer.api import AudioTokenizer
    from codecfw.core.config import validate_recipe
    from codecfw.core.registry import Registry
    from codecfw.tests import toy_codec

    registry = Registry(strict=True)
    registry.register_module(toy_codec, name="toy_codec")
    torch.manual_seed(0)
    return AudioTokenizer.from_recipe(validate_recipe(toy_codec.TOY_RECIPE, registry), registry)


def worker(args) -> None:
    tok = _tokenizer(args.checkpoint)
    start = time.perf_counter()
    result: dict = {}
    if args.worker == "encode":
        tf = tok.encode_file(args.audio, batch_size=args.batch_size)
        tf.save(args.tokens)
        result["frames"] = tf.lengths()
    elif args.worker == "encode-whole":
        import soundfile as sf
        import torch

        wave, sr = sf.read(args.audio, dtype="float32")
        tf = tok.encode(torch.from_numpy(wave), sr, chunked=False)[0]
        tf.save(args.tokens)
    elif args.worker == "decode":
        from codecfw.core.tokenizer.tokens import TokenFile

        tok.decode_to_file(TokenFile.load(args.tokens), args.output, batch_size=args.batch_size)
    elif args.worker == "decode-whole":
        import soundfile as sf

        from codecfw.core.tokenizer.tokens import TokenFile

        wave = tok.decode(TokenFile.load(args.tokens), chunked=False)[0]
        sf.write(args.output, wave.reshape(-1).clamp(-1, 1).numpy(), tok.sample_rate, subtype="PCM_16")
    result.update(wall=time.perf_counter() - start, peak_mb=_rss_mb(), sample_rate=tok.sample_rate,
                  policy={"window": tok.policy.window, "context": tok.policy.context, "overlap": tok.policy.overlap})
    print(json.dumps(result))


def synthesize(path: Path, seconds: float, rate: int) -> None:
    """Tone bursts over pink-ish noise, written in 10 s blocks (the generator itself stays small)."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(0)
    block = 10 * rate
    t0 = 0
    with sf.SoundFile(path, "w", samplerate=rate, channels=1, subtype="PCM_16") as fh:
        while t0 < seconds * rate:
            n = min(block, int(seconds * rate) - t0)
            t = (t0 + np.arange(n)) / rate
            f0 = 120 + 80 * np.sin(2 * np.pi * 0.1 * t)
            env = (np.sin(2 * np.pi * 2.5 * t) > 0).astype(np.float32)
            x = 0.3 * env * np.sin(2 * np.pi * np.cumsum(f0) / rate) + 0.02 * rng.standard_normal(n)
            fh.write(x.astype(np.float32))
            t0 += n


def run_step(name: str, args, **paths) -> dict:
    cmd = [sys.executable, __file__, "--worker", name, "--batch-size", str(args.batch_size)]
    if args.checkpoint:
        cmd += ["--checkpoint", args.checkpoint]
    for key, value in paths.items():
        cmd += [f"--{key}", str(value)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="6 minutes instead of 60")
    parser.add_argument("--minutes", type=float, default=None)
    parser.add_argument("--checkpoint", default=None, help="a checkpoint or pretrained name (default: toy codec)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--no-peer", action="store_true", help="skip the whole-file (unchunked) comparison")
    parser.add_argument("--keep", default=None, help="keep the files in this folder")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    for hidden in ("audio", "tokens", "output"):
        parser.add_argument(f"--{hidden}", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    minutes = args.minutes or (6.0 if args.small else 60.0)
    folder = Path(args.keep or tempfile.mkdtemp(prefix="codecfw-long-"))
    folder.mkdir(parents=True, exist_ok=True)
    base = run_step("baseline", args)
    rate = base["sample_rate"]
    audio = folder / "long.wav"
    t = time.perf_counter()
    synthesize(audio, minutes * 60, rate)
    seconds = minutes * 60
    print(f"synthetic recording: {minutes:g} min at {rate} Hz ({audio.stat().st_size / 2**20:.0f} MiB on disk), "
          f"written in {time.perf_counter() - t:.1f} s")
    print(f"baseline process (imports + codec): {base['peak_mb']:.0f} MiB; chunk policy {base['policy']}")
    rows = []
    enc = run_step("encode", args, audio=audio, tokens=folder / "long.cfwt")
    dec = run_step("decode", args, tokens=folder / "long.cfwt", output=folder / "decoded.flac")
    rows += [("encode, chunked", enc), ("decode, chunked", dec)]
    if not args.no_peer:
        enc_w = run_step("encode-whole", args, audio=audio, tokens=folder / "whole.cfwt")
        dec_w = run_step("decode-whole", args, tokens=folder / "whole.cfwt", output=folder / "whole.wav")
        rows += [("encode, whole file", enc_w), ("decode, whole file", dec_w)]
        same = _same_tokens(folder / "long.cfwt", folder / "whole.cfwt")
    print(f"\n{'step':<22}{'peak RSS':>12}{'above base':>13}{'wall s':>9}{'RTF':>10}{'x real time':>13}")
    for name, r in rows:
        print(f"{name:<22}{r['peak_mb']:>9.0f} MiB{r['peak_mb'] - base['peak_mb']:>9.0f} MiB{r['wall']:>9.1f}"
              f"{r['wall'] / seconds:>10.4f}{seconds / r['wall']:>13.1f}")
    if not args.no_peer:
        print(f"\nratio chunked/whole: encode peak RSS above base "
              f"{(enc['peak_mb'] - base['peak_mb']) / max(1.0, enc_w['peak_mb'] - base['peak_mb']):.3f}, "
              f"decode {(dec['peak_mb'] - base['peak_mb']) / max(1.0, dec_w['peak_mb'] - base['peak_mb']):.3f}; "
              f"RTF encode {enc['wall'] / enc_w['wall']:.2f}, decode {dec['wall'] / dec_w['wall']:.2f}; "
              f"tokens identical: {same}")
    worst = max(enc["peak_mb"], dec["peak_mb"]) - base["peak_mb"]
    verdict = "holds" if worst <= BOUND_MB else "VIOLATED"
    print(f"bound: chunked peak RSS <= baseline + {BOUND_MB} MiB for any duration: {verdict} "
          f"(worst {worst:.0f} MiB above baseline over {minutes:g} min)")
    if not args.keep:
        for p in folder.iterdir():
            p.unlink()
        folder.rmdir()
    if verdict != "holds":
        sys.exit(1)


def _same_tokens(a: Path, b: Path) -> bool:
    import numpy as np

    from codecfw.core.tokenizer.tokens import TokenFile

    x, y = TokenFile.load(a), TokenFile.load(b)
    return all(np.array_equal(x.tokens[k], y.tokens[k]) for k in x.tokens)


if __name__ == "__main__":
    main()
