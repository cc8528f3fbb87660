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

``--figure PNG`` draws one clip (``--figure-clip``) as spectrograms (the reference, this codec, each ``--compare``
codec) over a frame-by-frame disturbance: loudness (power^0.23, Zwicker's exponent as in PESQ) in 21 log-spaced bands
from 100 Hz to 7 kHz, added loudness weighted twice (PESQ's asymmetry, crudely). PESQ aggregates its disturbances
with high-order norms over time, so a few bad stretches (vowels drawn as noise) cost more than their share.

    python scripts/pesq_anatomy.py CKPT --data valid.jsonl --clips 16 --figure f.png --compare codec2-2400
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


def band_disturbance(reference: np.ndarray, decoded: np.ndarray, sample_rate: int = 16000, n_fft: int = 512,
                     hop: int = 128, bands: int = 21) -> np.ndarray:
    """reference, decoded : float arrays [N] → per-frame disturbance [T] (module docstring, ``--figure``): mean over
    log-spaced bands of |loudness difference|, an excess counted twice. 0 for identical signals."""
    n = len(reference)
    decoded = np.pad(decoded[:n], (0, max(0, n - len(decoded))))
    window = torch.hann_window(n_fft)
    power = [torch.stft(torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)), n_fft, hop, window=window,
                        return_complex=True).abs().square() for v in (reference, decoded)]
    edges = np.unique(np.round(np.geomspace(100, 7000, bands + 1) * n_fft / sample_rate).astype(int))
    loud = [torch.stack([p[a:b].sum(0) for a, b in zip(edges[:-1], edges[1:])]).add(1e-7).pow(0.23) for p in power]
    d = loud[1] - loud[0]
    return torch.where(d > 0, 2 * d, -d).mean(0).numpy()


def draw_figure(path: Path, reference: np.ndarray, decoded: dict[str, np.ndarray], sample_rate: int = 16000,
                max_hz: float = 6000.0) -> dict[str, float]:
    """Spectrograms of the reference and each decoded signal (``decoded``: title → signal) over their
    disturbance curves (:func:`band_disturbance`), PESQ in each title. Returns {title: PESQ}."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from pesq import pesq

    n_fft, hop = 512, 128
    bins = int(max_hz * n_fft / sample_rate)
    window = torch.hann_window(n_fft)

    def db(v: np.ndarray) -> np.ndarray:
        spec = torch.stft(torch.from_numpy(np.ascontiguousarray(v[:len(reference)], dtype=np.float32)), n_fft, hop,
                          window=window, return_complex=True).abs()[:bins]
        return 20 * np.log10(spec.numpy() + 1e-5)

    top = db(reference).max()
    fig, axes = plt.subplots(len(decoded) + 2, 1, figsize=(12, 2.6 * (len(decoded) + 2)), sharex=True)
    extent = (0, len(reference) / sample_rate, 0, max_hz / 1000)
    axes[0].imshow(db(reference), origin="lower", aspect="auto", vmin=top - 70, vmax=top, extent=extent)
    axes[0].set_title("reference")
    scores = {}
    for ax, (name, signal) in zip(axes[1:], decoded.items()):
        scores[name] = pesq(sample_rate, reference, signal[:len(reference)], "wb")
        ax.imshow(db(signal), origin="lower", aspect="auto", vmin=top - 70, vmax=top, extent=extent)
        ax.set_title(f"{name}: PESQ {scores[name]:.2f}")
        curve = band_disturbance(reference, signal, sample_rate, n_fft, hop)
        axes[-1].plot(np.arange(len(curve)) * hop / sample_rate, curve, label=name)
    for ax in axes[:-1]:
        ax.set_ylabel("kHz")
    axes[-1].set_ylabel("disturbance")
    axes[-1].set_xlabel("s")
    axes[-1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return scores


def round_trip_for(codec: str, sample_rate: int = 16000):
    """``codec`` (pretrained name, checkpoint folder, recipe, or a ``codecfw eval`` anchor such as codec2-2400) →
    a function Tensor[N] → decoded Tensor at ``sample_rate``."""
    import codecfw
    from codecfw.core.evaluation.anchors import build_anchors

    if codec.split("-")[0] in ("codec2", "opus"):
        anchor = build_anchors([codec])[0]
        anchor.check()
        return lambda x: torch.as_tensor(anchor.process(x.flatten()).waveform)
    tokenizer = codecfw.load(codec)
    model = tokenizer.codec
    if tokenizer.sample_rate != sample_rate:
        raise SystemExit(f"{codec}: PESQ wide band needs {sample_rate} Hz; it runs at {tokenizer.sample_rate} Hz")

    def round_trip(x: Tensor) -> Tensor:
        with torch.inference_mode():
            return model.decode(model.encode(x.reshape(1, 1, -1)), x.shape[-1])
    return round_trip


def pick_clips(manifest: Path, domain: str, count: int, sample_rate: int = 16000) -> list[Tensor]:
    """The first ``count`` clips of ``domain`` at least 0.6 s long (PESQ needs speech and pauses)."""
    from codecfw.core.data.audio import read_audio
    from codecfw.core.data.dataset import read_manifest

    picked = []
    for entry in read_manifest(manifest):  # relative paths resolved, bad rows named by file and line
        if entry.domain != domain:
            continue
        audio = read_audio(entry.path, sample_rate)[0]
        if audio.shape[-1] >= 0.6 * sample_rate:
            picked.append(audio)
        if len(picked) == count:
            break
    if not picked:
        raise SystemExit(f"{manifest}: no {domain!r} clip of at least 0.6 s")
    return picked


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("codec", help="pretrained name, checkpoint folder or recipe (as `codecfw encode -c`), or an "
                                      "anchor of `codecfw eval --anchors` (codec2-2400, opus-6k, ...)")
    parser.add_argument("--data", type=Path, required=True, help="manifest (JSON lines with path, domain)")
    parser.add_argument("--domain", default="speech")
    parser.add_argument("--clips", type=int, default=12, help="first N clips of the domain longer than 0.6 s")
    parser.add_argument("--lifter", type=int, default=20, help="cepstral coefficients kept for the envelope")
    parser.add_argument("--figure", type=Path, help="PNG: one clip's spectrograms and disturbance (docstring)")
    parser.add_argument("--figure-clip", type=int, default=0, help="which of the picked clips --figure draws")
    parser.add_argument("--figure-seconds", type=float, default=3.0, help="how much of it")
    parser.add_argument("--compare", nargs="*", default=[], help="other codecs or anchors drawn in --figure")
    args = parser.parse_args(argv)

    round_trip = round_trip_for(args.codec)
    picked = pick_clips(args.data, args.domain, args.clips)
    table: dict[str, list[float]] = {}
    errors = []
    for audio in picked:
        ref, dec = audio.flatten().numpy(), round_trip(audio).flatten().numpy()
        for name, score in pesq_rows(ref, dec, 16000, args.lifter).items():
            table.setdefault(name, []).append(score)
        errors.append(peak_error_db(ref, dec))
    width = max(map(len, table))
    print(f"{args.codec}: {len(picked)} {args.domain} clips of {args.data}")
    for name, scores in table.items():
        print(f"{name:<{width}}  PESQ {np.nanmean(scores):.3f}")
    strong, weak = np.mean(errors, axis=0)
    print(f"decoded − reference magnitude: {strong:+.1f} dB on the strongest bins, {weak:+.1f} dB on weak bins")
    if args.figure is not None:
        if not 0 <= args.figure_clip < len(picked):
            raise SystemExit(f"--figure-clip {args.figure_clip}: only {len(picked)} clips were picked")
        clip = picked[args.figure_clip][..., :int(args.figure_seconds * 16000)]
        decoded = {args.codec: round_trip(clip).flatten().numpy()}
        # a checkpoint folder is titled by its folder name
        decoded.update({Path(name).name if Path(name).exists() else name: round_trip_for(name)(clip).flatten().numpy()
                        for name in args.compare})
        draw_figure(args.figure, clip.flatten().numpy(), decoded)
        print(f"wrote {args.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
