"""Where a codec loses PESQ: the decoded clip's STFT pieces swapped one at a time with the reference's.

    python scripts/pesq_anatomy.py CODEC --data ~/codecfw-data/corpus/valid.jsonl --domain speech --clips 12

PESQ (P.862.2) compares loudness spectra in Bark bands frame by frame and punishes added energy more than missing
energy, so a codec can beat another on log-mel distance and STOI and still sit at PESQ's floor (docs/training.md,
"Why PESQ stays at its floor"). Each row rebuilds one signal from the decoded clip ``y`` and the reference ``x``
(STFT 1024 / hop 256, Hann) and scores it against ``x``:

* ``decoded``: y itself; ``decoded magnitude + reference phase`` (is it the magnitude or the phase?) and the converse;
* ``decoded magnitude below F Hz`` / ``above F Hz`` (the rest the reference's): which bands cost the score;
* ``decoded envelope + reference fine structure`` and the converse (cepstral envelope, ``--lifter`` coefficients):
  the spectral envelope (formants, tilt) against the harmonic fine structure (pitch, voicing, noise between
  harmonics);
* ``min(decoded, reference)`` / ``max(...)`` magnitudes: only missing / only added energy left;
* ``reference magnitude smoothed over k frames``: how much time smearing alone costs (a calibration row).

It also prints the decoded magnitude's mean dB error on the reference's strongest bins (within 20 dB of the clip's
peak) and on its weak bins (40-60 dB below): a flattened spectrum shows as peaks too low.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

N_FFT, HOP = 1024, 256
BANDS = (300, 1000, 2000, 4000)


def _stft(x: np.ndarray) -> Tensor:
    return torch.stft(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), N_FFT, HOP,
                      window=torch.hann_window(N_FFT), return_complex=True)


def _istft(spec: Tensor, n: int) -> np.ndarray:
    return torch.istft(spec, N_FFT, HOP, window=torch.hann_window(N_FFT), length=n).numpy()


def _envelope(mag: Tensor, lifter: int) -> Tensor:
    """Cepstrally smoothed magnitude: the first ``lifter`` quefrencies of log |X| (Tensor[F x T])."""
    cep = torch.fft.irfft(mag.clamp_min(1e-7).log(), dim=0)
    cep[lifter:cep.shape[0] - lifter + 1] = 0
    return torch.fft.rfft(cep, dim=0).real.exp()


def hybrids(reference: np.ndarray, decoded: np.ndarray, sample_rate: int = 16000, lifter: int = 20
            ) -> dict[str, np.ndarray]:
    """reference, decoded : float arrays [N] at ``sample_rate`` → {row name: signal [N]} (module docstring)."""
    n = len(reference)
    decoded = np.pad(decoded[:n], (0, max(0, n - len(decoded))))
    X, Y = _stft(reference), _stft(decoded)
    xm, ym, phase_x = X.abs(), Y.abs(), torch.exp(1j * torch.angle(X))
    freq = torch.arange(xm.shape[0])[:, None] * sample_rate / N_FFT
    out = {"decoded": decoded,
           "decoded magnitude + reference phase": _istft(ym * phase_x, n),
           "reference magnitude + decoded phase": _istft(xm * torch.exp(1j * torch.angle(Y)), n)}
    for f in BANDS:
        out[f"decoded magnitude below {f} Hz"] = _istft(torch.where(freq < f, ym, xm) * phase_x, n)
        out[f"decoded magnitude above {f} Hz"] = _istft(torch.where(freq < f, xm, ym) * phase_x, n)
    xe, ye = _envelope(xm, lifter), _envelope(ym, lifter)
    out["decoded envelope + reference fine structure"] = _istft(ye * (xm / xe) * phase_x, n)
    out["reference envelope + decoded fine structure"] = _istft(xe * (ym / ye) * phase_x, n)
    out["min(decoded, reference): no added energy"] = _istft(torch.minimum(xm, ym) * phase_x, n)
    out["max(decoded, reference): no missing energy"] = _istft(torch.maximum(xm, ym) * phase_x, n)
    for k in (3, 5):
        smooth = torch.nn.functional.avg_pool1d(xm[None], k, 1, k // 2, count_include_pad=False)[0]
        out[f"reference magnitude smoothed over {k} frames"] = _istft(smooth * phase_x, n)
    return out


def peak_error_db(reference: np.ndarray, decoded: np.ndarray) -> tuple[float, float]:
    """Mean dB error (decoded − reference) on the reference's bins within 20 dB of its peak, and on its bins 40-60 dB
    below it."""
    n = len(reference)
    decoded = np.pad(decoded[:n], (0, max(0, n - len(decoded))))
    lx = 20 * _stft(reference).abs().clamp_min(1e-5).log10()
    ly = 20 * _stft(decoded).abs().clamp_min(1e-5).log10()
    top = lx.max()
    strong, weak = lx > top - 20, (lx < top - 40) & (lx > top - 60)
    return float((ly - lx)[strong].mean()), float((ly - lx)[weak].mean())


def pesq_rows(reference: np.ndarray, decoded: np.ndarray, sample_rate: int = 16000, lifter: int = 20
              ) -> dict[str, float]:
    """PESQ (wide band) of every hybrid against the reference; NaN where PESQ cannot score the clip."""
    from pesq import pesq
    from pesq.cypesq import PesqError

    scores = {}
    for name, signal in hybrids(reference, decoded, sample_rate, lifter).items():
        try:
            scores[name] = float(pesq(sample_rate, reference.astype(np.float32), signal.astype(np.float32), "wb"))
        except PesqError:
            scores[name] = float("nan")
    return scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("codec", help="pretrained name, checkpoint folder or recipe (as `codecfw encode -c`), or an "
                                      "anchor of `codecfw eval --anchors` (codec2-2400, opus-6k, ...)")
    parser.add_argument("--data", type=Path, required=True, help="manifest (JSON lines with path, domain)")
    parser.add_argument("--domain", default="speech")
    parser.add_argument("--clips", type=int, default=12, help="first N clips of the domain longer than 0.6 s")
    parser.add_argument("--lifter", type=int, default=20, help="cepstral coefficients kept for the envelope")
    args = parser.parse_args(argv)

    import codecfw
    from codecfw.core.data.audio import read_audio
    from codecfw.core.data.dataset import read_manifest
    from codecfw.core.evaluation.anchors import build_anchors

    sr = 16000
    if args.codec.split("-")[0] in ("codec2", "opus"):
        anchor = build_anchors([args.codec])[0]
        anchor.check()

        def round_trip(x: Tensor) -> Tensor:
            return anchor.process(x.flatten()).waveform
    else:
        tokenizer = codecfw.load(args.codec)
        codec = tokenizer.codec
        if tokenizer.sample_rate != sr:
            raise SystemExit(f"{args.codec}: PESQ wide band needs 16 kHz; it runs at {tokenizer.sample_rate} Hz")

        def round_trip(x: Tensor) -> Tensor:
            with torch.inference_mode():
                return codec.decode(codec.encode(x.reshape(1, 1, -1)), x.shape[-1])
    picked = []
    for entry in read_manifest(args.data):  # relative paths resolved, bad rows named by file and line
        if entry.domain != args.domain:
            continue
        audio = read_audio(entry.path, sr)[0]
        if audio.shape[-1] >= 0.6 * sr:
            picked.append(audio)
        if len(picked) == args.clips:
            break
    if not picked:
        raise SystemExit(f"{args.data}: no {args.domain!r} clip of at least 0.6 s")
    table: dict[str, list[float]] = {}
    errors = []
    for audio in picked:
        ref, dec = audio.flatten().numpy(), round_trip(audio).flatten().numpy()
        for name, score in pesq_rows(ref, dec, sr, args.lifter).items():
            table.setdefault(name, []).append(score)
        errors.append(peak_error_db(ref, dec))
    width = max(map(len, table))
    print(f"{args.codec}: {len(picked)} {args.domain} clips of {args.data}")
    for name, scores in table.items():
        print(f"{name:<{width}}  PESQ {np.nanmean(scores):.3f}")
    strong, weak = np.mean(errors, axis=0)
    print(f"decoded − reference magnitude: {strong:+.1f} dB on the strongest bins, {weak:+.1f} dB on weak bins")
    return 0


if __name__ == "__main__":
    sys.exit(main())
