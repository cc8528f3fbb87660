"""The residual SimVQ's ``normalize`` setting (plugins/acoustic/residual_vq.py; docs/sacodec.md, "A small 16 kHz
codec"): unit-vector codes and inputs bound the commitment loss, which drifts without bound otherwise."""

from __future__ import annotations

import types

import pytest
import torch
from torch import nn

from codecfw.core.types import BuildContext, SemanticOutput
from codecfw.plugins.acoustic.residual_vq import ResidualQuantizer, SimVQResidualConfig

D, CODE_DIM = 16, 4


def _quantizer(normalize: bool, **kw) -> ResidualQuantizer:
    semantic = types.SimpleNamespace(feature_dim=D, quantized_dim=D, frame_rate=50.0)
    cfg = SimVQResidualConfig(codebook_size=256, code_dim=CODE_DIM, hidden=32, normalize=normalize, **kw)
    return ResidualQuantizer(cfg, BuildContext(sample_rate=16000, semantic=semantic))


def test_normalized_codes_are_unit_vectors_and_commitment_is_bounded_at_any_scale():
    torch.manual_seed(0)
    vq = _quantizer(True, input_commit_weight=0.25)
    assert torch.allclose(vq.vq.codebook.norm(dim=-1), torch.ones(256), atol=1e-5)
    z = torch.randn(2, D, 20) * 1e6  # a latent that has drifted far: the codes still cannot be left behind
    out = vq(torch.zeros(2, 1, 6400), SemanticOutput(features=z, quantized=torch.zeros_like(z)))
    # ‖x − q‖² ≤ 4 for unit vectors: mean over CODE_DIM channels, times (1 + β)
    assert out.losses["commitment"].item() <= (1 + 0.25) * 4 / CODE_DIM
    # decoding from tokens gives exactly the training path's (unit-norm) codes
    vq.eval()
    with torch.no_grad():
        rebuilt = vq.from_tokens(out.tokens, SemanticOutput(features=None, quantized=torch.zeros_like(z)))
        again = vq(torch.zeros(2, 1, 6400), SemanticOutput(features=z, quantized=torch.zeros_like(z)))
    torch.testing.assert_close(rebuilt.quantized, again.quantized)
    # without normalisation the same latent's commitment loss scales with its square
    plain = _quantizer(False)(torch.zeros(2, 1, 6400), SemanticOutput(features=z, quantized=torch.zeros_like(z)))
    assert plain.losses["commitment"].item() > 1e3


def test_state_dict_keys_do_not_depend_on_normalize():
    assert _quantizer(True).state_dict().keys() == _quantizer(False).state_dict().keys()


def _train_toy(normalize: bool, steps: int = 150) -> list[float]:
    """A toy codec: conv encoder → residual SimVQ → conv + LayerNorm decoder (scale-invariant in its input, as
    Vocos's backbone), mel-like L1 ×15 + commitment, AdamW, clip 10: the small codec's optimisation in miniature."""
    torch.manual_seed(0)
    vq = _quantizer(normalize)
    encoder = nn.Conv1d(8, D, 3, padding=1)
    decoder = nn.Conv1d(D, 32, 3, padding=1)
    norm, head = nn.LayerNorm(32), nn.Linear(32, 8)
    params = [p for m in (vq, encoder, decoder, norm, head) for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-2, betas=(0.8, 0.99), weight_decay=0.0)
    generator = torch.Generator().manual_seed(1)
    commitments = []
    for _ in range(steps):
        x = torch.randn(4, 8, 32, generator=generator)
        target = torch.sin(3 * x) + x.roll(1, -1)
        z = encoder(x)
        out = vq(x, SemanticOutput(features=z, quantized=torch.zeros_like(z)))
        y = head(norm(decoder(out.quantized).transpose(1, 2))).transpose(1, 2)
        loss = 15 * (y - target).abs().mean() + out.losses["commitment"]
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        opt.step()
        commitments.append(out.losses["commitment"].item())
    return commitments


@pytest.mark.parametrize("normalize", [True, False])
def test_commitment_stays_bounded_in_training_only_when_normalized(normalize):
    commitments = _train_toy(normalize)
    late = max(commitments[50:])
    if normalize:
        assert late < 0.1, f"normalised commitment grew to {late:.3g}"
    else:  # the drift the setting removes: the commitment grows by an order of magnitude and more
        assert late > 10 * commitments[0], f"plain SimVQ commitment {commitments[0]:.3g} → {late:.3g}"
