"""Exponential moving average of the trainable weights.

``torch.optim.swa_utils.AveragedModel`` deep-copies the whole model, frozen parts included: X-Codec's HuBERT teacher
or SemantiCodec's AudioMAE would be duplicated for nothing. :class:`WeightEMA` keeps a shadow of the *trainable*
parameters only and swaps it in for validation and export. Buffers (EMA codebooks, ...) are not averaged: they are
already running statistics, and the live ones are used.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import Tensor, nn


class WeightEMA:
    """shadow ← decay · shadow + (1 − decay) · weight, after each generator step.

    model : nn.Module (unwrapped) whose trainable parameters are averaged.
    decay : float in (0, 1), e.g. 0.999.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        params = dict(model.named_parameters())
        self.shadow: dict[str, Tensor] = {n: params[n].detach().clone().float() for n in self.names}

    def _params(self, model: nn.Module) -> list[Tensor]:
        params = dict(model.named_parameters())
        return [params[n] for n in self.names]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        shadow = [self.shadow[n] for n in self.names]
        torch._foreach_lerp_(shadow, [p.detach().float() for p in self._params(model)], 1.0 - self.decay)

    @contextlib.contextmanager
    def swapped(self, model: nn.Module) -> Iterator[nn.Module]:
        """Run ``model`` with the EMA weights inside the block; the live weights are restored after it."""
        params = self._params(model)
        live = [p.detach().clone() for p in params]
        with torch.no_grad():
            for p, n in zip(params, self.names):
                p.copy_(self.shadow[n])
        try:
            yield model
        finally:
            with torch.no_grad():
                for p, saved in zip(params, live):
                    p.copy_(saved)

    def state_dict(self) -> dict[str, Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        missing = [n for n in self.names if n not in state]
        if missing:
            raise KeyError(f"EMA state lacks {len(missing)} parameter(s), e.g. {missing[:3]}")
        for n in self.names:
            self.shadow[n].copy_(state[n])
