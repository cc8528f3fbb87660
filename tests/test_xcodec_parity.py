"""X-Codec parity: codecfw loaded with a transformers ``XcodecModel``'s weights, or with the same weights in the
original repository's key layout, gives identical codes and the same waveform (eval mode, tiny random configs);
the converter handles both published layouts."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
import yaml

from codecfw.core.checkpoint import load_checkpoint
from codecfw.core.codec import build_codec
from codecfw.core.config import validate_recipe
from codecfw.plugins.pretrained.xcodec import (ConversionError, codecfw_to_original, convert_xcodec,
                                                        load_original_state, original_to_codecfw,
                                                        recipe_from_transformers, transformers_to_codecfw)

FIXTURES = Path(__file__).parent / "fixtures" / "xcodec"
RTOL = 1e-5


def tiny_hf_xcodec(seed: int = 0):
    """A 0.4M-parameter transformers XcodecModel with random biases, Snake alphas and codebooks (1024 codes, so the
    reference's 10-bit bandwidth arithmetic gives the same 8 quantizers)."""
    from transformers import HubertConfig, XcodecConfig, XcodecModel

    torch.manual_seed(seed)
    teacher = HubertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                           conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    config = XcodecConfig(acoustic_model_config=dict(encoder_hidden_size=8, downsampling_ratios=[8, 5, 4, 2],
                                                     decoder_hidden_size=64, upsampling_ratios=[8, 5, 4, 2],
                                                     hidden_size=16),
                          semantic_model_config=teacher.to_dict(), codebook_size=1024)
    model = XcodecModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("bias", "alpha")):
                p.add_(torch.randn_like(p) * 0.1)
        x = torch.randn(2, 1, 16000) * 0.3
        semantic = model.encoder_semantic(model._extract_semantic_features(x).transpose(1, 2))
        latent = model.fc(torch.cat([model.acoustic_encoder(x), semantic], 1).transpose(1, 2))
        for i, q in enumerate(model.quantizer.quantizers):  # residual scale shrinks with depth
            q.codebook.embed.copy_(torch.randn_like(q.codebook.embed) * latent.std() / 1.5 ** i)
            q.codebook.embed_avg.copy_(q.codebook.embed)
            q.codebook.cluster_size.fill_(1.0)
    return model


@pytest.fixture(scope="module")
def hf_model():
    return tiny_hf_xcodec()


@pytest.fixture(scope="module")
def audio():
    torch.manual_seed(1)
    t = torch.arange(16000) / 16000
    tone = 0.3 * torch.sin(2 * torch.pi * 220 * t) * torch.linspace(0, 1, 16000)
    return torch.stack([tone, 0.2 * torch.randn(16000)]).unsqueeze(1)  # B=2, 1 s, a multiple of the hop


def hf_reference(model, x, bandwidth=None):
    with torch.no_grad():
        codes = model.encode(x, bandwidth, return_dict=False)
        return codes, model.decode(codes, return_dict=False)


def assert_parity(codec, model, x):
    codes, y_ref = hf_reference(model, x)
    with torch.no_grad():
        tokens = codec.encode(x)
        y = codec.decode(tokens, x.shape[-1])
    ours = torch.stack([tokens[f"rvq{i}"] for i in range(codes.shape[1])], 1)
    assert torch.equal(ours, codes), f"{(ours != codes).float().mean():.4f} of the codes differ"
    rel = ((y - y_ref).norm() / y_ref.norm()).item()
    assert rel < RTOL, f"waveform relative error {rel:.2e}"
    return rel


def test_transformers_weights_parity(hf_model, audio):
    recipe = recipe_from_transformers(hf_model.config.to_dict(), "tiny")
    codec = build_codec(validate_recipe(recipe))
    codec.load_state_dict(transformers_to_codecfw(hf_model.state_dict()), strict=True)
    assert [s.name for s in codec.streams()] == [f"rvq{i}" for i in range(8)]
    assert codec.bitrate == pytest.approx(4000)
    assert_parity(codec.eval(), hf_model, audio)

    # a lower bandwidth: the first 2 quantizers, decodable from that prefix of the streams alone
    codec.acoustic.inference_bandwidth = 1.0
    codes, _ = hf_reference(hf_model, audio, bandwidth=1)
    with torch.no_grad():
        semantic = codec.semantic(audio)
        acoustic = codec.acoustic(audio, semantic)
        assert sorted(acoustic.tokens) == ["rvq0", "rvq1"]
        assert torch.equal(torch.stack([acoustic.tokens["rvq0"], acoustic.tokens["rvq1"]], 1), codes)
        y = codec.decoder(semantic, codec.acoustic.from_tokens(acoustic.tokens, semantic), audio.shape[-1])
        y_ref = hf_model.decode(codes, return_dict=False)
    assert ((y - y_ref).norm() / y_ref.norm()).item() < RTOL


def assert_same_weights(codec, hf_model):
    """The checkpoint holds exactly the weights whose parity test_transformers_weights_parity checks."""
    expected = transformers_to_codecfw(hf_model.state_dict())
    got = codec.state_dict()
    assert set(got) == set(expected)
    assert all(torch.equal(got[k], expected[k].to(got[k].dtype)) for k in got)


def test_transformers_directory_converts(hf_model, tmp_path):
    hf_model.save_pretrained(tmp_path / "port")
    out = convert_xcodec(tmp_path / "port", tmp_path / "ckpt", name="xcodec-tiny-port")
    codec, recipe, meta = load_checkpoint(out)
    assert meta["source"]["layout"] == "transformers"
    assert recipe.data.gain == pytest.approx(0.95)
    assert recipe.semantic.teacher_config["hidden_size"] == 32  # the teacher is rebuilt without a download
    assert_same_weights(codec, hf_model)


def _reference_files(hf_model, tmp_path: Path) -> tuple[Path, Path, Path]:
    """The tiny model in the reference repository's layout: a .pth (with the BytesIO entry some published files carry),
    its config.yaml, and a teacher directory holding only config.json."""
    state = codecfw_to_original(transformers_to_codecfw(hf_model.state_dict()))
    state["_extra_buffer"] = io.BytesIO(b"not a tensor")
    torch.save(state, tmp_path / "xcodec_tiny.pth")
    generator = {"n_filters": 32, "D": 16, "target_bandwidths": [0.5, 1, 1.5, 2, 4], "ratios": [8, 5, 4, 2],
                 "sample_rate": 16000, "bins": 1024, "semantic_techer": "hubert_base"}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"generator": {"name": "SoundStream", "config": generator},
                                      "audio_norm_scale": 0.95}))
    teacher = tmp_path / "teacher"
    hf_model.config.semantic_model_config.save_pretrained(teacher)
    return tmp_path / "xcodec_tiny.pth", config, teacher


def test_reference_layout_parity(hf_model, audio, tmp_path):
    pth, config, teacher = _reference_files(hf_model, tmp_path)
    state = load_original_state(pth)
    assert "_extra_buffer" not in state and "encoder.block.0.weight_g" in state
    assert "quantizer.vq.layers.7._codebook.embed" in state and "decoder_2.model.6.weight_v" in state
    out = convert_xcodec(pth, tmp_path / "ckpt", config=config, teacher=str(teacher))
    codec, recipe, meta = load_checkpoint(out)
    assert meta["source"]["layout"] == "xcodec-original"
    assert recipe.acoustic.encoder_channels == 8 and recipe.decoder.channels == 64
    assert_parity(codec, hf_model, audio)
    # and the mapping round-trips exactly
    back = original_to_codecfw(codecfw_to_original(codec.state_dict()))
    assert all(torch.equal(back[k], v) for k, v in codec.state_dict().items())


def test_reference_key_names_match_the_original_code():
    """Key names and shapes of the reference's full-size SoundStream (recorded from its code, fixture) are exactly
    what the codecfw X-Codec recipe's codec maps to, and back."""
    reference = json.loads((FIXTURES / "reference_keys_d256.json").read_text())["keys"]
    data = yaml.safe_load((Path(__file__).parents[1] / "recipes" / "xcodec.yaml").read_text())
    data["semantic"]["teacher_config"] = {"model_type": "hubert", "num_hidden_layers": 1}  # hubert-base widths
    with torch.device("meta"):
        codec = build_codec(validate_recipe(data))
    ours = {k: v for k, v in codec.state_dict().items() if not k.startswith("semantic.teacher.")}
    mapped = {k: list(v.shape) for k, v in codecfw_to_original(ours).items()}
    mapped = {k: ([1] if k.endswith("inited") else v) for k, v in mapped.items()}  # scalar flag vs [1]
    assert mapped == reference
    back = original_to_codecfw({k: torch.empty(v, device="meta") for k, v in reference.items()})
    assert set(back) == set(ours)


def test_converter_errors(tmp_path, hf_model):
    with pytest.raises(ConversionError, match="outside the X-Codec layout: decoder_3.weight"):
        original_to_codecfw({"decoder_3.weight": torch.zeros(1)})
    with pytest.raises(ConversionError, match="outside the transformers"):
        transformers_to_codecfw({"mystery.weight": torch.zeros(1)})

    import datetime

    torch.save({"x": datetime.timedelta(days=1)}, tmp_path / "evil.pth")  # not on weights_only's allow-list
    with pytest.raises(ConversionError, match="refusing to unpickle"):
        load_original_state(tmp_path / "evil.pth")

    pth, _, _ = _reference_files(hf_model, tmp_path)
    (tmp_path / "config.yaml").unlink()
    with pytest.raises(ConversionError, match="name the teacher"):
        convert_xcodec(pth, tmp_path / "out")
    (tmp_path / "port").mkdir()
    (tmp_path / "port" / "config.json").write_text(json.dumps({"model_type": "dac"}))
    with pytest.raises(ConversionError, match="expected 'xcodec'"):
        convert_xcodec(tmp_path / "port", tmp_path / "out2")


def test_import_command(hf_model, tmp_path, capsys):
    from codecfw.core.cli import main

    pth, config, teacher = _reference_files(hf_model, tmp_path)
    config.unlink()  # architecture from the tensor shapes, teacher named on the command line
    assert main(["import", "xcodec", str(pth), "--teacher", str(teacher), "-o", str(tmp_path / "ckpt")]) == 0
    assert "wrote" in capsys.readouterr().out
    codec, recipe, _ = load_checkpoint(tmp_path / "ckpt")
    assert recipe.acoustic.strides == [8, 5, 4, 2] and recipe.data.gain == pytest.approx(0.95)
    assert_same_weights(codec, hf_model)
    assert main(["import", "xcodec", str(tmp_path / "missing.pth"), "-o", str(tmp_path / "x")]) == 2
    assert "missing.pth" in capsys.readouterr().err
