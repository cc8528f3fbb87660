"""Training objectives: what one turn of one optimizer step computes.

The contract is ESPnet's GAN-trainer one (``espnet2/train/gan_trainer.py``): the loop asks
``objective.step(batch, turn)`` for each turn of a step and gets ``StepResult(loss, stats)``; the loop owns the
optimizers, precision, accumulation, clipping and logging, the objective owns the maths. The decoder picks the
objective (``Decoder.objective``):

- ``"diffusion"`` (SemantiCodec): one turn, ``"generator"``; loss = weighted slot losses (the decoder's denoising
  loss, the quantizer's commitment loss, ...).
- ``"adversarial"`` (X-Codec, SACodec, DAC lineage): turns ``("generator", "discriminator")`` per step once
  ``train.discriminator_start`` is reached, ``("generator",)`` before it. Generator loss = weighted slot losses +
  weighted reconstruction-loss plugins + ``loss_weights["adversarial"]`` · adversarial loss +
  ``loss_weights["feature_matching"]`` · feature matching.

Within a step the generator turn runs first, then the discriminator turn on the generator's detached outputs (see
:class:`AdversarialObjective` for why this order rather than DAC's).

Discriminator contract (slot ``discriminator``): ``forward(y: Tensor[B x 1 x N]) -> list[(logits, [feature maps])]``,
one tuple per sub-discriminator. Loss contract (slot ``loss``): config field ``weight``; ``forward(y_hat, y)`` returns
a scalar; logged under its kind.
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from dataclasses import dataclass, field
from typing import Iterator, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DiscriminatorOutput = list[tuple[Tensor, list[Tensor]]]


@dataclass
class StepResult:
    """loss : scalar Tensor to back-propagate. stats : detached scalars to log (``loss/<name>``, ``metric/<name>``)."""

    loss: Tensor
    stats: dict[str, Tensor] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------------------
# Adversarial losses
# --------------------------------------------------------------------------------------------------------------


def discriminator_loss(real: DiscriminatorOutput, fake: DiscriminatorOutput,
                       kind: Literal["lsgan", "hinge"] = "lsgan") -> Tensor:
    """Summed over sub-discriminators. LSGAN (Mao et al., 2017; HiFi-GAN, DAC): ``(1 - D(y))² + D(ŷ)²``;
    hinge (MelGAN, EnCodec): ``relu(1 - D(y)) + relu(1 + D(ŷ))``."""
    total = real[0][0].new_zeros(())
    for (r, _), (f, _) in zip(real, fake, strict=True):
        if kind == "lsgan":
            total = total + torch.mean((1 - r) ** 2) + torch.mean(f ** 2)
        else:
            total = total + torch.mean(F.relu(1 - r)) + torch.mean(F.relu(1 + f))
    return total


def generator_adversarial_loss(fake: DiscriminatorOutput, kind: Literal["lsgan", "hinge"] = "lsgan") -> Tensor:
    """Summed over sub-discriminators. LSGAN: ``(1 - D(ŷ))²``; hinge: ``relu(1 - D(ŷ))`` (EnCodec's generator
    hinge)."""
    total = fake[0][0].new_zeros(())
    for f, _ in fake:
        total = total + (torch.mean((1 - f) ** 2) if kind == "lsgan" else torch.mean(F.relu(1 - f)))
    return total


def feature_matching_loss(real: DiscriminatorOutput, fake: DiscriminatorOutput) -> Tensor:
    """L1 between the discriminators' feature maps of ŷ and (detached) y, summed over sub-discriminators and layers,
    each layer averaged (MelGAN, Kumar et al., 2019; DAC's ``feat_loss``)."""
    total = fake[0][0].new_zeros(())
    for (_, real_maps), (_, fake_maps) in zip(real, fake, strict=True):
        for r, f in zip(real_maps, fake_maps, strict=True):
            total = total + F.l1_loss(f, r.detach())
    return total


# --------------------------------------------------------------------------------------------------------------
# Objectives
# --------------------------------------------------------------------------------------------------------------


def weighted_slot_losses(output, weights: dict[str, float]) -> StepResult:
    """Σ ``weights.get(name, 1.0)`` · loss over every slot's ``losses`` (a name used by two slots is an error)."""
    total: Tensor | None = None
    stats: dict[str, Tensor] = {}
    seen: dict[str, str] = {}
    for slot in ("semantic", "acoustic", "decoder"):
        part = getattr(output, slot)
        for name, value in part.losses.items():
            if name in seen:
                raise ValueError(f"loss name {name!r} is produced by both the {seen[name]} and the {slot} slot; "
                                 f"train.loss_weights could not tell them apart")
            seen[name] = slot
            weighted = weights.get(name, 1.0) * value
            total = weighted if total is None else total + weighted
            stats[f"loss/{name}"] = value.detach()
        for name, value in part.metrics.items():
            stats[f"metric/{name}"] = torch.as_tensor(value).detach().float()
    if total is None:
        raise ValueError("no slot returned a loss: the codec has nothing to train on")
    return StepResult(total, stats)


class Objective:
    """Base: the codec (possibly DDP-wrapped) and the weights of the slots' losses.

    An objective builds what it trains besides the codec (:meth:`from_recipe`), lists it per turn
    (:meth:`trained_modules`) and is handed the DDP-wrapped versions by the loop (:meth:`use_wrapped`)."""

    kind: str = ""
    current_step: int = 0

    def __init__(self, codec: nn.Module, loss_weights: dict[str, float]) -> None:
        self.codec = codec
        self.loss_weights = dict(loss_weights)

    @classmethod
    def from_recipe(cls, codec: nn.Module, recipe, registry) -> "Objective":
        """The objective of ``recipe`` for ``codec`` (unwrapped), with everything it needs built."""
        return cls(codec, recipe.train.loss_weights)

    def trained_modules(self) -> dict[str, nn.Module]:
        """``{turn: module}`` of the modules other than the codec that a turn optimizes (unwrapped)."""
        return {}

    def to(self, device: torch.device) -> "Objective":
        return self

    def use_wrapped(self, codec: nn.Module, wrapped: dict[str, nn.Module]) -> None:
        """The loop's (DDP-)wrapped codec and :meth:`trained_modules`, used from now on in :meth:`step`."""
        self.codec = codec

    def turns(self, step: int) -> tuple[str, ...]:
        return ("generator",)

    def begin_step(self, step: int) -> None:
        """Called by the loop before the turns of optimizer step ``step`` (0-based)."""
        self.current_step = step
        self.reset()

    def step(self, batch: dict, turn: str) -> StepResult:  # pragma: no cover - abstract
        raise NotImplementedError

    @torch.no_grad()
    def validation_step(self, codec: nn.Module, batch: dict) -> StepResult:
        """Validation loss on ``codec`` (the EMA or raw weights, unwrapped, in eval mode)."""
        return weighted_slot_losses(codec(batch["waveform"]), self.loss_weights)

    def reset(self) -> None:
        """Drop anything kept between the turns of a step."""


class DiffusionObjective(Objective):
    """One optimizer; the decoder's own denoising loss plus the other slots' losses."""

    kind = "diffusion"

    def step(self, batch: dict, turn: str) -> StepResult:
        return weighted_slot_losses(self.codec(batch["waveform"]), self.loss_weights)


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """No gradients into ``module``'s parameters (the discriminator during the generator turn)."""
    flags = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)


class DiscriminatorSet(nn.Module):
    """The recipe's ``discriminators`` as one module: ``forward(y)`` concatenates their sub-discriminator lists."""

    def __init__(self, discriminators: list[nn.Module]) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList(discriminators)

    def forward(self, y: Tensor) -> DiscriminatorOutput:
        out: DiscriminatorOutput = []
        for d in self.discriminators:
            out.extend(d(y))
        return out


def _split(outputs: DiscriminatorOutput, n: int) -> tuple[DiscriminatorOutput, DiscriminatorOutput]:
    """Outputs of D(cat[y, ŷ]) → (outputs on y, outputs on ŷ)."""
    real = [(logits[:n], [f[:n] for f in maps]) for logits, maps in outputs]
    fake = [(logits[n:], [f[n:] for f in maps]) for logits, maps in outputs]
    return real, fake


class AdversarialObjective(Objective):
    """Generator + discriminators (GAN codecs).

    codec : nn.Module (possibly DDP-wrapped) whose decoder returns ``DecoderOutput.waveform``.
    discriminator : the DDP-wrapped :class:`DiscriminatorSet` (its turn back-propagates through DDP).
    discriminator_module : the same module unwrapped; the generator turn calls it with frozen parameters, so no
        gradient reaches it and its DDP reducer never sees a half-used graph.
    losses : ``{name: (module, weight)}`` reconstruction losses ``forward(y_hat, y) -> scalar``; a loss whose
        config has ``start_step`` counts from that step on (a loss added to a run that is already training).

    Turn order is generator first (ESPnet's ``generator_first``): per micro-batch the generator runs once, is scored
    by the current discriminator and back-propagates at once; its detached output is kept (a waveform, not a graph)
    for the discriminator turn that follows the generator's step. DAC and HiFi-GAN update the discriminator first and
    score the generator with the updated one, which needs the generator's graph held across the discriminator step
    (k graphs under accumulation, and a DDP reducer fired out of order); the generator-first order needs neither.
    The discriminator scores real and generated audio in one forward (``cat[y, ŷ]``): one DDP forward per backward.
    """

    kind = "adversarial"

    def __init__(self, codec: nn.Module, discriminator: nn.Module, discriminator_module: nn.Module,
                 losses: dict[str, tuple[nn.Module, float]], loss_weights: dict[str, float],
                 gan_loss: Literal["lsgan", "hinge"] = "lsgan", discriminator_start: int = 0,
                 loss_starts: dict[str, int] | None = None) -> None:
        super().__init__(codec, loss_weights)
        self.loss_starts = dict(loss_starts or {})
        self.discriminator = discriminator
        self.discriminator_module = discriminator_module
        self.losses = losses
        self.gan_loss = gan_loss
        self.discriminator_start = discriminator_start
        self._generated: deque[Tensor] = deque()  # detached ŷ of this step's micro-batches, generator → discriminator

    @classmethod
    def from_recipe(cls, codec: nn.Module, recipe, registry) -> "AdversarialObjective":
        """Builds the recipe's ``discriminators`` (as one :class:`DiscriminatorSet`) and ``losses``."""
        from ..types import BuildContext

        if not recipe.discriminators:
            raise ValueError(f"decoder {recipe.decoder.kind!r} trains adversarially: the recipe needs "
                             f"'discriminators: [{{kind: ...}}]'")
        ctx = BuildContext(sample_rate=recipe.sample_rate)
        discriminator = DiscriminatorSet([registry.build("discriminator", c, ctx) for c in recipe.discriminators])
        losses: dict[str, tuple[nn.Module, float]] = {}
        for i, c in enumerate(recipe.losses):
            if not hasattr(c, "weight"):
                raise ValueError(f"losses.{i} ({c.kind}): a loss config needs a 'weight' field")
            name = c.kind if c.kind not in losses else f"{c.kind}_{i}"
            losses[name] = (registry.build("loss", c, ctx), float(c.weight))
        starts = {name: int(getattr(c, "start_step", 0) or 0) for name, c in zip(losses, recipe.losses)}
        cfg = recipe.train
        return cls(codec, discriminator, discriminator, losses, cfg.loss_weights, cfg.gan_loss,
                   cfg.discriminator_start, loss_starts=starts)

    def trained_modules(self) -> dict[str, nn.Module]:
        return {"discriminator": self.discriminator_module}

    def to(self, device: torch.device) -> "AdversarialObjective":
        self.discriminator_module.to(device)
        for module, _ in self.losses.values():
            module.to(device)
        return self

    def use_wrapped(self, codec: nn.Module, wrapped: dict[str, nn.Module]) -> None:
        self.codec, self.discriminator = codec, wrapped["discriminator"]

    def turns(self, step: int) -> tuple[str, ...]:
        return ("generator", "discriminator") if step >= self.discriminator_start else ("generator",)

    def step(self, batch: dict, turn: str) -> StepResult:
        y = batch["waveform"]
        if turn == "discriminator":
            if not self._generated:
                raise RuntimeError("the discriminator turn needs the generator turn of the same step to run first")
            y_hat = self._generated.popleft()
            real, fake = _split(self.discriminator(torch.cat([y, y_hat])), y.shape[0])
            loss = discriminator_loss(real, fake, self.gan_loss)
            return StepResult(loss, {"loss/discriminator": loss.detach()})
        if turn != "generator":
            raise ValueError(f"unknown turn {turn!r}")
        output = self.codec(y)
        if output.decoder.waveform is None:
            raise ValueError("the decoder's objective is 'adversarial' but its training_output returned no waveform")
        result = self.reconstruction(output, y)
        loss, stats = result.loss, dict(result.stats)
        y_hat = output.decoder.waveform
        if "discriminator" in self.turns(self.current_step):
            with frozen(self.discriminator_module):
                fake = self.discriminator_module(y_hat)
                with torch.no_grad():
                    real = self.discriminator_module(y)
            adv = generator_adversarial_loss(fake, self.gan_loss)
            fm = feature_matching_loss(real, fake)
            loss = (loss + self.loss_weights.get("adversarial", 1.0) * adv
                    + self.loss_weights.get("feature_matching", 1.0) * fm)
            stats["loss/adversarial"] = adv.detach()
            stats["loss/feature_matching"] = fm.detach()
            self._generated.append(y_hat.detach())
        return StepResult(loss, stats)

    def reconstruction(self, output, y: Tensor) -> StepResult:
        """Weighted slot losses + weighted reconstruction losses (also the validation loss of a GAN codec)."""
        result = weighted_slot_losses(output, self.loss_weights)
        loss, stats = result.loss, dict(result.stats)
        y_hat = output.decoder.waveform
        for name, (module, weight) in self.losses.items():
            if self.current_step < self.loss_starts.get(name, 0):
                continue
            value = module(y_hat, y)
            loss = loss + weight * value
            stats[f"loss/{name}"] = value.detach()
        return StepResult(loss, stats)

    @torch.no_grad()
    def validation_step(self, codec: nn.Module, batch: dict) -> StepResult:
        y = batch["waveform"]
        return self.reconstruction(codec(y), y)

    def reset(self) -> None:
        self._generated.clear()


# --------------------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------------------


def log_mel_l1(y_hat: Tensor, y: Tensor, sample_rate: int, n_fft: int = 1024, hop: int = 256,
               n_mels: int = 80) -> Tensor:
    """Mean |log10 mel(ŷ) − log10 mel(y)| (magnitudes clamped at 1e-5) at one resolution: the loop's cheap monitor of
    reconstruction quality, logged as ``valid/log_mel_l1``. y_hat, y : Tensor[B x 1 x N] → scalar.

    Not the ``mel`` of ``codecfw eval``, which is DAC's multi-scale mel distance (a sum over 7 resolutions, about
    3-4x this value on the same audio); the two carry different names so they are never compared."""
    import torchaudio

    mel = torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=n_fft, hop_length=hop, n_mels=n_mels,
                                               power=1.0).to(y.device)
    a = torch.log10(mel(y_hat.float()).clamp(min=1e-5))
    b = torch.log10(mel(y.float()).clamp(min=1e-5))
    return (a - b).abs().mean()


@torch.no_grad()
def validate(objective: Objective, codec: nn.Module, loader, device: torch.device, sample_rate: int,
             num_clips: int = 4, max_batches: int | None = None, amp_dtype: torch.dtype | None = None
             ) -> tuple[dict[str, float], list[tuple[str, Tensor, Tensor]]]:
    """Validation over ``loader``: the objective's validation losses (item-weighted means, ``valid/loss`` is the
    weighted total that picks the best checkpoint) and, on the first ``num_clips`` items, the reconstruction through
    the inference path ``decode(encode(y))`` with its ``log_mel_l1``. Returns (scalars, [(name, y, ŷ)])."""
    sums: dict[str, float] = {}
    count, clips, mel_sum = 0, [], 0.0
    autocast = torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None)
    for b, batch in enumerate(loader):
        if max_batches is not None and b >= max_batches:
            break
        batch = dict(batch)
        y = batch["waveform"].to(device)
        batch["waveform"] = y
        with autocast:
            result = objective.validation_step(codec, batch)
        n = y.shape[0]
        count += n
        for name, value in {"loss": result.loss, **result.stats}.items():
            key = f"valid/{name}"
            sums[key] = sums.get(key, 0.0) + float(value) * n
        for i in range(min(n, num_clips - len(clips))):
            y_i = y[i:i + 1]
            with autocast:
                y_hat = codec.decode(codec.encode(y_i), y_i.shape[-1]).float()
            mel_sum += float(log_mel_l1(y_hat, y_i, sample_rate))
            paths = batch.get("path")
            name = os.path.splitext(os.path.basename(paths[i]))[0] if paths else f"item{count - n + i}"
            clips.append((name, y_i.cpu(), y_hat.cpu()))
    if count == 0:
        raise ValueError("the validation data yields no batch")
    results = {k: v / count for k, v in sums.items()}
    if clips:
        results["valid/log_mel_l1"] = mel_sum / len(clips)
    return results, clips


OBJECTIVES: dict[str, type[Objective]] = {"diffusion": DiffusionObjective, "adversarial": AdversarialObjective}


def objective_class(kind: str) -> type[Objective]:
    if kind not in OBJECTIVES:
        raise ValueError(f"unknown decoder objective {kind!r}; expected one of {', '.join(OBJECTIVES)}")
    return OBJECTIVES[kind]


def build_objective(kind: str, **kwargs) -> Objective:
    """An objective from its parts (tests, notebooks); the loop uses ``objective_class(kind).from_recipe``."""
    if kind == "diffusion":
        return DiffusionObjective(kwargs["codec"], kwargs["loss_weights"])
    return objective_class(kind)(**kwargs)
