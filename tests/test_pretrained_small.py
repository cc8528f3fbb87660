"""The codec codecfw trained and ships (``codecfw-sacodec-small-16k``, weights inside the package): it loads offline
with nothing but the package, stays within its bitrate and size budgets, and its weights are trained (it
reconstructs audio far better than the same architecture with random weights)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from codecfw.core.cli import main
from codecfw.plugins.pretrained.names import WEIGHTS

NAME = "codecfw-sacodec-small-16k"
FOLDER = WEIGHTS / NAME
RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "sacodec_small_16k_pesq.yaml"  # what it was trained by
SR = 16000


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    """No hub, no teacher files, an empty cache: what a fresh offline install has."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("CODECFW_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))


def vowels(seconds: float = 2.0, seed: int = 0) -> torch.Tensor:
    """A speech-like test signal: a glottal pulse train with a gliding pitch through vowel-like formant
    resonances, with pauses. Synthetic on purpose (no corpus audio in the tests)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    f0 = 110 + 40 * np.sin(2 * np.pi * 0.7 * t)
    phase = np.cumsum(f0 / SR)
    source = (np.diff(np.floor(phase), prepend=0) > 0).astype(np.float64)
    out = np.zeros(n)
    for formant, bw in ((700, 110), (1200, 120), (2600, 160)):  # two-pole resonators (an /a/)
        r = math.exp(-math.pi * bw / SR)
        a1, a2 = -2 * r * math.cos(2 * math.pi * formant / SR), r * r
        y = np.zeros(n)
        for i in range(n):
            y[i] = source[i] - a1 * y[i - 1] - a2 * y[i - 2] if i > 1 else source[i]
        out += y
    envelope = (np.sin(2 * np.pi * 1.5 * t) > -0.3).astype(np.float64)
    out = out * envelope + 0.003 * rng.standard_normal(n)
    return torch.from_numpy(0.3 * out / np.abs(out).max()).float()


def log_mel_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    import torchaudio

    mel = torchaudio.transforms.MelSpectrogram(SR, n_fft=1024, hop_length=256, n_mels=80)
    n = min(a.shape[-1], b.shape[-1])
    return (mel(a[..., :n]).clamp_min(1e-5).log10() - mel(b[..., :n]).clamp_min(1e-5).log10()).abs().mean().item()


def test_shipped_files_are_small_and_self_contained():
    size = (FOLDER / "model.safetensors").stat().st_size
    assert size <= 25 * 2**20, f"{size / 2**20:.1f} MiB"
    meta = json.loads((FOLDER / "meta.json").read_text())
    text = json.dumps(meta["recipe"])
    assert "/root" not in text and "~/" not in text and "/home/" not in text, "paths of the training machine"
    assert meta["recipe"]["semantic"]["codebook"] is None  # the centroids are in the weights
    assert meta["released_as"] == NAME and meta["step"] > 0
    assert meta["recipe"]["name"] == "sacodec-small-16k-pesq"  # RECIPE, the one that fine-tunes it


def test_loads_offline_at_its_bitrate_and_reconstructs_better_than_random_weights():
    import codecfw
    from codecfw.core.codec import build_codec

    tok = codecfw.load(NAME)
    codec = tok.codec
    assert codec.semantic._teacher is None  # building and loading never touched the teacher
    assert codec.bitrate == pytest.approx(1500) and codec.bitrate <= 1500
    y = vowels()
    with torch.inference_mode():
        (tf,) = tok.encode(y[None], SR)
        shipped = tok.decode(tf)[0]
        torch.manual_seed(0)
        random_codec = build_codec(tok.recipe).eval()
        random_out = random_codec.decode(random_codec.encode(y[None, None]), y.numel())
    assert set(tf.tokens) == {"semantic", "acoustic", "pitch"} and tf.tokens["semantic"].shape[-1] == 100  # 50 Hz
    assert tf.tokens["pitch"].shape[-1] == 50 and (tf.tokens["pitch"] > 0).any()  # 25 Hz; the vowels are voiced
    assert codec.acoustic.pitch.tracker == "crepe"  # measured as it was trained (stages 4 and 5)
    trained, untrained = log_mel_distance(y, shipped.reshape(-1)), log_mel_distance(y, random_out.reshape(-1))
    print(f"log-mel distance: shipped {trained:.3f}, random weights {untrained:.3f}")
    assert trained < 0.6 * untrained, (trained, untrained)


def test_cli_round_trip_with_the_name(tmp_path):
    sf.write(tmp_path / "in.wav", vowels(3.0, seed=1).numpy(), SR)
    assert main(["encode", str(tmp_path / "in.wav"), "-o", str(tmp_path / "in.cfwt"), "-c", NAME, "--quiet"]) == 0
    assert main(["decode", str(tmp_path / "in.cfwt"), "-o", str(tmp_path / "out.wav"), "-c", NAME, "--quiet"]) == 0
    info = sf.info(tmp_path / "out.wav")
    assert info.samplerate == SR and info.frames == 3 * SR


def test_fine_tuning_starts_from_the_name(tmp_path, caplog):
    """``codecfw train RECIPE --init-from NAME``: the shipped weights, then training (teacher off: offline)."""
    import logging

    from codecfw.core.checkpoint import read_safetensors

    rows = []
    for i in range(2):
        sf.write(tmp_path / f"v{i}.wav", vowels(1.0, seed=i).numpy(), SR)
        rows.append(json.dumps({"path": f"v{i}.wav", "domain": "speech"}))
    (tmp_path / "train.jsonl").write_text("\n".join(rows) + "\n")
    recipe = RECIPE
    with caplog.at_level(logging.INFO, logger="codecfw"):
        code = main(["train", str(recipe), "--run-dir", str(tmp_path / "run"), "--init-from", NAME, "--no-progress",
                     "semantic.teacher=null", "semantic.codebook=null", f"data.train={tmp_path / 'train.jsonl'}",
                     "data.valid=null", "data.batch_size=2", "train.steps=1", "train.checkpoint_every=1",
                     "train.num_threads=1"])
    assert code == 0
    assert f"initialised the weights from {FOLDER / 'model.safetensors'}" in caplog.text
    shipped = read_safetensors(FOLDER / "model.safetensors")
    trained = read_safetensors(tmp_path / "run" / "checkpoints" / "step-00000001" / "model.safetensors")
    # frozen parts arrive as shipped (the anchor centroids, in float32 now); trained ones moved by one step
    assert torch.equal(trained["semantic.codebook.centroids"], shipped["semantic.codebook.centroids"].float())
    moved = [k for k in shipped if shipped[k].is_floating_point() and not torch.equal(trained[k], shipped[k].float())]
    assert moved
