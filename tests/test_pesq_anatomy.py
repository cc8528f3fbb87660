"""scripts/pesq_anatomy.py: each hybrid row takes the decoded clip's piece it names and the reference's rest."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pesq")
spec = importlib.util.spec_from_file_location("pesq_anatomy", Path(__file__).parents[1] / "scripts" / "pesq_anatomy.py")
anatomy = importlib.util.module_from_spec(spec)
spec.loader.exec_module(anatomy)


def _voiced(seconds: float = 3.0, sr: int = 16000) -> np.ndarray:
    """A vowel-like signal: 140 Hz harmonics under two formant-ish bumps, 0.3 s syllables between pauses (PESQ's
    voice activity detector needs them), light noise."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 140 * (1 + 0.05 * np.sin(2 * np.pi * 1.5 * t))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = sum(np.exp(-((k * 140 - 700) / 300) ** 2) * np.cos(k * phase) / k ** 0.5 +
            0.5 * np.exp(-((k * 140 - 2200) / 400) ** 2) * np.cos(k * phase) for k in range(1, 50))
    x *= np.clip(np.sin(2 * np.pi * 1.25 * t) * 4, 0, 1)
    return (0.1 * x / np.abs(x).max() + 1e-4 * rng.standard_normal(len(t))).astype(np.float32)


def test_identical_clip_scores_the_top_everywhere():
    x = _voiced()
    rows = anatomy.pesq_rows(x, x.copy())
    for name, score in rows.items():
        if "smoothed" not in name:
            assert score > 4.3, (name, score)
    # the calibration rows measure smearing of the reference itself: more frames, lower score
    assert rows["reference magnitude smoothed over 5 frames"] < rows["reference magnitude smoothed over 3 frames"]


def test_a_low_pass_codec_loses_only_above_its_cut_off():
    from scipy.signal import butter, sosfiltfilt

    x = _voiced()
    y = sosfiltfilt(butter(10, 1500, fs=16000, output="sos"), x).astype(np.float32)
    rows = anatomy.pesq_rows(x, y)
    # its magnitude below 1 kHz is the reference's: keeping only that piece scores near the top ...
    assert rows["decoded magnitude below 1000 Hz"] > 4.0
    # ... while its magnitude above 2 kHz (where it removed everything) costs the score
    assert rows["decoded magnitude above 2000 Hz"] < rows["decoded magnitude below 1000 Hz"] - 1.0
    # missing energy only: putting back the maximum restores it, keeping the minimum does not
    assert rows["max(decoded, reference): no missing energy"] > 4.0
    assert rows["min(decoded, reference): no added energy"] < 3.5


def test_a_flattened_spectrum_shows_as_peaks_too_low():
    x = _voiced()
    spectrum = np.fft.rfft(x)
    rng = np.random.default_rng(1)
    # same energy, spread: every bin gets the clip's mean magnitude with a random phase
    flat = np.fft.irfft(np.abs(spectrum).mean() * np.exp(2j * np.pi * rng.random(len(spectrum))), len(x))
    strong, weak = anatomy.peak_error_db(x, flat.astype(np.float32))
    assert strong < -10 and weak > 0
    assert anatomy.peak_error_db(x, x.copy()) == (0.0, 0.0)


def test_band_disturbance_is_zero_for_the_reference_and_weighs_added_energy_twice():
    x = _voiced()
    assert np.allclose(anatomy.band_disturbance(x, x.copy()), 0.0)
    rng = np.random.default_rng(1)
    noise = 0.02 * rng.standard_normal(len(x)).astype(np.float32)
    added = anatomy.band_disturbance(x, x + noise)
    assert added.shape == (len(x) // 128 + 1,) and (added >= 0).all()
    # the same loudness change, removed instead of added, costs about half (PESQ's asymmetry)
    quiet = x * 0.5
    louder = anatomy.band_disturbance(quiet, x)     # decoded has more than the reference
    softer = anatomy.band_disturbance(x, quiet)     # decoded has less
    voiced = anatomy.band_disturbance(x, 0 * x) > 0.05
    ratio = louder[voiced].mean() / softer[voiced].mean()
    assert 1.5 < ratio < 2.5 * 0.5 ** -0.23, ratio  # 2× weight; loudness at half amplitude is 0.5^0.23 of it


def test_figure_draws_each_codec_with_its_pesq(tmp_path):
    pytest.importorskip("matplotlib")
    x = _voiced()
    path = tmp_path / "f.png"
    scores = anatomy.draw_figure(path, x, {"same": x.copy(), "lowpass": np.convolve(x, np.ones(8) / 8, "same")})
    assert list(scores) == ["same", "lowpass"] and scores["same"] > 4.4 and scores["lowpass"] < scores["same"] - 0.5
    assert path.stat().st_size > 10_000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
