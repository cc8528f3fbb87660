"""X-Codec plugins: SSL teacher front-end, DAC encoder + fused EMA RVQ, DAC generator + semantic head,
discriminators, reconstruction losses, and one adversarial step through the training loop's objective."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from codecfw.core.codec import build_codec
from codecfw.core.config import RECIPES_DIR, load_recipe
from codecfw.core.types import BuildContext, SemanticOutput
from codecfw.plugins.nn.dac import DACDecoder
from codecfw.plugins.acoustic.dac_rvq import DACResidualQuantizer, DACRVQConfig
from codecfw.plugins.semantic.ssl_teacher import SSLTeacherConfig, SSLTeacherFrontend, TeacherNotFoundError

TINY_TEACHER = {"model_type": "hubert", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                "intermediate_size": 64, "conv_dim": [16] * 7, "num_conv_pos_embeddings": 16,
                "num_conv_pos_embedding_groups": 2}


def frontend(**kw) -> SSLTeacherFrontend:
    torch.manual_seed(0)
    return SSLTeacherFrontend(SSLTeacherConfig(model="tiny", teacher_config=TINY_TEACHER, **kw), 16000).eval()


def quantizer(**kw) -> DACResidualQuantizer:
    torch.manual_seed(0)
    kw = {"codebook_size": 16, **kw}
    cfg = DACRVQConfig(encoder_channels=4, latent_dim=8, kmeans_iters=3, bits_per_codebook=10, **kw)
    return DACResidualQuantizer(cfg, BuildContext(sample_rate=16000))


@pytest.fixture(scope="module")
def tiny_recipe():
    return load_recipe(RECIPES_DIR / "xcodec_tiny.yaml")


# -- semantic front-end ------------------------------------------------------------------------------------------


def test_teacher_layers_padding_normalisation():
    fe = frontend()
    x = torch.randn(2, 1, 16000) * 0.1
    with torch.no_grad():
        hidden = fe.teacher(F.pad(x[:, 0], (160, 160)), output_hidden_states=True).hidden_states
    assert len(hidden) == 3
    mean = fe.teacher_features(x)
    assert mean.shape == (2, 32, 50)
    torch.testing.assert_close(mean, torch.stack(hidden).mean(0).transpose(1, 2))
    fe_one, fe_set = frontend(layers=-1), frontend(layers=[0, 2])
    torch.testing.assert_close(fe_one.teacher_features(x), hidden[2].transpose(1, 2))
    torch.testing.assert_close(fe_set.teacher_features(x), ((hidden[0] + hidden[2]) / 2).transpose(1, 2))
    # any length: ceil(N / hop) frames, so the acoustic encoder (same right padding) lines up
    assert fe.teacher_features(torch.randn(1, 1, 16100)).shape[-1] == 51
    assert fe.teacher_features(torch.randn(1, 1, 15999)).shape[-1] == 50
    # per-utterance normalisation makes the target gain-invariant; the reference's raw input does not
    norm = frontend(normalize=True)
    torch.testing.assert_close(norm.teacher_features(3 * x), norm.teacher_features(x), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(fe.teacher_features(3 * x), mean, atol=1e-3)
    with pytest.raises(ValueError, match="out of range"):
        frontend(layers=[0, 7])


def test_teacher_stays_frozen_and_in_eval_unless_asked():
    fe = frontend().train()
    assert fe.encoder.training and not fe.teacher.training
    assert not any(p.requires_grad for p in fe.teacher.parameters())
    out = fe(torch.randn(2, 1, 3200))
    assert out.features.shape == (2, 32, 10) and out.features.requires_grad
    assert not out.extras["teacher_features"].requires_grad
    quirk = frontend(teacher_train_mode=True).train()
    assert quirk.teacher.training
    assert not quirk.eval().teacher.training


def test_teacher_from_directory_and_offline_errors(tmp_path):
    from transformers import AutoConfig, HubertModel

    cfg = dict(TINY_TEACHER)
    saved = HubertModel(AutoConfig.for_model(cfg.pop("model_type"), **cfg))
    saved.save_pretrained(tmp_path / "teacher")
    fe = SSLTeacherFrontend(SSLTeacherConfig(model=str(tmp_path / "teacher"), model_class="hubert"), 16000)
    assert all(torch.equal(a, b) for a, b in zip(fe.teacher.state_dict().values(), saved.state_dict().values()))
    with pytest.raises(TeacherNotFoundError, match=r"'nobody/no-such-teacher'.*\n.*models--nobody--no-such-teacher"):
        SSLTeacherFrontend(SSLTeacherConfig(model="nobody/no-such-teacher", local_files_only=True), 16000)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TeacherNotFoundError, match="has no config.json"):
        SSLTeacherFrontend(SSLTeacherConfig(model=str(tmp_path / "empty")), 16000)
    with pytest.raises(ValueError, match="expects 16000 Hz"):
        SSLTeacherFrontend(SSLTeacherConfig(model="x", teacher_config=TINY_TEACHER), 24000)


# -- acoustic quantizer --------------------------------------------------------------------------------------------


def test_bandwidths_map_to_quantizers_and_streams():
    q = quantizer()
    assert [q.quantizers_for(b) for b in (0.5, 1, 1.5, 2, 4)] == [1, 2, 3, 4, 8]
    assert [s.name for s in q.streams()] == [f"rvq{i}" for i in range(8)]
    assert q.frame_rate == 50 and q.hop_length == 320
    assert quantizer(bandwidths=[0.5, 1.0]).num_quantizers == 2


def test_training_step_bandwidth_dropout_kmeans_and_gradients():
    q = quantizer().train()
    x = torch.randn(3, 1, 3323) * 0.1
    seen = set()
    for _ in range(10):
        out = q(x, SemanticOutput())
        seen.add(len(out.tokens))
        assert all(t.shape == (3, 11) for t in out.tokens.values())
    assert seen <= {1, 2, 3, 4, 8} and len(seen) >= 3
    assert all(bool(layer._codebook.initted) for layer in q.quantizer.layers[:1])
    q.zero_grad()
    out.losses["commitment"].backward()
    assert q.encoder.block[0].parametrizations.weight.original1.grad.abs().sum() > 0
    q.eval()
    out = q(x, SemanticOutput())
    assert len(out.tokens) == 8 and not out.losses


def test_ema_update_and_dead_code_revival():
    q = quantizer(bandwidth_dropout=False, kmeans_init=False, codebook_size=64).train()
    x = torch.randn(2, 1, 6400) * 0.1
    codebook = q.quantizer.layers[0]._codebook
    with torch.no_grad():
        latent = q.encode_latent(x, SemanticOutput()).reshape(-1, 8)
        q.eval()(x, SemanticOutput())
        before = codebook.embed.clone()
        q.eval()(x, SemanticOutput())
        assert torch.equal(codebook.embed, before)  # no update outside training
        q.train()(x, SemanticOutput())
    assert not torch.equal(codebook.embed, before)
    dead = codebook.cluster_size[0] < 2
    assert dead.any()  # 40 frames for 64 codes: most codes die and are revived from the batch
    revived = codebook.embed[0][codebook.cluster_size[0] == 2.0]
    distance = (revived[:, None] - latent[None]).norm(dim=-1).min(dim=1).values
    assert revived.shape[0] > 0 and distance.max() < 1e-5


def test_decoding_from_a_prefix_of_the_streams():
    q = quantizer(kmeans_init=False).eval()
    x = torch.randn(2, 1, 3200) * 0.1
    out = q(x, SemanticOutput())
    torch.testing.assert_close(q.from_tokens(out.tokens, SemanticOutput()).quantized, out.quantized)
    two = q.from_tokens({"rvq0": out.tokens["rvq0"], "rvq1": out.tokens["rvq1"]}, SemanticOutput())
    expected = sum(q.quantizer.layers[i].codebook[out.tokens[f"rvq{i}"]] for i in range(2)).transpose(1, 2)
    torch.testing.assert_close(two.quantized, expected)
    with pytest.raises(KeyError, match="prefix"):
        q.from_tokens({"rvq1": out.tokens["rvq1"]}, SemanticOutput())


def test_fusion_concat_order():
    from types import SimpleNamespace

    semantic = SimpleNamespace(feature_dim=4, frame_rate=50.0)
    x = torch.randn(2, 1, 960) * 0.1
    sem = SemanticOutput(features=torch.randn(2, 4, 3))
    for order in ("acoustic_first", "semantic_first"):
        torch.manual_seed(0)
        q = DACResidualQuantizer(DACRVQConfig(encoder_channels=4, latent_dim=8, codebook_size=16, concat_order=order),
                                 BuildContext(sample_rate=16000, semantic=semantic)).eval()
        assert q.quantized_dim == 12 and q.fusion.in_features == 12
        parts = [q.encoder(x), sem.features]
        if order == "semantic_first":
            parts.reverse()
        with torch.no_grad():
            torch.testing.assert_close(q.encode_latent(x, sem), q.fusion(torch.cat(parts, 1).transpose(1, 2)))
    with pytest.raises(ValueError, match="semantic features"):
        q.encode_latent(x, SemanticOutput())


def test_ddp_built_too_early_is_an_error(monkeypatch):
    from codecfw.plugins.acoustic import dac_rvq

    q = quantizer().train()
    monkeypatch.setattr(dac_rvq, "_distributed", lambda: True)
    with pytest.raises(RuntimeError, match="init_process_group"):
        q(torch.randn(1, 1, 640), SemanticOutput())


def _ddp_worker(rank: int, world: int, init: str, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        q = quantizer()  # same weights on both ranks (seeded); built after the process group: synced codebooks
        torch.manual_seed(100 + rank)  # different data and RNG on each rank
        q.train()
        used = []
        for _ in range(3):
            out = q(torch.randn(2, 1, 1600) * 0.1, SemanticOutput())
            used.append(len(out.tokens))
        state = {k: v for k, v in q.state_dict().items() if "_codebook" in k}
        torch.save({"state": state, "used": used}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_codebooks_stay_identical_across_ddp_ranks(tmp_path):
    import torch.multiprocessing as mp

    from codecfw.tests import test_xcodec as importable  # spawn pickles the worker by its module's name

    mp.spawn(importable._ddp_worker, args=(2, f"file://{tmp_path / 'rendezvous'}", str(tmp_path)), nprocs=2, join=True)
    a, b = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert a["used"] == b["used"]  # the same bandwidth on every rank at every step
    assert a["state"].keys() == b["state"].keys()
    for key, value in a["state"].items():
        assert torch.equal(value, b["state"][key]), key
    assert bool(a["state"]["quantizer.layers.0._codebook.initted"])


# -- decoder -----------------------------------------------------------------------------------------------------


def test_generator_upsamples_exactly_with_odd_strides():
    z = torch.randn(1, 16, 7)
    assert DACDecoder(16, 32, (8, 5, 4, 2))(z).shape[-1] == 7 * 320
    assert DACDecoder(16, 32, (8, 5, 4, 2), odd_output_padding=False)(z).shape[-1] < 7 * 320
    assert DACDecoder(16, 32, (8, 5, 4, 2), tanh=True)(z * 100).abs().max() <= 1


def test_codec_forward_lengths_and_semantic_loss(tiny_recipe):
    torch.manual_seed(0)
    codec = build_codec(tiny_recipe).train()
    x = torch.randn(2, 1, 8077) * 0.1
    out = codec(x)
    assert out.decoder.waveform.shape == x.shape
    estimate = codec.decoder.reconstruct_semantic(out.acoustic)
    torch.testing.assert_close(out.decoder.losses["semantic_reconstruction"],
                               F.mse_loss(estimate, out.semantic.extras["teacher_features"]))
    assert set(out.acoustic.losses) == {"commitment"}
    codec.eval()
    tokens = codec.encode(x)
    assert sorted(tokens) == [s.name for s in codec.streams()] and tokens["rvq0"].shape == (2, 26)
    assert codec.decode(tokens, x.shape[-1]).shape == x.shape


# -- discriminators and losses ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind,settings,count,maps", [
    ("multi_frequency", {"hop_lengths": [32, 64], "hidden_channels": [32, 64]}, 2, 6),
    ("multi_period", {"channels": [4, 8, 8]}, 5, 3),
    ("multi_resolution", {"channels": 4}, 3, 5),
])
def test_discriminator_contract(kind, settings, count, maps):
    from codecfw.core.registry import get_registry

    reg = get_registry().get("discriminator", kind)
    disc = reg.build(reg.config(kind=kind, **settings), BuildContext(sample_rate=16000))
    y = (torch.randn(2, 1, 8000) * 0.1).requires_grad_()
    out = disc(y)
    assert len(out) == count
    for logits, features in out:
        assert logits.shape[0] == 2 and logits.shape[1] == 1 and len(features) == maps
        assert all(f.shape[0] == 2 for f in features)
    sum(logits.mean() for logits, _ in out).backward()
    assert y.grad.abs().sum() > 0
    assert all(p.grad is not None for p in disc.parameters())


def test_multi_frequency_input_is_linear_and_db_magnitude():
    from codecfw.plugins.discriminator.frequency import MultiFrequencyDiscriminator, MultiFrequencyDiscriminatorConfig

    disc = MultiFrequencyDiscriminator(MultiFrequencyDiscriminatorConfig(hop_lengths=[64], hidden_channels=[32]))
    spec = disc.spectrogram(torch.randn(2, 16000), 64)
    assert spec.shape[:3] == (2, 2, 129)
    assert 0 <= spec[:, 1].min() and spec[:, 1].max() <= 1  # clamped dB channel
    linear = MultiFrequencyDiscriminator(MultiFrequencyDiscriminatorConfig(hop_lengths=[64], hidden_channels=[32],
                                                                           domain="linear", mel_scale=False))
    assert linear.spectrogram(torch.randn(2, 16000), 64).shape[1] == 1


def test_stft_losses_and_pqmf():
    from codecfw.plugins.loss.mel import MelSpectrogramLoss, MelSpectrogramLossConfig
    from codecfw.plugins.loss.stft import PQMF, MultiResolutionSTFTLoss, MultiResolutionSTFTLossConfig

    torch.manual_seed(0)
    y = torch.sin(2 * torch.pi * 300 * torch.arange(16000) / 16000).reshape(1, 1, -1) * 0.3
    noise = torch.randn_like(y)
    for loss in (MultiResolutionSTFTLoss(MultiResolutionSTFTLossConfig()),
                 MultiResolutionSTFTLoss(MultiResolutionSTFTLossConfig(subbands=6, fft_sizes=[128, 256, 256],
                                                                       win_sizes=[80, 120, 200],
                                                                       hop_sizes=[20, 40, 50])),
                 MelSpectrogramLoss(MelSpectrogramLossConfig(), 16000)):
        assert loss(y, y).item() == pytest.approx(0, abs=1e-6)
        small, large = loss(y + 0.01 * noise, y), loss(y + 0.1 * noise, y)
        assert 0 < small < large
    # a 3.5 kHz tone falls in the third of six 1333 Hz bands
    tone = torch.sin(2 * torch.pi * 3500 * torch.arange(16000) / 16000).reshape(1, 1, -1)
    bands = PQMF(6)(tone)
    assert bands.shape == (1, 6, 16000 // 6 + 1) or bands.shape == (1, 6, -(-16000 // 6))
    assert bands.square().mean(-1).argmax().item() == 2



def test_spectral_convergence_weighs_loud_bins_and_clips():
    """convergence_weight / log_magnitude_weight pick the terms; SC alone barely sees an error in a quiet band that
    log-magnitude L1 weighs like a loud one; per_clip stops the loudest clip from standing for the batch."""
    from pydantic import ValidationError

    from codecfw.plugins.loss.stft import MultiResolutionSTFTLoss, MultiResolutionSTFTLossConfig

    t = torch.arange(16000) / 16000
    loud, quiet = 0.5 * torch.sin(2 * torch.pi * 500 * t), 0.005 * torch.sin(2 * torch.pi * 3000 * t)
    y = (loud + quiet).reshape(1, 1, -1)
    sc = MultiResolutionSTFTLoss(MultiResolutionSTFTLossConfig(log_magnitude_weight=0))
    mag = MultiResolutionSTFTLoss(MultiResolutionSTFTLossConfig(convergence_weight=0))
    both = MultiResolutionSTFTLoss(MultiResolutionSTFTLossConfig())
    no_quiet, weak_loud = loud.reshape(1, 1, -1), (0.7 * loud + quiet).reshape(1, 1, -1)  # -40 dB lost / -3 dB
    assert sc(no_quiet, y) < 0.1 * sc(weak_loud, y)      # SC: the loud band's 3 dB matter far more
    assert mag(no_quiet, y) > mag(weak_loud, y)          # log L1: the lost quiet band matters more
    assert both(weak_loud, y).item() == pytest.approx(sc(weak_loud, y).item() + mag(weak_loud, y).item(), rel=1e-5)
    # a batch of a loud and a quiet clip, the quiet one badly reconstructed: the batch ratio hides it
    batch = torch.cat([y, 0.01 * y])
    wrong = torch.cat([y, 0.005 * y])
    per_clip = MultiResolutionSTFTLoss(MultiResolutionSTFTLossConfig(log_magnitude_weight=0, per_clip=True))
    assert sc(wrong, batch) < 0.01 and per_clip(wrong, batch) > 0.2
    with pytest.raises(ValidationError, match="both 0"):
        MultiResolutionSTFTLossConfig(convergence_weight=0, log_magnitude_weight=0)

# -- one adversarial step through the loop's objective ---------------------------------------------------------------


def test_adversarial_step_through_the_objective(tiny_recipe):
    from codecfw.core.training.objectives import DiscriminatorSet, build_objective
    from codecfw.core.registry import get_registry

    registry = get_registry()
    torch.manual_seed(0)
    codec = build_codec(tiny_recipe).train()
    ctx = BuildContext(sample_rate=16000)
    disc = DiscriminatorSet([registry.build("discriminator", c, ctx) for c in tiny_recipe.discriminators])
    losses = {f"{c.kind}_{i}": (registry.build("loss", c, ctx), c.weight) for i, c in enumerate(tiny_recipe.losses)}
    objective = build_objective("adversarial", codec=codec, discriminator=disc, discriminator_module=disc,
                                losses=losses, loss_weights=tiny_recipe.train.loss_weights)
    objective.begin_step(0)
    batch = {"waveform": torch.randn(2, 1, 4800) * 0.1}
    g = objective.step(batch, "generator")
    g.loss.backward()
    for key in ("loss/semantic_reconstruction", "loss/commitment", "loss/adversarial", "loss/feature_matching"):
        assert torch.isfinite(g.stats[key]), key
    assert codec.decoder.generator.model[0].parametrizations.weight.original1.grad is not None
    assert all(p.grad is None for p in disc.parameters())
    d = objective.step(batch, "discriminator")
    d.loss.backward()
    assert torch.isfinite(d.loss) and all(p.grad is not None for p in disc.parameters())


def test_shipped_recipes_validate(capsys):
    from codecfw.core.cli import main

    assert main(["validate", str(RECIPES_DIR / "xcodec.yaml"), str(RECIPES_DIR / "xcodec_tiny.yaml")]) == 0
    out = capsys.readouterr().out
    assert out.count("ok (ssl_teacher + dac_rvq + dac_generator)") == 2
    recipe = load_recipe(RECIPES_DIR / "xcodec.yaml")
    assert recipe.data.gain == pytest.approx(0.95) and recipe.semantic.teacher_train_mode is False
    assert recipe.train.loss_weights["semantic_reconstruction"] == 100
