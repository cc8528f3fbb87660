"""SACodec: semantic anchoring to a frozen codebook, residual SimVQ, 1.5 kbps accounting, recipe-only swaps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from codecfw.core.codec import build_codec
from codecfw.core.config import load_recipe
from codecfw.core.registry import get_registry
from codecfw.plugins.semantic.anchor_codebook import AnchorCodebook, import_faiss_index, load_codebook_file

from .training_support import read_metrics

NO_TEACHER = ["semantic.teacher=null", "semantic.codebook=null"]


def tiny(*overrides: str):
    return load_recipe("sacodec_tiny", list(overrides))


def test_default_recipe_is_exactly_1_5_kbps():
    recipe = load_recipe("sacodec", NO_TEACHER)
    codec = build_codec(recipe)
    streams = {s.name: s for s in codec.streams()}
    assert streams["semantic"].frame_rate == 50 and streams["semantic"].codebook_size == 16384
    assert streams["acoustic"].frame_rate == 50 and streams["acoustic"].codebook_size == 65536
    assert codec.bitrate == 1500.0
    assert codec.token_rate == 100.0
    # the faiss-index variant: 1000 units, not a power of two, and the accounting follows the stream description
    faiss_variant = build_codec(load_recipe("ablations/sacodec_faiss_index", NO_TEACHER
                                            + ["semantic.codebook_dim=64"]))
    assert faiss_variant.bitrate == pytest.approx(50 * (np.log2(1000) + 16))


def test_faiss_index_import_matches_faiss_assignment(tmp_path):
    faiss = pytest.importorskip("faiss")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3000, 32)).astype("float32")
    # the structure of mhubert147_faiss.index (OPQ16_64,IVF1000_HNSW32,PQ16x4fsr), scaled down
    index = faiss.index_factory(32, "OPQ4_16,IVF20_HNSW8,PQ4x4fsr")
    index.train(x)
    index.add(x)
    path = tmp_path / "tiny.index"
    faiss.write_index(index, str(path))
    tensors = import_faiss_index(path)
    assert tensors["centroids"].shape == (20, 16) and tensors["rotation"].shape == (16, 32)
    codebook = AnchorCodebook(20, teacher_dim=32, codebook_dim=16)
    codebook.load(load_codebook_file(path), source=str(path))
    opq = faiss.downcast_VectorTransform(index.chain.at(0))
    _, units = faiss.extract_index_ivf(index).quantizer.search(opq.apply_py(x[:800]), 1)
    ours = codebook.assign(torch.from_numpy(x[:800])).numpy()
    assert (ours == units[:, 0]).mean() >= 0.99  # HNSW is approximate; codecfw's search is exact
    # the centroid, mapped back to teacher space, lands on its own unit again
    back = codebook.lookup(torch.arange(20))
    assert torch.equal(codebook.assign(back), torch.arange(20))


def test_codebook_files_and_shape_errors(tmp_path):
    centroids = torch.randn(8, 4)
    save_file({"centroids": centroids}, str(tmp_path / "kmeans_8.safetensors"))
    np.save(tmp_path / "official.npy", centroids.numpy())
    for name in ("kmeans_8.safetensors", "official.npy"):
        assert torch.equal(load_codebook_file(tmp_path / name)["centroids"], centroids)
    codebook = AnchorCodebook(16, teacher_dim=4)
    with pytest.raises(ValueError, match=r"kmeans_8.safetensors: centroids have shape \(8, 4\).*\(16, 4\)"):
        codebook.load(load_codebook_file(tmp_path / "kmeans_8.safetensors"), source="kmeans_8.safetensors")
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        load_codebook_file(tmp_path / "missing.safetensors")
    save_file({"means": centroids}, str(tmp_path / "wrong.safetensors"))
    with pytest.raises(KeyError, match="no tensor named 'centroids'"):
        load_codebook_file(tmp_path / "wrong.safetensors")


def test_recipe_codebook_is_loaded_and_frozen(tmp_path):
    centroids = torch.randn(64, 32)
    save_file({"centroids": centroids}, str(tmp_path / "kmeans_64.safetensors"))
    codec = build_codec(tiny("semantic.teacher=null", f"semantic.codebook={tmp_path / 'kmeans_64.safetensors'}"))
    assert torch.equal(codec.semantic.codebook.centroids, centroids)
    assert not any("codebook.centroids" in name for name, _ in codec.named_parameters())
    # tokens are the nearest frozen centroid of the projected frames
    wav = torch.randn(2, 1, 3200)
    codec.eval()
    tokens = codec.encode(wav)
    with torch.no_grad():
        projected = codec.semantic.projector(codec.semantic.encoder(wav).transpose(1, 2))
    assert torch.equal(tokens["semantic"], torch.cdist(projected, centroids.expand(2, -1, -1)).argmin(-1))


@pytest.mark.parametrize("gradient", ["straight_through", "rotation_trick"])
def test_anchor_gradients_reach_projector_and_encoder(gradient):
    codec = build_codec(tiny(*NO_TEACHER, f"semantic.gradient={gradient}")).train()
    out = codec(torch.randn(2, 1, 3200))
    out.decoder.waveform.pow(2).mean().backward()
    assert codec.semantic.projector[0].weight.grad.abs().sum() > 0
    assert codec.semantic.encoder.block[0].parametrizations.weight.original1.grad.abs().sum() > 0
    assert 0 < float(out.semantic.metrics["semantic_usage"]) <= 1


def test_detached_anchor_trains_the_projector_from_the_anchoring_loss_only():
    codec = build_codec(tiny(*NO_TEACHER, "semantic.gradient=detach")).train()
    out = codec(torch.randn(2, 1, 3200))
    out.decoder.waveform.pow(2).mean().backward()
    assert codec.semantic.projector[0].weight.grad is None  # the decoder's gradient stops at the frozen centroids
    assert codec.semantic.back_projector.weight.grad.abs().sum() > 0
    # the encoder still learns through the residual path
    assert codec.semantic.encoder.block[0].parametrizations.weight.original1.grad.abs().sum() > 0


def test_normalized_latent_has_unit_scale_per_frame_at_any_input_level():
    codec = build_codec(tiny(*NO_TEACHER, "semantic.normalize_latent=true")).eval()
    with torch.no_grad():
        quiet, loud = (codec.semantic(torch.randn(1, 1, 3200) * g).features for g in (1e-3, 1e3))
    for z in (quiet, loud):
        torch.testing.assert_close(z.mean(1), torch.zeros(1, z.shape[-1]), atol=1e-4, rtol=0)
        torch.testing.assert_close(z.pow(2).mean(1), torch.ones(1, z.shape[-1]), atol=1e-2, rtol=0)


def test_decode_from_tokens_equals_the_training_path_in_eval():
    codec = build_codec(tiny(*NO_TEACHER)).eval()
    wav = torch.randn(1, 1, 6400)
    tokens = codec.encode(wav)
    assert set(tokens) == {"semantic", "acoustic"} and tokens["acoustic"].shape == (1, 20)
    with torch.no_grad():
        semantic = codec.semantic(wav)
        direct = codec.decoder(semantic, codec.acoustic(wav, semantic), 6400)
    assert torch.allclose(codec.decode(tokens, 6400), direct, atol=1e-5)


def test_anchoring_loss_pulls_projection_towards_teacher():
    codec = build_codec(tiny("semantic.codebook=null")).train()
    assert codec.semantic.teacher is not None
    params = [p for n, p in codec.semantic.named_parameters() if not n.startswith("teacher.")]
    optimizer = torch.optim.Adam(params, lr=3e-3)
    wav = torch.randn(2, 1, 3200)
    losses = []
    for _ in range(25):
        loss = codec.semantic(wav).losses["anchoring"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert all(p.grad is None for p in codec.semantic.teacher.parameters())


@pytest.mark.parametrize("overrides, semantic_kind, acoustic_kind", [
    ([], "semantic_anchoring", "simvq_residual"),
    (["acoustic.kind=ema_vq_residual", "acoustic.codebook_size=64", "acoustic.code_dim=16", "acoustic.hidden=32"],
     "semantic_anchoring", "ema_vq_residual"),
    (["semantic={kind: audiomae_kmeans, stack_factor: 1, embed_dim: 32, depth: 2, num_heads: 2, contextual_depth: 0,"
      " codebooks: [{size: 64}], vocab_size: 64}"], "audiomae_kmeans", "simvq_residual"),
])
def test_recipe_swaps_train_through_the_loop(tmp_path, overrides, semantic_kind, acoustic_kind):
    from codecfw.core.training.trainer import Trainer

    recipe = tiny("semantic.codebook=null", *overrides, "train.steps=2", "train.valid_every=2",
                  "train.checkpoint_every=2", "train.log_every=1", "train.valid_batches=1", "data.batch_size=2",
                  "data.valid_clips=1")
    assert (recipe.semantic.kind, recipe.acoustic.kind) == (semantic_kind, acoustic_kind)
    trainer = Trainer(recipe, registry=get_registry(), run_dir=tmp_path / "run", progress=False).setup()
    trainer.train()
    trainer.close()
    rows = read_metrics(tmp_path / "run")
    assert sorted(rows) == [1, 2]
    for row in rows.values():
        assert np.isfinite(row["loss/commitment"])
        if semantic_kind == "semantic_anchoring":
            assert row["loss/anchoring"] > 0
            assert 0 < row["metric/semantic_usage"] <= 1


def test_chunked_encoding_and_decoding_equal_whole_file():
    from codecfw.core.tokenizer.api import AudioTokenizer

    tokenizer = AudioTokenizer.from_recipe(tiny(*NO_TEACHER), chunk_seconds=1.0)
    assert tokenizer.policy.exact and tokenizer.policy.context >= 16000
    wave = torch.randn(1, 56_000) * 0.1
    whole = tokenizer.encode(wave, 16000, chunked=False)[0]
    chunked = tokenizer.encode(wave, 16000)[0]
    assert whole.lengths() == chunked.lengths() == {"semantic": 175, "acoustic": 175}
    for name in whole.tokens:
        np.testing.assert_array_equal(chunked.tokens[name], whole.tokens[name])
    torch.testing.assert_close(tokenizer.decode(whole)[0], tokenizer.decode(whole, chunked=False)[0],
                               atol=1e-5, rtol=0)


def test_teacher_is_loaded_on_first_use_and_never_saved(tmp_path, monkeypatch):
    from codecfw.plugins.semantic import anchoring

    loads = []
    real_load = anchoring.load_teacher
    monkeypatch.setattr(anchoring, "load_teacher", lambda cfg: loads.append(cfg.model) or real_load(cfg))
    codec = build_codec(tiny("semantic.codebook=null"))
    # building and encoding/decoding never load the teacher: a shipped codec needs no teacher weights
    codec.eval()
    tokens = codec.encode(torch.randn(1, 1, 3200))
    codec.decode(tokens, 3200)
    assert loads == []
    assert not any(k.startswith("semantic.teacher") or "_teacher" in k for k in codec.state_dict())
    # the first training forward loads it (frozen, eval mode) and computes the anchoring loss
    codec.train()
    loss = codec.semantic(torch.randn(2, 1, 3200)).losses["anchoring"]
    assert loads == ["tiny-random-hubert"] and loss > 0
    assert not codec.semantic.teacher.training
    assert not any(k.startswith("semantic.teacher") for k in codec.state_dict())
    assert all(not n.startswith("teacher") for n, _ in codec.semantic.named_parameters())
    codec.semantic(torch.randn(1, 1, 3200))
    assert len(loads) == 1
