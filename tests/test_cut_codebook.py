"""scripts/cut_codebook.py: a stage-1 checkpoint (2^16 SimVQ codes) becomes a valid start for the pitch recipe
(2^14 codes), its codebook the first rows of the old one and every other weight unchanged."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from codecfw.core.checkpoint import load_codec_weights, read_safetensors
from codecfw.core.codec import build_codec
from codecfw.core.config import load_recipe

pytest.importorskip("vocos")
spec = importlib.util.spec_from_file_location("cut_codebook", Path(__file__).parents[1] / "scripts" / "cut_codebook.py")
cut_codebook = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cut_codebook)
NO_TEACHER = ["semantic.teacher=null", "semantic.codebook=null"]
KEY = "acoustic.vq.frozen_codebook"


def test_cut_checkpoint_loads_into_the_smaller_codebook_recipe(tmp_path):
    stage1 = build_codec(load_recipe("sacodec_small_16k", NO_TEACHER))
    state = {k: v.contiguous() for k, v in stage1.state_dict().items()}
    assert state[KEY].shape[0] == 2 ** 16
    ckpt = tmp_path / "step-1"
    ckpt.mkdir()
    save_file(state, str(ckpt / "model.safetensors"))
    save_file({k: v + 1 for k, v in state.items() if v.is_floating_point()}, str(ckpt / "ema.safetensors"))
    (ckpt / "meta.json").write_text(json.dumps({"step": 1}))

    written = cut_codebook.cut(ckpt, 2 ** 14, tmp_path / "init")
    assert written == ["model.safetensors", "ema.safetensors", "meta.json"]
    cut = read_safetensors(tmp_path / "init" / "model.safetensors")
    assert torch.equal(cut[KEY], state[KEY][: 2 ** 14])
    assert all(torch.equal(cut[k], v) for k, v in state.items() if k != KEY)
    assert torch.equal(read_safetensors(tmp_path / "init" / "ema.safetensors")[KEY], state[KEY][: 2 ** 14] + 1)
    # an EMA shadow without the (frozen, untrained) codebook is copied as it is
    save_file({k: v for k, v in state.items() if k != KEY}, str(ckpt / "ema.safetensors"))
    cut_codebook.cut(ckpt, 2 ** 14, tmp_path / "init")
    assert KEY not in read_safetensors(tmp_path / "init" / "ema.safetensors")

    pitch = build_codec(load_recipe("sacodec_small_16k_pitch", NO_TEACHER))
    load_codec_weights(pitch, tmp_path / "init", prefer_ema=False, allow_missing=True)
    assert torch.equal(pitch.state_dict()[KEY], state[KEY][: 2 ** 14])

    with pytest.raises(SystemExit, match="cannot keep"):
        cut_codebook.cut(ckpt, 2 ** 17, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()  # nothing half-written
