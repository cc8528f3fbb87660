"""The training loop: exact resume after SIGKILL, objectives, accumulation, schedules, EMA, --init-from, CLI."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from codecfw.core.checkpoint import latest_checkpoint, read_meta
from codecfw.core.config import validate_recipe
from codecfw.core.training.objectives import (discriminator_loss, feature_matching_loss, generator_adversarial_loss,
                                     weighted_slot_losses)
from codecfw.core.training.trainer import LRSchedule, Trainer

from .training_support import make_corpus, read_metrics, toy_recipe, training_registry

REPO = Path(__file__).resolve().parent.parent


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"))


def _trainer(data: dict, run_dir: Path, **kwargs) -> Trainer:
    registry = training_registry()
    return Trainer(validate_recipe(data, registry), registry=registry, run_dir=run_dir, device="cpu",
                   progress=False, **kwargs).setup()


# ---------------------------------------------------------------------------------------------------------------
# resume
# ---------------------------------------------------------------------------------------------------------------


def _cli(recipe: Path, run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "codecfw.core.cli", "train", str(recipe), "--run-dir", str(run_dir), "--device",
            "cpu", "--no-progress", "--plugin", "codecfw.tests.toy_codec", "--plugin", "codecfw.tests.toy_training"]


def _env() -> dict[str, str]:
    # one thread: bitwise-reproducible CPU kernels across processes; no entry points: only the toy plugins
    return {**os.environ, "OMP_NUM_THREADS": "1", "CODECFW_DISABLE_PLUGIN_AUTOLOAD": "1", "PYTHONUNBUFFERED": "1"}


def test_sigkill_and_restart_gives_the_same_losses_as_an_uninterrupted_run(corpus, tmp_path):
    # diffusion objective: every step draws t and ε from torch's RNG, EMA weights drive validation
    data = toy_recipe(corpus, objective="diffusion", steps=60, valid_every=20, checkpoint_every=10, ema_decay=0.9,
                      keep_last=2)
    recipe = tmp_path / "toy.yaml"
    recipe.write_text(yaml.safe_dump(data))
    # the uninterrupted reference runs beside the run that gets killed (2 cores)
    reference = subprocess.Popen(_cli(recipe, tmp_path / "reference"), env=_env(), stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True)
    run = tmp_path / "killed"
    proc = subprocess.Popen(_cli(recipe, run), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    killed_after = None
    while time.time() < deadline and proc.poll() is None:
        logged = read_metrics(run) if (run / "metrics.jsonl").is_file() else {}
        ckpt = latest_checkpoint(run)
        if ckpt is not None and logged and max(logged) > read_meta(ckpt)["step"] + 2:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            killed_after = max(logged)
            break
        time.sleep(0.01)
    assert killed_after is not None and killed_after < 60, "the run ended before it could be killed"

    resumed = subprocess.run(_cli(recipe, run), env=_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    start = int(resumed.stderr.split("resuming toy at step ")[1].split()[0])
    assert 0 < start < killed_after
    _, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err[-3000:]

    expected, got = read_metrics(tmp_path / "reference"), read_metrics(run)
    assert sorted(got) == sorted(expected) == list(range(1, 61))  # the crashed tail was dropped and redone
    for step in range(1, 61):
        for key in ("loss/generator_total", "loss/diffusion", "loss/commitment", "grad_norm/generator"):
            assert got[step][key] == pytest.approx(expected[step][key], rel=1e-6, abs=1e-9), (step, key)
    valid_expected, valid_got = read_metrics(tmp_path / "reference", "valid"), read_metrics(run, "valid")
    assert sorted(valid_got) == [20, 40, 60]
    for step in valid_got:
        assert valid_got[step]["valid/loss"] == pytest.approx(valid_expected[step]["valid/loss"], rel=1e-6)
    # the weights at the end are the same too
    from safetensors.torch import load_file

    a = load_file(str(latest_checkpoint(tmp_path / "reference") / "model.safetensors"))
    b = load_file(str(latest_checkpoint(run) / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the corrupt file was skipped and reported in the run summary
    assert "skipped (unreadable):" in resumed.stdout and "corrupt.wav" in resumed.stdout
    summary = json.loads((run / "summary.json").read_text())
    assert summary["train_data"]["skipped"] == {"unreadable": 1} and summary["step"] == 60


def test_in_process_resume_of_an_adversarial_run(corpus, tmp_path):
    data = toy_recipe(corpus, steps=8, checkpoint_every=4, valid_every=4, ema_decay=0.8, discriminator_start=2)
    full = _trainer(data, tmp_path / "full")
    full.train()
    half = _trainer({**data, "train": {**data["train"], "steps": 5}}, tmp_path / "half")
    half.train()  # checkpoints at 4 and 5 (the last step)
    import shutil

    shutil.rmtree(tmp_path / "half" / "checkpoints" / "step-00000005")
    resumed = _trainer(data, tmp_path / "half")
    assert resumed.step == 4
    resumed.train()
    a, b = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "half")
    assert sorted(a) == sorted(b) == list(range(1, 9))
    for step in a:
        for key in ("loss/generator_total", "loss/toy_l1"):
            assert b[step][key] == pytest.approx(a[step][key], rel=1e-6), (step, key)
    assert "loss/discriminator" not in a[2] and "loss/discriminator" in a[3]  # discriminator_start=2 (0-based)


def test_a_loss_with_start_step_counts_from_that_step_on(corpus, tmp_path):
    """A loss added to a running recipe (``start_step``) is absent before its step and part of the total after it."""
    data = toy_recipe(corpus, steps=4, checkpoint_every=100, valid_every=100)
    data["losses"] = [{"kind": "toy_l1", "weight": 5.0}, {"kind": "toy_l1", "weight": 1.0, "start_step": 2}]
    _trainer(data, tmp_path / "run").train()
    m = read_metrics(tmp_path / "run")
    assert all("loss/toy_l1_1" not in m[s] for s in (1, 2)) and all("loss/toy_l1_1" in m[s] for s in (3, 4))
    assert m[4]["loss/toy_l1_1"] == pytest.approx(m[4]["loss/toy_l1"])  # the same L1, counted once more
    assert m[4]["loss/generator_total"] > 5 * m[4]["loss/toy_l1"] + 0.9 * m[4]["loss/toy_l1_1"]


# ---------------------------------------------------------------------------------------------------------------
# the step
# ---------------------------------------------------------------------------------------------------------------


def _one_step_params(corpus, tmp_path, name, batch_size, grad_accum):
    data = toy_recipe(corpus, steps=1, valid_every=100, checkpoint_every=100, discriminator_start=0)
    data["data"]["batch_size"] = batch_size
    data["train"]["grad_accum"] = grad_accum
    trainer = _trainer(data, tmp_path / name)
    trainer.train()
    return {k: v.detach().clone() for k, v in trainer.codec.state_dict().items()}, read_metrics(tmp_path / name)[1]


def test_gradient_accumulation_equals_the_larger_batch(corpus, tmp_path):
    big, log_big = _one_step_params(corpus, tmp_path, "big", batch_size=2, grad_accum=1)
    acc, log_acc = _one_step_params(corpus, tmp_path, "acc", batch_size=1, grad_accum=2)
    for k in big:
        torch.testing.assert_close(acc[k], big[k], rtol=1e-4, atol=1e-6, msg=k)
    assert log_acc["loss/generator_total"] == pytest.approx(log_big["loss/generator_total"], rel=1e-5)
    assert log_acc["grad_norm/generator"] == pytest.approx(log_big["grad_norm/generator"], rel=1e-4)


def test_gradient_clipping_bounds_the_update(corpus, tmp_path):
    data = toy_recipe(corpus, steps=1, grad_clip=1e-3, valid_every=100, checkpoint_every=100)
    trainer = _trainer(data, tmp_path / "clip")
    before = [p.detach().clone() for p in trainer.codec.parameters()]
    trainer.train()
    norm = read_metrics(tmp_path / "clip")[1]["grad_norm/generator"]
    assert norm > 1e-3  # the unclipped norm is logged; the step used the clipped gradient
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.codec.parameters()))


def test_lr_schedule_warmup_cosine_exponential():
    warm = LRSchedule(4, "constant", 100, 0.9)
    assert [warm(s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    cos = LRSchedule(0, "cosine", 10, 0.9, min_ratio=0.1)
    assert cos(0) == pytest.approx(1.0) and cos(5) == pytest.approx(0.55) and cos(10) == pytest.approx(0.1)
    assert LRSchedule(2, "exponential", 10, 0.5)(4) == pytest.approx(0.25)


def test_adversarial_losses_by_hand():
    real = [(torch.tensor([1.0, 0.0]), [torch.tensor([1.0, 2.0])])]
    fake = [(torch.tensor([0.5, -1.0]), [torch.tensor([0.0, 4.0])])]
    # LSGAN: mean((1-r)^2) + mean(f^2) = 0.5 + 0.625
    assert float(discriminator_loss(real, fake)) == pytest.approx(1.125)
    assert float(generator_adversarial_loss(fake)) == pytest.approx((0.25 + 4) / 2)
    # hinge: mean(relu(1-r)) + mean(relu(1+f)) = 0.5 + 0.75; generator mean(relu(1-f)) = 1.25
    assert float(discriminator_loss(real, fake, "hinge")) == pytest.approx(1.25)
    assert float(generator_adversarial_loss(fake, "hinge")) == pytest.approx(1.25)
    assert float(feature_matching_loss(real, fake)) == pytest.approx(1.5)


def test_slot_losses_are_weighted_by_name_and_names_must_be_unique():
    from codecfw.core.codec import CodecOutput
    from codecfw.core.types import AcousticOutput, DecoderOutput, SemanticOutput

    out = CodecOutput(SemanticOutput(losses={"a": torch.tensor(2.0)}),
                      AcousticOutput(quantized=torch.zeros(1), losses={"b": torch.tensor(3.0)}), DecoderOutput())
    assert float(weighted_slot_losses(out, {"a": 0.5}).loss) == pytest.approx(1.0 + 3.0)
    out.decoder.losses["a"] = torch.tensor(1.0)
    with pytest.raises(ValueError, match="'a' is produced by both the semantic and the decoder slot"):
        weighted_slot_losses(out, {})


def test_ema_follows_the_weights_and_drives_validation(corpus, tmp_path):
    data = toy_recipe(corpus, steps=3, ema_decay=0.5, valid_every=100, checkpoint_every=100)
    trainer = _trainer(data, tmp_path / "ema")
    shadow0 = {k: v.clone() for k, v in trainer.ema.shadow.items()}
    params = []
    for _ in range(3):  # drive the loop by hand: the EMA recursion s ← s/2 + w/2
        trainer._data = trainer._start_epoch()
        trainer.train_step([trainer._next_batch()])
        trainer.step += 1
        params.append({k: v.detach().clone() for k, v in trainer.codec.named_parameters()})
    for k, s in shadow0.items():
        expected = s
        for p in params:
            expected = 0.5 * expected + 0.5 * p[k]
        torch.testing.assert_close(trainer.ema.shadow[k], expected)
    live = {k: v.detach().clone() for k, v in trainer.codec.named_parameters()}
    with_ema = trainer.validate()["valid/loss"]
    assert all(torch.equal(live[k], v) for k, v in trainer.codec.named_parameters())  # live weights restored
    trainer.ema = None
    assert trainer.validate()["valid/loss"] != with_ema


def test_init_from_loads_weights_only(corpus, tmp_path):
    first = _trainer(toy_recipe(corpus, steps=2, checkpoint_every=2), tmp_path / "first")
    first.train()
    second = _trainer(toy_recipe(corpus, steps=2), tmp_path / "second", init_from=tmp_path / "first")
    assert second.step == 0 and not second.optimizers["generator"].state
    for k, v in first.codec.state_dict().items():
        assert torch.equal(second.codec.state_dict()[k], v), k


def test_adversarial_recipe_without_discriminators_is_an_error(corpus, tmp_path):
    data = toy_recipe(corpus)
    data.pop("discriminators")
    with pytest.raises(ValueError, match="needs 'discriminators"):
        _trainer(data, tmp_path / "x")


def test_validation_writes_clips_and_best_checkpoint(corpus, tmp_path):
    run = tmp_path / "v"
    _trainer(toy_recipe(corpus, steps=4, valid_every=2, checkpoint_every=100, keep_last=1), run).train()
    clips = sorted(p.name for p in (run / "samples" / "step-00000002").iterdir())
    assert clips == ["00-00-reconstruction.flac", "00-00-reference.flac"]
    valid = read_metrics(run, "valid")
    assert sorted(valid) == [2, 4] and all(math.isfinite(v["valid/log_mel_l1"]) for v in valid.values())
    best = json.loads((run / "checkpoints" / "best.json").read_text())
    best_step = min(valid, key=lambda s: valid[s]["valid/loss"])
    assert best["step"] == best_step and (run / "checkpoints" / best["checkpoint"]).is_dir()


def test_training_curves_keep_the_last_record_of_a_replayed_step_and_draw_every_panel(tmp_path):
    from codecfw.core.training.curves import plot_curves, read_metrics, smooth

    run = tmp_path / "run"
    run.mkdir()
    lines = [{"split": "train", "step": s, "loss/mel": 10.0 - s, "lr/generator": 1e-4} for s in (1, 2, 3)]
    # a crash after step 3, resumed from a checkpoint at step 2: steps 3 and 4 are logged again
    lines += [{"split": "train", "step": s, "loss/mel": 100.0 + s, "lr/generator": 1e-4} for s in (3, 4)]
    lines += [{"split": "valid", "step": 4, "valid/log_mel_l1": 0.5}]
    text = "\n".join(json.dumps(x) for x in lines) + '\n{"split": "train", "step": 5, "loss/m'  # cut short
    (run / "metrics.jsonl").write_text(text)
    series = read_metrics(run)
    assert series["train"]["loss/mel"] == [(1, 9.0), (2, 8.0), (3, 103.0), (4, 104.0)]
    assert series["valid"]["valid/log_mel_l1"] == [(4, 0.5)]
    assert smooth([1.0, 2.0, 3.0, float("nan")], 3) == [1.5, 2.0, 2.5, 3.0]
    out = plot_curves(run, tmp_path / "fig" / "curves.png", smooth_window=3)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
    with pytest.raises(FileNotFoundError, match="metrics.jsonl"):
        read_metrics(tmp_path)
