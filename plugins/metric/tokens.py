"""Metrics on a codec's token streams rather than its audio: codebook usage and perplexity, bitrate and token rate.

* ``codebook``: per stream, the fraction of codebook entries used and the perplexity ``exp(H)`` of the token
  distribution (natural log; ``codebook_size`` when every entry is equally likely). Per clip they describe one clip;
  the corpus summary pools the token histograms of all clips, which is the number that says whether a codebook
  collapsed (SACodec claims full use of its semantic codebook).
* ``bitrate``: the nominal bitrate and token rate derived from the codec's declared streams
  (``sum(frame_rate * log2(codebook_size))``), plus the rates measured from the tokens actually emitted, which catch
  a codec whose frame rate disagrees with its declaration. Anchors (Codec2, Opus) report their encoded file size.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor

from codecfw import hookimpl
from codecfw.core.metric import Metric, MetricConfig


def usage_and_perplexity(counts: Tensor) -> tuple[float, float]:
    """counts : Tensor[K] histogram → (fraction of entries used, exp(entropy in nats))."""
    total = counts.sum()
    if total <= 0:
        return float("nan"), float("nan")
    p = counts.double() / total
    nz = p[p > 0]
    return float((counts > 0).double().mean()), float(torch.exp(-(nz * nz.log()).sum()))


class CodebookConfig(MetricConfig):
    kind: Literal["codebook"] = "codebook"
    streams: list[str] | None = Field(None, description="streams to report (default: all)")


class CodebookUsage(Metric):
    """Codebook usage (fraction) and perplexity per token stream."""

    needs_reference = False
    needs_tokens = True
    higher_is_better = {"usage": True, "perplexity": True}

    def __init__(self, config: CodebookConfig) -> None:
        super().__init__(config)
        self.streams: list = []
        self.counts: dict[str, Tensor] = {}

    def setup(self, system: Any) -> None:
        wanted = self.config.streams
        self.streams = [s for s in system.streams if wanted is None or s.name in wanted]
        self.reset()

    def columns(self) -> list[str]:
        return [self.column(f"{what}/{s.name}") for s in self.streams for what in ("usage", "perplexity")]

    def reset(self) -> None:
        self.counts = {s.name: torch.zeros(s.codebook_size, dtype=torch.long) for s in self.streams}

    def __call__(self, estimate: Tensor | None, reference: Tensor | None, sample_rate: int, **meta) -> dict:
        tokens: dict[str, Tensor] = meta["tokens"]
        out = {}
        for s in self.streams:
            ids = tokens[s.name].reshape(-1).long().cpu()
            if ids.numel() and (ids.min() < 0 or ids.max() >= s.codebook_size):
                raise ValueError(f"stream {s.name!r}: token ids outside [0, {s.codebook_size})")
            counts = torch.bincount(ids, minlength=s.codebook_size)
            self.counts[s.name] += counts
            out[self.column(f"usage/{s.name}")], out[self.column(f"perplexity/{s.name}")] = usage_and_perplexity(counts)
        return out

    def summary(self) -> dict[str, float]:
        out = {}
        for name, counts in self.counts.items():
            if counts.sum() > 0:
                out[self.column(f"usage/{name}")], out[self.column(f"perplexity/{name}")] = usage_and_perplexity(counts)
        return out


class BitrateConfig(MetricConfig):
    kind: Literal["bitrate"] = "bitrate"


class Bitrate(Metric):
    """``bitrate_kbps`` / ``token_rate`` (declared) and ``*_measured`` (from the emitted tokens or encoded bytes)."""

    needs_reference = False
    higher_is_better = None

    def __init__(self, config: BitrateConfig) -> None:
        super().__init__(config)
        self.system: Any = None

    def setup(self, system: Any) -> None:
        self.system = system

    def columns(self) -> list[str]:
        return [self.column(k) for k in ("bitrate_kbps", "token_rate", "bitrate_kbps_measured",
                                         "token_rate_measured")]

    def __call__(self, estimate: Tensor | None, reference: Tensor | None, sample_rate: int, **meta) -> dict:
        seconds = meta["num_samples"] / sample_rate
        nan = float("nan")
        bitrate = getattr(self.system, "bitrate", None)
        rate = getattr(self.system, "token_rate", None)
        out = {self.column("bitrate_kbps"): bitrate / 1000 if bitrate is not None else nan,
               self.column("token_rate"): rate if rate is not None else nan,
               self.column("bitrate_kbps_measured"): nan, self.column("token_rate_measured"): nan}
        tokens: dict[str, Tensor] | None = meta.get("tokens")
        streams = {s.name: s for s in getattr(self.system, "streams", [])}
        if tokens:
            n_tokens = sum(t.numel() for t in tokens.values())
            bits = sum(t.numel() * math.log2(streams[k].codebook_size) for k, t in tokens.items() if k in streams)
            out[self.column("token_rate_measured")] = n_tokens / seconds
            out[self.column("bitrate_kbps_measured")] = bits / seconds / 1000
        if meta.get("encoded_bits") is not None:
            out[self.column("bitrate_kbps_measured")] = meta["encoded_bits"] / seconds / 1000
        return out


@hookimpl
def register_metrics(register):
    register("codebook", CodebookConfig, lambda cfg, ctx: CodebookUsage(cfg), needs_reference=False,
             needs_tokens=True, higher_is_better=True)
    register("bitrate", BitrateConfig, lambda cfg, ctx: Bitrate(cfg), needs_reference=False, higher_is_better=None)
