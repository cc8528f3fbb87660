"""SemantiCodec's latent diffusion decoder: parity with the reference (tests/fixtures/semanticodec, computed by
haoheliu/SemantiCodec-inference@7c05d42 with weights rebuilt by regen.py) and the behaviour codecfw chooses where it
differs (window placement, seeded η, batched windows and guidance, samplers, training loss)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from codecfw.core.types import AcousticOutput, BuildContext, SemanticOutput
from codecfw.plugins.decoder.diffusion_schedule import (make_scheduler, reference_schedule_buffers,
                                                        reference_timesteps, set_timesteps, training_alphas_cumprod)
from codecfw.plugins.decoder.latent_diffusion import LatentDiffusionDecoder, LatentDiffusionDecoderConfig
from codecfw.plugins.decoder.official_keys import check_official_schedule

FIXTURES = Path(__file__).parent / "fixtures" / "semanticodec"
_spec = importlib.util.spec_from_file_location("semanticodec_regen", FIXTURES / "regen.py")
regen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(regen)


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """These tests run many small diffusion steps; on a shared 2-core machine two OpenMP threads contending with other
    processes ran them up to 7x slower than one (measured). Results do not depend on the thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def fixture(case: str):
    from safetensors.torch import load_file

    return json.loads((FIXTURES / f"{case}.json").read_text()), load_file(str(FIXTURES / f"{case}.safetensors"))


class _Slot:
    """Stands in for the semantic / acoustic slots: only widths and the token rate matter to the decoder."""

    def __init__(self, dim: int = 768, frame_rate: float = 50.0) -> None:
        self.quantized_dim, self.frame_rate = dim, frame_rate


# The reduced reference decoder of the fixtures (ddim_sampler / decode_tiny_end_to_end).
TINY = dict(model_channels=32, channel_mult=[1, 2], attention_resolutions=[2], num_head_channels=16,
            num_res_blocks=1, vae_channels=32, vae_num_res_blocks=1, vocoder_channels=64)
# A smaller geometry for behaviour tests: 0.64 s windows (32 tokens at 50/s), 0.16 s overlap, 16-wide features.
MICRO = dict(TINY, window_seconds=0.64, overlap_seconds=0.16, steps=2, position_dim=16)


def make_decoder(dim: int = 768, **overrides) -> LatentDiffusionDecoder:
    """A decoder with every parameter redrawn at the fixtures' scales (fresh diffusers/transformers inits leave
    zero output layers and near-silent vocoders, which would make behaviour tests vacuous)."""
    torch.manual_seed(0)
    cfg = LatentDiffusionDecoderConfig(**{**TINY, "vae_encoder": False, **overrides})
    dec = LatentDiffusionDecoder(cfg, BuildContext(16000, _Slot(dim), _Slot(dim))).eval()
    if cfg.weights:
        return dec
    with torch.no_grad():
        for name, p in dec.named_parameters():
            if p.ndim >= 2:
                p.copy_(torch.randn_like(p) / p[0].numel() ** 0.5)
            elif name.endswith("bias"):
                p.copy_(0.02 * torch.randn_like(p))
            else:
                p.copy_(1 + 0.1 * torch.randn_like(p))
    return dec


def official_tiny_state() -> dict[str, torch.Tensor]:
    meta, st = fixture("ddim_sampler")
    return regen.fill(None, meta["recipe"], meta["base_seed"], keep=st)


@pytest.fixture(scope="module")
def reference_tiny():
    """The tiny reference decoder with the fixtures' weights, loaded through the official-layout converter."""
    dec = make_decoder()
    dec.load_state_dict(dec.convert_official(official_tiny_state()), strict=True)
    return dec


# ---------------------------------------------------------------------------------------------------------------
# Parity
# ---------------------------------------------------------------------------------------------------------------


def _unet_case(case: str):
    from codecfw.plugins.decoder.official_keys import (RESBLOCK_RENAMES, attention_levels, official_unet_key_map,
                                                       rename_by_prefix)
    from codecfw.plugins.decoder.t_unet import TUNet2DConditionModel

    meta, st = fixture(case)
    a = meta["constructor_args"]
    unet = TUNet2DConditionModel(model_channels=a["model_channels"], channel_mult=a["channel_mult"],
                                 num_res_blocks=a["num_res_blocks"], attention_resolutions=a["attention_resolutions"],
                                 num_head_channels=a["num_head_channels"], context_dim=a["context_dim"][0]).eval()
    assert sum(p.numel() for p in unet.parameters()) == meta["param_count"]
    weights = regen.fill(None, meta["recipe"], meta["base_seed"])
    weights = {k[len(meta["recipe_prefix"]):]: v for k, v in weights.items()}
    levels = attention_levels(len(a["channel_mult"]), a["attention_resolutions"])
    key_map = official_unet_key_map(len(a["channel_mult"]), a["num_res_blocks"], levels)
    unet.load_state_dict(rename_by_prefix(weights, key_map, case, RESBLOCK_RENAMES), strict=True)
    context = regen.make("in/context", [1, 512, a["context_dim"][0]], "randn", meta["base_seed"])
    assert torch.equal(context.flatten()[:64], fixture("unet_tiny")[1]["in/context_probe"])
    return unet, fixture("unet_tiny")[1]["in/latent"], context, st


def test_unet_tiny_matches_reference():
    unet, latent, context, st = _unet_case("unet_tiny")
    with torch.no_grad():
        out = torch.cat([unet(latent, t, encoder_hidden_states=context).sample for t in st["in/timesteps"]])
    torch.testing.assert_close(out, st["out/v"], atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_unet_full_matches_reference():
    unet, latent, context, st = _unet_case("unet_full_100")
    with torch.no_grad():
        out = unet(latent, 500, encoder_hidden_states=context).sample
    torch.testing.assert_close(out, st["out/v_t500"], atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("variant", ["tiny", pytest.param("full", marks=pytest.mark.slow)])
def test_vae_decoder_matches_reference(variant):
    from codecfw.plugins.decoder.mel_vae import VAESpec, build_vae
    from codecfw.plugins.decoder.official_keys import convert_official_vae_state

    meta, st = fixture("vae_decoder")
    spec, dd = meta["variants"][variant], meta["variants"][variant]["constructor_args"]["ddconfig"]
    weights = regen.fill(None, spec["recipe"], meta["base_seed"])
    weights = {k[len("first_stage_model."):]: v for k, v in weights.items() if ".vocoder." not in k}
    vae = build_vae(VAESpec(dd["ch"], dd["ch_mult"], dd["num_res_blocks"]), encoder=False).eval()
    vae.load_state_dict(convert_official_vae_state(weights, len(dd["ch_mult"]), dd["num_res_blocks"], encoder=False))
    with torch.no_grad():
        mel = vae.decode(fixture("unet_tiny")[1]["in/latent"] * (1.0 / st["keep/scale_factor"])).sample
    torch.testing.assert_close(mel, st[f"out/mel_{variant}"], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("variant", ["tiny", pytest.param("full", marks=pytest.mark.slow)])
def test_vocoder_matches_reference(variant):
    from codecfw.plugins.decoder.hifigan import HiFiGANSpec, build_hifigan, official_vocoder_state

    meta, st = fixture("vocoder")
    spec = meta["variants"][variant]
    weights = regen.fill(None, spec["recipe"], meta["base_seed"])
    weights = {k[len(spec["recipe_prefix"]):]: v for k, v in weights.items()}
    vocoder = build_hifigan(HiFiGANSpec(upsample_initial_channel=spec["constructor_args"]["upsample_initial_channel"]))
    vocoder.load_state_dict(official_vocoder_state(weights), strict=True)
    mel = fixture("vae_decoder")[1]["out/mel_full"]
    mel = mel[:, :, :128] if variant == "tiny" else mel
    with torch.no_grad():
        wav = vocoder(mel[:, 0])
    ref = st[f"out/wav_{variant}"][:, 0]
    assert wav.shape == ref.shape == (1, 160 * mel.shape[2] + 32)
    torch.testing.assert_close(wav, ref, atol=1e-4, rtol=1e-4)


def test_schedule_buffers_match_reference():
    _, st = fixture("ddim_sampler")
    ours = reference_schedule_buffers()
    for name, value in ours.items():
        torch.testing.assert_close(value, st[f"keep/{name}"], atol=0, rtol=1e-6, msg=name)
    check_official_schedule({k[5:]: v for k, v in st.items() if k.startswith("keep/")}, ours)
    with pytest.raises(ValueError, match="betas"):
        check_official_schedule({"betas": st["keep/betas"]}, reference_schedule_buffers(beta_end=0.02))


@pytest.mark.parametrize("steps,eta", [(4, 0.0), (10, 0.0), (4, 1.0)])
def test_ddim_coefficients_match_reference(steps, eta):
    _, st = fixture("ddim_sampler")
    scheduler = make_scheduler("ddim")
    timesteps = set_timesteps(scheduler, steps, "leading")
    assert torch.equal(timesteps.flip(0), st[f"out/ddim_timesteps_S{steps}"])
    ref = st[f"out/ddim_coef_S{steps}_eta{int(eta)}_f64"]  # ascending t: (a_t, a_prev, sigma, sqrt(1 - a_t))
    for i, t in enumerate(timesteps.flip(0).tolist()):
        prev = t - 1000 // steps
        a_t = scheduler.alphas_cumprod[t]
        a_prev = scheduler.alphas_cumprod[prev] if prev >= 0 else scheduler.final_alpha_cumprod
        sigma = eta * scheduler._get_variance(t, prev) ** 0.5
        ours = torch.tensor([a_t, a_prev, sigma, (1 - a_t) ** 0.5], dtype=torch.float64)
        torch.testing.assert_close(ours, ref[i], atol=1e-7, rtol=0)


@pytest.mark.parametrize("run", ["S4_cfg2_eta0", "S4_cfg1_eta0", "S4_cfg2_eta1",
                                 pytest.param("S10_cfg2_eta0", marks=pytest.mark.slow)])
def test_ddim_sampler_matches_reference(reference_tiny, run):
    meta, st = fixture("ddim_sampler")
    r = meta["runs"][run]
    feature = regen.make("in/quantized_feature", [1, 512, 1536], "randn", meta["base_seed"])
    assert torch.equal(feature.flatten()[:64], st["in/quantized_feature_probe"])
    noise = st["in/ddim_noise"]
    z = reference_tiny.sample_latents(feature, st["in/x_T"], steps=r["steps"], guidance_scale=r["cfg_scale"],
                                      eta=r["eta"], sampler="ddim", step_noise=lambda i: noise[i])
    torch.testing.assert_close(z, st[f"out/final_{run}"], atol=1e-3, rtol=0)


def test_context_matches_reference(reference_tiny):
    meta, st = fixture("ddim_sampler")
    feature = regen.make("in/quantized_feature", [1, 512, 1536], "randn", meta["base_seed"])
    cond = reference_tiny.context(feature)
    uncond = reference_tiny.context(feature, torch.ones(1, dtype=torch.bool))
    torch.testing.assert_close(cond.sum(-1)[0], st["out/cond_rowsum"], atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(uncond.sum(-1)[0], st["out/uncond_rowsum"], atol=1e-4, rtol=1e-5)


def test_decode_tiny_end_to_end_matches_reference(reference_tiny):
    meta, st = fixture("decode_tiny_end_to_end")
    base = meta["base_seed"]
    centroids = regen.make("centroids_K1", [64, 768], "randn", base)
    codebook = regen.make("quantizer._codebook.embed", [1, 64, 768], "randn", base)[0]
    tokens = st["in/tokens"][0]
    features = torch.cat([codebook[tokens[:, 1]], centroids[tokens[:, 0]]], -1)[None]  # acoustic first
    x_T = fixture("ddim_sampler")[1]["in/x_T"]
    wav = reference_tiny.synthesize(features, 163840, x_T=x_T, steps=4, guidance_scale=2.0, eta=0.0)
    torch.testing.assert_close(wav, st["out/waveform"], atol=1e-4, rtol=0)


def test_official_checkpoint_file_loads(tmp_path, reference_tiny):
    path = tmp_path / "decoder.ckpt"
    torch.save(official_tiny_state(), path)
    dec = make_decoder(weights=str(path))
    for key, value in reference_tiny.state_dict().items():
        assert torch.equal(dec.state_dict()[key], value), key
    assert float(dec.scale_factor) == pytest.approx(0.6) and bool(dec.scale_initialized)
    bad = official_tiny_state()
    bad["betas"] = bad["betas"] * 1.01
    torch.save(bad, path)
    with pytest.raises(ValueError, match="schedule"):
        make_decoder(weights=str(path))


def test_weight_norm_vocoder_state_is_folded():
    from codecfw.plugins.decoder.hifigan import HiFiGANSpec, build_hifigan, official_vocoder_state

    torch.manual_seed(0)
    plain = build_hifigan(HiFiGANSpec(upsample_initial_channel=32))
    normed = build_hifigan(HiFiGANSpec(upsample_initial_channel=32))
    normed.load_state_dict(plain.state_dict())
    torch.nn.utils.weight_norm(normed.conv_pre)
    state = {k.replace("upsampler.", "ups."): v for k, v in normed.state_dict().items()}
    assert "conv_pre.weight_g" in state
    folded = official_vocoder_state(state)
    torch.testing.assert_close(folded["conv_pre.weight"], plain.state_dict()["conv_pre.weight"])


# ---------------------------------------------------------------------------------------------------------------
# codecfw's behaviour
# ---------------------------------------------------------------------------------------------------------------


def reference_split(num_tokens: int, window: int) -> list[int]:
    """The reference's ``long_token_split_window`` start offsets (overlap = int(window * 0.0625))."""
    starts, start, hop = [], 0, window - int(window * 0.0625)
    while start + window < num_tokens:
        starts.append(start)
        start += hop
    return starts + ([start] if num_tokens - start > 0 else [])


@pytest.mark.parametrize("k", [1, 2, 4])
def test_window_split_follows_the_reference(k):
    dec = LatentDiffusionDecoder.__new__(LatentDiffusionDecoder)  # geometry only: no weights needed
    dec.window_tokens, dec.overlap_tokens = 512 // k, 32 // k
    for n in [1, 57, 511 // k, 512 // k, 512 // k + 1, 1000 // k, 992 // k, 993 // k, 4000 // k]:
        assert dec.window_starts(n) == reference_split(n, 512 // k), n
    assert dec.window_starts(512 // k + 1) == [0, 480 // k]
    with pytest.raises(ValueError):
        dec.window_starts(0)


@pytest.fixture(scope="module")
def micro():
    return make_decoder(dim=16, **MICRO)


def test_windows_land_at_their_tokens_without_drift(micro, monkeypatch):
    """Window w starts at w·hop samples (no +32-sample drift per window) and cross-fades linearly over the
    overlap; the output has exactly ``num_samples`` samples."""
    dec = micro
    ws, hop, overlap = dec.window_samples, 24 * 320, 8 * 320
    assert (dec.window_tokens, dec.overlap_tokens, ws) == (32, 8, 10240)

    def fake(windows, ids, **_):
        return torch.stack([torch.full((ws,), float(w + 1)) for _, w in ids])

    monkeypatch.setattr(dec, "decode_windows", fake)
    features = torch.zeros(1, 81, 32)  # 81 tokens → windows at 0, 24, 48, 72 (the last one 9 tokens long)
    n = 3 * hop + ws + 100
    out = dec.synthesize(features, n)[0, 0]
    assert out.shape == (n,)
    starts = dec.window_starts(81)
    assert starts == [0, 24, 48, 72]
    for w in range(len(starts)):
        pure = slice(w * hop + (overlap if w else 0), w * hop + ws - (overlap if w < 3 else 0))
        assert torch.all(out[pure] == w + 1), w
    fade = torch.from_numpy(np.linspace(0, 1, overlap)).float()
    for w in range(1, 4):  # cross-fade region of windows w-1 and w
        region = out[w * hop: w * hop + overlap]
        torch.testing.assert_close(region, w * (1 - fade) + (w + 1) * fade)
    assert torch.all(out[3 * hop + ws:] == 0)  # past the last window: zero padding up to num_samples


def test_decoding_is_seeded_and_independent_of_window_batching(micro):
    torch.manual_seed(1)
    features = torch.randn(2, 40, 32)  # two items, two windows each
    a = micro.synthesize(features, 40 * 320)
    micro.cfg.window_batch_size = 1
    try:
        b = micro.synthesize(features, 40 * 320)
    finally:
        micro.cfg.window_batch_size = 4
    assert a.shape == (2, 1, 12800) and torch.isfinite(a).all()
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    torch.testing.assert_close(micro.synthesize(features, 40 * 320), a, atol=0, rtol=0)
    micro.cfg.seed = 7
    try:
        c = micro.synthesize(features, 40 * 320)
    finally:
        micro.cfg.seed = 0
    assert (c - a).abs().max() > 1e-4


def _count_unet_calls(dec, fn):
    batches = []
    handle = dec.unet.register_forward_pre_hook(lambda m, args, kwargs: batches.append(args[0].shape[0]),
                                                with_kwargs=True)
    try:
        fn()
    finally:
        handle.remove()
    return batches


def test_guidance_is_one_batched_unet_call_per_step(micro):
    windows, x_T = torch.randn(3, 32, 32), torch.randn(3, *micro.latent_shape)
    assert _count_unet_calls(micro, lambda: micro.sample_latents(windows, x_T, steps=3, guidance_scale=2.0)) == [6] * 3
    assert _count_unet_calls(micro, lambda: micro.sample_latents(windows, x_T, steps=3, guidance_scale=1.0)) == [3] * 3


def test_eta_noise_is_seeded(micro):
    windows = torch.randn(2, 32, 32)
    eta1 = micro.decode_windows(windows, eta=1.0)
    torch.testing.assert_close(micro.decode_windows(windows, eta=1.0), eta1, atol=0, rtol=0)
    assert (micro.decode_windows(windows, eta=0.0) - eta1).abs().max() > 1e-5


@pytest.mark.parametrize("sampler", ["dpmsolver++", "unipc"])
def test_fast_samplers_run_the_requested_steps(micro, sampler):
    windows, x_T = torch.randn(1, 32, 32), torch.randn(1, *micro.latent_shape)
    out = {}
    calls = _count_unet_calls(micro, lambda: out.setdefault("z", micro.sample_latents(windows, x_T, steps=5,
                                                                                          sampler=sampler)))
    assert len(calls) == 5 and torch.isfinite(out["z"]).all()


def test_reference_timestep_spacing_quirk():
    assert reference_timesteps(50).tolist()[:3] == [981, 961, 941] and len(reference_timesteps(50)) == 50
    assert len(reference_timesteps(30)) == 31  # the reference runs one extra step
    scheduler = make_scheduler("ddim")
    assert len(set_timesteps(scheduler, 30, "leading")) == 30
    assert len(set_timesteps(scheduler, 30, "reference")) == 31
    for crashing in (3, 9, 27, 36, 37, 101, 251, 501):
        with pytest.raises(ValueError, match="timestep"):
            reference_timesteps(crashing)


def test_zero_terminal_snr_schedule():
    ac = training_alphas_cumprod("zero_snr_cosine")
    assert ac[-1] == 0 and ac[0] > 0.99 and torch.all(ac[1:] <= ac[:-1])
    assert float(training_alphas_cumprod("scaled_linear")[-1]) == pytest.approx(1.42e-4, rel=0.05)
    scheduler = make_scheduler("ddim", "zero_snr_cosine")
    assert int(set_timesteps(scheduler, 10, "trailing")[0]) == 999
    dec = make_decoder(dim=16, **MICRO, noise_schedule="zero_snr_cosine", guidance_rescale=0.7)
    assert torch.isfinite(dec.synthesize(torch.randn(1, 20, 32), 6400)).all()


def _outputs(features: torch.Tensor, half: int):
    """Split [B x T x 2h] features into the slots' channel-first outputs (acoustic = first half)."""
    acoustic = AcousticOutput(quantized=features[..., :half].transpose(1, 2))
    return SemanticOutput(quantized=features[..., half:].transpose(1, 2)), acoustic


def test_training_loss_gradients_and_condition_dropout():
    dec = make_decoder(dim=16, **{**MICRO, "vae_encoder": True, "cond_drop_prob": 0.0}).train()
    features = torch.randn(2, 64, 32, requires_grad=True)  # 2 items x 2 windows of 32 tokens
    wav = torch.randn(2, 1, 2 * 10240 - 500) * 0.1  # padded to whole windows
    seen = []
    hook = dec.unet.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append(kwargs["encoder_hidden_states"].detach()), with_kwargs=True)
    out = dec.training_output(*_outputs(features, 16), wav)
    loss = out.losses["diffusion"]
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert float(dec.scale_factor) != 1.0 and bool(dec.scale_initialized)
    loss.backward()
    assert features.grad.abs().sum() > 0 and dec.unet.conv_in.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in [*dec.vae.parameters(), *dec.vocoder.parameters()])
    assert not dec.vae.training and not dec.vocoder.training
    torch.testing.assert_close(seen[-1][:, :, :32], features.detach().reshape(4, 32, 32))
    dec.cfg.cond_drop_prob = 1.0
    dec.training_output(*_outputs(features.detach(), 16), wav)
    hook.remove()
    assert torch.all(seen[-1][:, :, :32] == 0)  # dropped: zero features ...
    torch.testing.assert_close(seen[-1][:, :, 32:], dec.position_table.expand(4, -1, -1))  # ... positions kept


def test_training_needs_the_vae_encoder(micro):
    with pytest.raises(RuntimeError, match="vae_encoder"):
        micro.training_output(*_outputs(torch.randn(1, 32, 32), 16), torch.randn(1, 1, 10240))


def test_bf16_autocast_stays_close_to_fp32():
    dec = make_decoder(dim=16, **MICRO)
    windows, x_T = torch.randn(1, 32, 32), torch.randn(1, *dec.latent_shape)
    fp32 = dec.sample_latents(windows, x_T, steps=2)
    dec.cfg.precision = "bfloat16"
    bf16 = dec.sample_latents(windows, x_T, steps=2)
    assert torch.corrcoef(torch.stack([fp32.flatten(), bf16.flatten()]))[0, 1] > 0.99


def test_t_unet_round_trips_through_diffusers(tmp_path, micro):
    from codecfw.plugins.decoder.t_unet import TUNet2DConditionModel

    micro.unet.save_pretrained(tmp_path / "unet")
    loaded = TUNet2DConditionModel.from_pretrained(tmp_path / "unet").eval()
    x, ctx = torch.randn(1, *micro.latent_shape), torch.randn(1, 32, 48)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, 10, encoder_hidden_states=ctx).sample,
                                   micro.unet(x, 10, encoder_hidden_states=ctx).sample)


def test_semanticodec_recipes_validate_and_the_tiny_codec_decodes():
    from codecfw.core.codec import build_codec
    from codecfw.core.config import load_recipe

    for name, k in [("semanticodec", 1), ("semanticodec_50tps", 2), ("semanticodec_25tps", 4)]:
        recipe = load_recipe(name)
        assert recipe.decoder.kind == "latent_diffusion" and recipe.semantic.stack_factor == k
    for size in (4096, 8192, 16384, 32768):
        path = Path(__file__).parent.parent / "recipes" / "ablations" / f"semanticodec_vocab{size}.yaml"
        assert load_recipe(path).semantic.vocab_size == size
    codec = build_codec(load_recipe("semanticodec_tiny", ["decoder.steps=1", "decoder.window_batch_size=2"])).eval()
    assert codec.decoder.unet.config.context_dim == 2 * 64 + 192
    assert codec.token_rate == 100
    tokens = {"semantic": torch.randint(0, 128, (1, 300)), "acoustic": torch.randint(0, 256, (1, 300))}
    wav = codec.decode(tokens, 300 * 320)
    assert wav.shape == (1, 1, 96000) and torch.isfinite(wav).all()


def test_streaming_token_decode_equals_feature_decode(micro):
    """``decode_tokens`` looks features up window by window; it must give what decoding the whole feature tensor
    gives."""
    from codecfw.core.types import TokenStream

    torch.manual_seed(3)
    sem_table, ac_table = torch.randn(10, 16), torch.randn(12, 16)

    class Sem:
        def streams(self):
            return [TokenStream("semantic", 50.0, 10)]

        def from_tokens(self, tokens):
            return SemanticOutput(quantized=sem_table[tokens["semantic"]].transpose(1, 2))

    class Ac:
        def from_tokens(self, tokens, semantic):
            return AcousticOutput(quantized=ac_table[tokens["acoustic"]].transpose(1, 2))

    tokens = {"semantic": torch.randint(0, 10, (2, 50)), "acoustic": torch.randint(0, 12, (2, 50))}
    features = torch.cat([ac_table[tokens["acoustic"]], sem_table[tokens["semantic"]]], -1)
    torch.testing.assert_close(micro.decode_tokens(tokens, Sem(), Ac(), 16000), micro.synthesize(features, 16000))


def test_codec_decode_looks_features_up_window_by_window():
    """``Codec.decode`` goes through the decoder's ``decode_tokens``: a long input never has more than a window of
    features materialised, and the audio equals decoding the whole feature tensor."""
    from codecfw.core.codec import build_codec
    from codecfw.core.config import load_recipe

    codec = build_codec(load_recipe("semanticodec_tiny", ["decoder.steps=1", "decoder.window_batch_size=1",
                                                          "decoder.window_seconds=2.56"])).eval()
    dec = codec.decoder
    t = 3 * dec.window_tokens  # 4 windows with the 0.64 s overlap
    tokens = {"semantic": torch.randint(0, 128, (1, t)), "acoustic": torch.randint(0, 256, (1, t))}
    seen, lookup = [], codec.semantic.from_tokens

    def recording_lookup(part):
        seen.append(part["semantic"].shape[-1])
        return lookup(part)

    codec.semantic.from_tokens = recording_lookup
    wav = codec.decode(tokens, t * 320)
    assert len(seen) == len(dec.window_starts(t)) == 4 and max(seen) <= dec.window_tokens
    codec.semantic.from_tokens = lookup
    semantic = codec.semantic.from_tokens({"semantic": tokens["semantic"]})
    whole = dec(semantic, codec.acoustic.from_tokens({"acoustic": tokens["acoustic"]}, semantic), t * 320)
    torch.testing.assert_close(wav, whole)


def test_inference_mode_decoding_matches_no_grad(micro):
    features = torch.randn(1, 40, 32)
    expected = micro.synthesize(features, 12800)
    with torch.inference_mode():
        torch.testing.assert_close(micro.synthesize(features, 12800), expected, atol=1e-6, rtol=0)


def test_precomputed_context_keys_values_are_exact(micro):
    """Keys/values computed once per context give what recomputing them at every step gives, and a different
    context gives a different result (nothing is served from an earlier context)."""
    windows, x_T = torch.randn(2, 32, 32), torch.randn(2, *micro.latent_shape)
    once = micro.sample_latents(windows, x_T, steps=3)
    other = micro.sample_latents(windows + 1, x_T, steps=3)
    micro.cfg.cache_context = False
    try:
        torch.testing.assert_close(micro.sample_latents(windows, x_T, steps=3), once, atol=1e-5, rtol=0)
        torch.testing.assert_close(micro.sample_latents(windows + 1, x_T, steps=3), other, atol=1e-5, rtol=0)
    finally:
        micro.cfg.cache_context = True
    assert (once - other).abs().max() > 1e-3
    ctx = torch.randn(1, 32, micro.unet.config.cross_attention_dim)
    kv = micro.unet.context_kv(ctx)
    assert len(kv) == len(micro.unet.cross_attentions()) and kv[0][0].shape[:2] == (1, 32)
    with pytest.raises(ValueError, match="attention mask"):
        micro.unet(torch.randn(1, *micro.latent_shape), 5, encoder_hidden_states=ctx,
                   encoder_attention_mask=torch.ones(1, 32), cross_attention_kwargs={"context_kv": kv})


def test_tiny_recipe_trains_on_the_demo_corpus_with_the_frozen_parts_frozen(tmp_path):
    """``recipes/semanticodec_tiny.yaml`` through the one loop on data/demo: finite diffusion and commitment losses,
    a validation pass, a checkpoint that reloads exactly; BiLSTM, VQ codebook and UNet move while AudioMAE, VAE and vocoder do not
    (paper §3.5: only the acoustic encoder, its quantizer and the diffusion model are trained)."""
    from codecfw.core.checkpoint import checkpoint_name, latest_checkpoint, load_codec_weights
    from codecfw.core.codec import build_codec
    from codecfw.core.config import load_recipe
    from codecfw.core.registry import get_registry
    from codecfw.core.training.trainer import Trainer

    from .training_support import read_metrics

    demo = Path(__file__).resolve().parent.parent / "data" / "demo"
    recipe = load_recipe("semanticodec_tiny", [
        f"data.train={demo / 'train.jsonl'}", f"data.valid={demo / 'valid.jsonl'}", "data.batch_size=2",
        "data.valid_clips=1", "decoder.steps=2", "train.steps=2", "train.valid_every=2", "train.checkpoint_every=2",
        "train.log_every=1", "train.valid_batches=1", "train.warmup_steps=0", "train.lr=1e-3"])
    trainer = Trainer(recipe, registry=get_registry(), run_dir=tmp_path / "run", progress=False).setup()
    before = {k: v.detach().clone() for k, v in trainer.codec.state_dict().items()}
    trainer.train()
    trainer.close()
    after = trainer.codec.state_dict()

    def moved(prefix: str) -> bool:
        keys = [k for k in before if k.startswith(prefix) and before[k].is_floating_point()]
        assert keys, prefix
        return any(not torch.equal(before[k], after[k]) for k in keys)

    assert moved("acoustic.") and moved("decoder.unet.")
    assert not moved("semantic.audiomae.") and not moved("decoder.vae.") and not moved("decoder.vocoder.")
    rows = read_metrics(tmp_path / "run")
    assert sorted(rows) == [1, 2]
    for row in rows.values():
        assert np.isfinite(row["loss/diffusion"]) and np.isfinite(row["loss/commitment"])
    assert read_metrics(tmp_path / "run", "valid")
    checkpoint = latest_checkpoint(tmp_path / "run")
    assert checkpoint.name == checkpoint_name(2)
    fresh = build_codec(recipe)
    load_codec_weights(fresh, checkpoint, prefer_ema=False)
    for k, v in fresh.state_dict().items():
        torch.testing.assert_close(v, after[k], rtol=0, atol=0, msg=k)
