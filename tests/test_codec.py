"""Composition: streams, token rate and bitrate derived from stream descriptions; encode/decode through slots."""

from __future__ import annotations

import pytest
import torch

from codecfw.core.codec import Codec, build_codec
from codecfw.core.config import validate_recipe
from codecfw.core.types import (AcousticOutput, AcousticQuantizer, Decoder, SemanticFrontend, SemanticOutput,
                                TokenStream, bitrate, token_rate)

from . import toy_codec


class _Semantic(SemanticFrontend):
    def __init__(self, stream):
        super().__init__()
        self.stream = stream

    def streams(self):
        return [self.stream]


class _Acoustic(AcousticQuantizer):
    def __init__(self, stream):
        super().__init__()
        self.stream = stream

    def streams(self):
        return [self.stream]


class _Decoder(Decoder):
    objective = "diffusion"


# Table I of the SemantiCodec paper (Liu et al., 2024): token rate (semantic + acoustic), semantic codebook size,
# acoustic codebook size 8192, and the overall kbps the paper prints.
TABLE_I = [
    (100, 32768, 1.40), (100, 16384, 1.35), (100, 8192, 1.30), (100, 4096, 1.25),
    (50, 32768, 0.700), (50, 16384, 0.675), (50, 8192, 0.650), (50, 4096, 0.625),
    (25, 32768, 0.3500), (25, 16384, 0.3375), (25, 8192, 0.3250), (25, 4096, 0.3125),
]


@pytest.mark.parametrize("tokens_per_second, semantic_size, kbps", TABLE_I)
def test_semanticodec_table_i_accounting(tokens_per_second, semantic_size, kbps):
    # the two streams share the token rate equally: one semantic and one acoustic token per frame
    frame_rate = tokens_per_second / 2
    codec = Codec(_Semantic(TokenStream("semantic", frame_rate, semantic_size)),
                  _Acoustic(TokenStream("acoustic", frame_rate, 8192)), _Decoder(), 16000)
    assert codec.token_rate == pytest.approx(tokens_per_second)
    assert codec.bitrate / 1000 == pytest.approx(kbps, abs=5e-5)


def test_stream_accounting_helpers():
    streams = [TokenStream("a", 75, 1024), TokenStream("b", 75, 1024)]
    assert token_rate(streams) == 150 and bitrate(streams) == 1500
    with pytest.raises(ValueError, match="codebook_size"):
        TokenStream("c", 50, 1)
    with pytest.raises(ValueError, match="frame_rate"):
        TokenStream("c", 0, 16)


def test_duplicate_stream_names_are_rejected():
    s = TokenStream("tokens", 50, 1024)
    with pytest.raises(ValueError, match="repeated: tokens"):
        Codec(_Semantic(s), _Acoustic(s), _Decoder(), 16000)


def test_toy_codec_round_trip(toy_registry):
    codec = build_codec(validate_recipe(toy_codec.TOY_RECIPE, toy_registry), toy_registry).eval()
    wav = torch.randn(2, 1, 8000)
    tokens = codec.encode(wav)
    assert set(tokens) == {"semantic", "acoustic"}
    assert tokens["semantic"].shape == (2, 50) and tokens["semantic"].dtype == torch.long
    assert int(tokens["acoustic"].max()) < 32
    out = codec.decode(tokens, 8000)
    assert out.shape == (2, 1, 8000)
    # decoding is a pure function of the tokens
    assert torch.equal(out, codec.decode(tokens, 8000))
    with pytest.raises(KeyError, match="lack the stream"):
        codec.decode({"semantic": tokens["semantic"]}, 8000)
    train = codec(wav)
    assert train.decoder.waveform.shape == wav.shape
    assert set(train.acoustic.losses) == {"commitment"}


class _PrefixAcoustic(AcousticQuantizer):
    """Two residual streams; any leading prefix decodes (like an RVQ)."""

    decodes_stream_prefix = True

    def streams(self):
        return [TokenStream("rvq0", 50, 16), TokenStream("rvq1", 50, 16)]

    def from_tokens(self, tokens, semantic):
        return AcousticOutput(quantized=sum(t.float() for t in tokens.values()).unsqueeze(1))


class _SumDecoder(Decoder):
    objective = "adversarial"

    def forward(self, semantic, acoustic, num_samples):
        return acoustic.quantized[..., :num_samples]


def test_residual_streams_decode_from_a_leading_prefix():
    codec = Codec(_Semantic(TokenStream("semantic", 50, 4)), _PrefixAcoustic(), _SumDecoder(), 16000)
    codec.semantic.from_tokens = lambda tokens: SemanticOutput()
    tokens = {"semantic": torch.zeros(1, 3, dtype=torch.long), "rvq0": torch.tensor([[1, 2, 3]]),
              "rvq1": torch.tensor([[10, 10, 10]])}
    assert codec.decode(tokens, 3).tolist() == [[[11.0, 12.0, 13.0]]]
    assert codec.decode({k: v for k, v in tokens.items() if k != "rvq1"}, 3).tolist() == [[[1.0, 2.0, 3.0]]]
    with pytest.raises(KeyError, match="rvq0"):  # not a prefix
        codec.decode({k: v for k, v in tokens.items() if k != "rvq0"}, 3)
