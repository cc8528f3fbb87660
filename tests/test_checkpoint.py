"""Checkpoint files: atomic folders, pruning that keeps the best, safe loading, clear errors."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from torch import nn

from codecfw.core import checkpoint as ckpt
from codecfw.core.training.distributed import rng_state, set_rng_state


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    model.register_buffer("ema_codebook", torch.randn(5, 2))
    return model


def _save(run, step, model, **meta):
    return ckpt.save_checkpoint(run, step, {"model": model}, {"note": "x", **meta}, {"step": step,
                                                                                     "rng": [rng_state()]})


def test_round_trip_weights_buffers_meta_and_state(tmp_path):
    model = _model(0)
    path = _save(tmp_path, 7, model)
    assert path.name == "step-00000007" and ckpt.latest_checkpoint(tmp_path) == path
    other = _model(1)
    ckpt.load_weights(other, path / "model.safetensors")
    for k, v in model.state_dict().items():
        assert torch.equal(other.state_dict()[k], v), k  # buffers (EMA codebooks) included
    meta = ckpt.read_meta(path)
    assert meta["step"] == 7 and meta["note"] == "x" and meta["format"] == "codecfw-checkpoint"
    state = ckpt.load_state(path)  # weights_only=True inside
    assert state["step"] == 7


def test_rng_states_survive_a_weights_only_round_trip(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    path = _save(tmp_path, 1, _model())
    expected = random.random(), float(np.random.rand()), float(torch.rand(1))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    set_rng_state(ckpt.load_state(path)["rng"][0])
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected


def test_interrupted_write_is_ignored_and_cleaned(tmp_path):
    good = _save(tmp_path, 10, _model())
    # a crash during the write of step 20 leaves only the temporary folder (no rename happened)
    partial = tmp_path / "checkpoints" / ".tmp-step-00000020-12345"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"\0" * 10)
    # a folder with the final name but no meta.json is not a checkpoint either
    (tmp_path / "checkpoints" / "step-00000030").mkdir()
    assert ckpt.latest_checkpoint(tmp_path) == good
    assert partial in ckpt.remove_incomplete(tmp_path) and not partial.exists()


def test_saving_the_same_step_twice_replaces_it(tmp_path):
    _save(tmp_path, 5, _model(0))
    path = _save(tmp_path, 5, _model(1))
    other = _model(2)
    ckpt.load_weights(other, path / "model.safetensors")
    assert torch.equal(other[0].weight, _model(1)[0].weight)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-00000005"]


def test_pruning_keeps_the_last_n_and_the_best(tmp_path):
    paths = [_save(tmp_path, s, _model()) for s in (1, 2, 3, 4, 5)]
    ckpt.mark_best(tmp_path, paths[1], 0.5)
    removed = ckpt.prune_checkpoints(tmp_path, keep_last=2)
    assert sorted(p.name for p in removed) == ["step-00000001", "step-00000003"]
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-00000002", "step-00000004", "step-00000005"]
    assert json.loads((tmp_path / "checkpoints" / "best.json").read_text())["step"] == 2


def test_shape_mismatch_names_file_and_tensor(tmp_path):
    path = _save(tmp_path, 1, _model())
    wrong = nn.Sequential(nn.Linear(3, 8), nn.Linear(8, 2))
    wrong.register_buffer("ema_codebook", torch.zeros(5, 2))
    with pytest.raises(ValueError, match=r"model\.safetensors.*0\.weight: file \(4, 3\) vs model \(8, 3\)"):
        ckpt.load_weights(wrong, path / "model.safetensors")
    extra = _model()
    extra.register_buffer("new_buffer", torch.zeros(1))
    with pytest.raises(KeyError, match="missing \\['new_buffer'\\]"):
        ckpt.load_weights(extra, path / "model.safetensors")


def test_init_from_accepts_run_dir_checkpoint_and_file_and_prefers_ema(tmp_path):
    model = _model(0)
    shadow = {"0.weight": torch.full((4, 3), 7.0)}
    path = ckpt.save_checkpoint(tmp_path, 3, {"model": model, "ema": shadow}, {}, {})
    for source in (tmp_path, path):
        target = _model(1)
        ckpt.load_codec_weights(target, source)
        assert torch.equal(target[0].weight, shadow["0.weight"]) and torch.equal(target[1].weight, model[1].weight)
    target = _model(1)
    ckpt.load_codec_weights(target, path / "model.safetensors")
    assert torch.equal(target[0].weight, model[0].weight)
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        ckpt.resolve_weights_file(tmp_path / "checkpoints")


def test_not_a_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "meta.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a codecfw checkpoint"):
        ckpt.read_meta(tmp_path)
