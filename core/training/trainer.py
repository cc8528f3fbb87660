"""The one training loop, for every codec. Read it top to bottom: ``setup`` builds, ``train`` loops, ``train_step``
is one optimizer step, ``validate`` and ``save`` are what happens every N steps.

Following torchtune's "no training framework" rule, the loop is written out here rather than spread over callbacks.
The codec supplies the objective (``codec.decoder.objective``, see :mod:`.objectives`); the loop owns
turns, optimizers, precision, accumulation, clipping, EMA, schedules, logging, checkpoints and distribution.

Run directory (``runs/<name>-<config hash>`` unless ``train.run_dir``/``--run-dir`` say otherwise)::

    recipe.yaml      resolved recipe          metrics.jsonl   one line per step (train) and per validation
    tensorboard/     TensorBoard events       samples/        validation clips (reference and reconstruction)
    checkpoints/     see codecfw.core.checkpoint               summary.json    the last session's summary

Exact resume: a checkpoint holds weights, optimizer/scheduler/scaler states, every rank's RNG states and the data
position; crops are drawn from ``(seed, epoch, index)`` and everything that draws random numbers outside the step
(data-loader start, validation) runs under ``torch.random.fork_rng``. A run restarted after SIGKILL therefore logs
the same per-step losses as one never interrupted (tests/test_train.py checks it).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn

from .. import atomic
from .. import checkpoint as ckpt
from ..codec import Codec, build_codec
from ..config import RecipeBase
from ..registry import Registry, get_registry
from .distributed import (DistributedContext, all_reduce_mean, all_true, barrier, broadcast_buffers, gather_objects,
                          init_distributed, rng_state, seed_everything, set_rng_state, wrap_ddp)
from .ema import WeightEMA
from .objectives import Objective, objective_class, validate

log = logging.getLogger("codecfw.train")


class LRSchedule:
    """Multiplier of the base LR at optimizer step ``s``: linear warm-up, then constant, cosine (to
    ``min_ratio``) or exponential (``decay ** s``, DAC's ExponentialLR). A class, not a lambda, so ``LambdaLR``
    saves its settings in the checkpoint."""

    def __init__(self, warmup: int, schedule: str, total: int, decay: float, min_ratio: float = 0.0) -> None:
        self.warmup, self.schedule, self.total, self.decay, self.min_ratio = warmup, schedule, total, decay, min_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        s = step - self.warmup
        if self.schedule == "exponential":
            return self.decay ** s
        if self.schedule == "cosine":
            progress = min(1.0, s / max(1, self.total - self.warmup))
            return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0


def compile_marked_modules(module: nn.Module, backend: str = "inductor") -> list[str]:
    """``torch.compile`` (in place, ``nn.Module.compile``) every submodule whose class sets ``compile_target = True``
    (the T-UNet, the DAC encoder and decoder stacks): the heavy, shape-stable networks, not the quantizers with
    their data-dependent control flow. Parameter names and checkpoints are unchanged. Returns the compiled names."""
    names = []
    for name, sub in module.named_modules():
        if getattr(type(sub), "compile_target", False) and not any(name.startswith(n + ".") for n in names):
            sub.compile(backend=backend)
            names.append(name)
    return names


def default_run_dir(recipe: RecipeBase) -> Path:
    """``runs/<name>-<run hash>``: the hash leaves out the settings a later session may change
    (:data:`~codecfw.core.config.SESSION_SETTINGS`), so ``train.steps=800`` continues the 400-step run."""
    return Path("runs") / f"{recipe.name}-{recipe.run_hash()}"


def plugin_versions(recipe: RecipeBase, registry: Registry) -> dict[str, Any]:
    """``{slot: {kind: "distribution version"}}`` of every kind the recipe uses."""
    out: dict[str, dict[str, str]] = {}
    for field, slot in (("semantic", "semantic"), ("acoustic", "acoustic"), ("decoder", "decoder"),
                        ("discriminators", "discriminator"), ("losses", "loss")):
        value = getattr(recipe, field, None)
        for cfg in (value if isinstance(value, list) else [value]):
            if cfg is not None:
                reg = registry.get(slot, cfg.kind)
                out.setdefault(slot, {})[cfg.kind] = f"{reg.distribution} {reg.version}"
    return out


class TrainSetupError(ValueError):
    """The recipe or the arguments cannot start a training (no data source, ...); nothing was created."""


class NonFiniteLossError(RuntimeError):
    """A loss or gradient norm was NaN/Inf with ``train.nonfinite: stop``; the weights of the last good step and the
    last checkpoint are kept."""


class TrainingInterrupted(Exception):
    """SIGINT/SIGTERM ended the run after saving a checkpoint. ``signal`` is the signal number, ``checkpoint`` the
    checkpoint written (or None)."""

    def __init__(self, signum: int, step: int, checkpoint: Path | None) -> None:
        self.signal, self.step, self.checkpoint = signum, step, checkpoint
        name = signal.Signals(signum).name
        where = f"checkpoint {checkpoint} saved" if checkpoint is not None else "no checkpoint saved (not rank 0)"
        super().__init__(f"{name}: stopped at step {step}; {where}; rerun the same command to continue")


class Trainer:
    """Trains ``recipe``'s codec. ``train_loader``/``valid_loader`` replace the recipe's data (tests, notebooks)."""

    def __init__(self, recipe: RecipeBase, *, registry: Registry | None = None, run_dir: str | Path | None = None,
                 device: str | None = None, init_from: str | Path | None = None, progress: bool = True,
                 train_loader: Any = None, valid_loader: Any = None) -> None:
        self.recipe, self.cfg = recipe, recipe.train
        self.registry = registry or get_registry()
        self.run_dir = Path(run_dir or self.cfg.run_dir or default_run_dir(recipe))
        self.device_arg, self.init_from, self.progress = device, init_from, progress
        self.train_loader, self.valid_loader = train_loader, valid_loader
        self.step = self.epoch = self.batches_done = 0
        self.best_valid = math.inf
        self._log_buffer: list[tuple[int, list[str], Tensor, dict[str, float]]] = []
        self._last_saved = -1
        self._lock: ckpt.RunLock | None = None
        self._stop_signal: int | None = None

    # ------------------------------------------------------------------------------------------------------------
    # setup: torchtune's recipe shape, one _setup_* per concern, in the order their dependencies need
    # ------------------------------------------------------------------------------------------------------------

    def setup(self) -> "Trainer":
        """Build everything and resume the run directory's latest checkpoint. A failed start leaves nothing behind:
        the run directory is removed again when this call created it."""
        self._setup_distributed()
        self._check_data_source()
        created = self._setup_run_dir()
        try:
            self._setup_model()
            latest = self._setup_weights()
            self._setup_optimizers()
            self._setup_data()
            resumed_rng = self._load_state(latest) if latest is not None else None
            self._setup_logging(latest)
        except BaseException:
            self.close()
            if created and self.dist.is_main:
                shutil.rmtree(self.run_dir, ignore_errors=True)
            raise
        if resumed_rng is not None:  # last: nothing in setup may draw from the restored streams
            set_rng_state(resumed_rng)
        return self

    def _setup_distributed(self) -> None:
        self.dist: DistributedContext = init_distributed(self.device_arg)
        self.device = self.dist.device
        seed_everything(self.cfg.seed + self.dist.rank)
        if self.device.type == "cuda":
            torch.set_float32_matmul_precision("high")
            torch.backends.cudnn.benchmark = True  # training crops have one fixed shape
        elif self.cfg.num_threads is not None:
            torch.set_num_threads(self.cfg.num_threads)

    def _check_data_source(self) -> None:
        """The errors a recipe can have that only training sees, before anything is created."""
        if self.train_loader is None and self.recipe.data.train is None:
            raise TrainSetupError("data.train is not set: give a manifest (.jsonl/.csv) or a folder of audio, e.g. "
                                  "`codecfw train RECIPE data.train=data/demo/train.jsonl`")

    def _setup_run_dir(self) -> bool:
        """Create and lock the run directory, remove leftovers of interrupted writes, write ``recipe.yaml``.
        Returns whether this call created the folder."""
        created = False
        if self.dist.is_main:
            created = not self.run_dir.exists()
            self.run_dir.mkdir(parents=True, exist_ok=True)
            try:
                self._lock = ckpt.lock_run_dir(self.run_dir)  # before touching anything another run may be writing
            except BaseException:
                if created:
                    shutil.rmtree(self.run_dir, ignore_errors=True)
                raise
            ckpt.remove_incomplete(self.run_dir)
            self._write_recipe()
        barrier(self.dist)
        return created

    def _setup_model(self) -> None:
        # The codec is built after the process group exists: vector-quantize-pytorch turns on its all-reduce of EMA
        # statistics (sync_codebook) when it sees one.
        self.codec: Codec = build_codec(self.recipe, self.registry).to(self.device)
        if self.cfg.compile:
            compiled = compile_marked_modules(self.codec, self.cfg.compile_backend)
            log.info("torch.compile (%s): %s", self.cfg.compile_backend, ", ".join(compiled) or "no compile targets")
        self.objective_kind = self.codec.decoder.objective
        # The objective builds what it trains besides the codec (the adversarial one: discriminators and losses).
        self.objective: Objective = objective_class(self.objective_kind).from_recipe(
            self.codec, self.recipe, self.registry).to(self.device)
        self.discriminator: nn.Module | None = self.objective.trained_modules().get("discriminator")

    def _setup_weights(self) -> Path | None:
        """Weights from the run's latest checkpoint, else from ``--init-from``; the EMA shadow. Returns the
        checkpoint being resumed."""
        latest = ckpt.latest_checkpoint(self.run_dir)
        if latest is not None:
            self._load_weights(latest)
        elif self.init_from is not None:
            # a module the checkpoint lacks (e.g. a branch added to its decoder) starts from its initialisation
            loaded = ckpt.load_codec_weights(self.codec, self.init_from, prefer_ema=True, allow_missing=True)
            disc = loaded.parent / "discriminator.safetensors"
            if self.discriminator is not None and disc.is_file():  # fine-tune against the trained critics too
                missing, unexpected = ckpt.load_weights(self.discriminator, disc, strict=False)
                if missing or unexpected:
                    log.warning("%s matches the recipe's discriminators only partly (%d missing, %d unexpected)",
                                disc, len(missing), len(unexpected))
            log.info("initialised the weights from %s (optimizers and step start afresh)", loaded)
        self.ema = WeightEMA(self.codec, self.cfg.ema_decay) if self.cfg.ema_decay else None
        if self.ema is not None and latest is not None and (latest / "ema.safetensors").is_file():
            self.ema.load_state_dict(ckpt.read_safetensors(latest / "ema.safetensors"))
        return latest

    def _setup_optimizers(self) -> None:
        """DDP wrapping (after the weights are loaded: DDP broadcasts rank 0's parameters and buffers at wrapping,
        so every replica starts identical), one AdamW and one LR schedule per turn, the grad scaler."""
        cfg = self.cfg
        self.model = wrap_ddp(self.codec, self.dist, cfg.find_unused_parameters)
        self.modules: dict[str, nn.Module] = {"generator": self.model}
        for turn, module in self.objective.trained_modules().items():
            self.modules[turn] = wrap_ddp(module, self.dist, cfg.find_unused_parameters)
        self.objective.use_wrapped(self.model, {t: m for t, m in self.modules.items() if t != "generator"})
        self.optimizers = {turn: self._optimizer(self._unwrapped(turn), self._turn_lr(turn)) for turn in self.modules}
        self.schedulers = {turn: torch.optim.lr_scheduler.LambdaLR(opt, self._schedule(turn))
                           for turn, opt in self.optimizers.items()}
        # bf16 autocast runs on CUDA and CPU (torch's CPU autocast); fp16 needs CUDA (its GradScaler).
        use_amp = cfg.precision == "bf16" or (self.device.type == "cuda" and cfg.precision == "fp16")
        if cfg.precision != "fp32" and not use_amp:
            log.info("precision %s is for CUDA; training in fp32 on %s", cfg.precision, self.device)
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision) if use_amp else None
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype is torch.float16)

    def _unwrapped(self, turn: str) -> nn.Module:
        return self.codec if turn == "generator" else self.objective.trained_modules()[turn]

    def _turn_lr(self, turn: str) -> float:
        return self.cfg.lr if turn == "generator" else (self.cfg.discriminator_lr or self.cfg.lr)

    def _schedule(self, turn: str) -> LRSchedule:
        cfg = self.cfg
        total = cfg.steps if turn == "generator" else max(1, cfg.steps - cfg.discriminator_start)
        return LRSchedule(cfg.warmup_steps, cfg.schedule, total, cfg.lr_decay, cfg.min_lr_ratio)

    def _optimizer(self, module: nn.Module, lr: float) -> torch.optim.Optimizer:
        params = [p for p in module.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=lr, betas=tuple(self.cfg.betas), weight_decay=self.cfg.weight_decay)

    def _setup_data(self) -> None:
        from ..data.dataset import build_dataloader

        data, sr = self.recipe.data, self.recipe.sample_rate
        if self.train_loader is None:
            self.train_loader = build_dataloader(data, "train", sr, self.cfg.seed, self.dist.rank,
                                                 self.dist.world_size)
        if self.valid_loader is None and data.valid is not None and self.dist.is_main:
            self.valid_loader = build_dataloader(data, "valid", sr, self.cfg.seed, shuffle=False, drop_last=False)

    def _setup_logging(self, latest: Path | None) -> None:
        self.writer = None
        if self.dist.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=self.step + 1)
            self._truncate_metrics(self.step)  # also on a fresh start: a session killed before its first checkpoint
            log.info("%s %s at step %d in %s (%s, %d process(es), %.2fM trainable parameters, %s objective)",
                     "resuming" if latest else "starting", self.recipe.name, self.step, self.run_dir, self.device,
                     self.dist.world_size, sum(p.numel() for p in self.codec.parameters() if p.requires_grad) / 1e6,
                     self.objective_kind)

    # ------------------------------------------------------------------------------------------------------------
    # the loop
    # ------------------------------------------------------------------------------------------------------------

    def train(self) -> dict[str, Any]:
        """Train to ``train.steps``. SIGINT/SIGTERM finish the current step, save a checkpoint and raise
        :class:`TrainingInterrupted` (a second SIGINT stops at once). The run directory is released at the end."""
        try:
            return self._train()
        finally:
            self._release_lock()

    def _train(self) -> dict[str, Any]:
        from tqdm.auto import tqdm

        cfg = self.cfg
        start_step, start_time = self.step, time.perf_counter()
        bar = tqdm(total=cfg.steps, initial=self.step, unit="step", dynamic_ncols=True, desc=self.recipe.name,
                   disable=not (self.progress and self.dist.is_main and sys.stderr.isatty()), file=sys.stderr)
        self._data = self._start_epoch()
        with self._stop_on_signals():
            while self.step < cfg.steps:
                micro_batches = [self._next_batch() for _ in range(cfg.grad_accum)]
                stats = self.train_step(micro_batches)
                self.step += 1
                self._record(stats)
                bar.update(1)
                last = self.step == cfg.steps
                if self.step % cfg.log_every == 0 or last:
                    self._flush_log(bar)
                is_best = False
                if self.step % cfg.valid_every == 0 or last:
                    is_best = self._validate_and_track()
                if self.step % cfg.checkpoint_every == 0 or last or is_best:
                    self.save(best=is_best)
                if not all_true(self._stop_signal is None, self.dist):  # every rank stops at the same step
                    path = self.save()
                    bar.close()
                    raise TrainingInterrupted(self._stop_signal or signal.SIGTERM, self.step,
                                              path or ckpt.latest_checkpoint(self.run_dir))
        bar.close()
        return self._finish(start_step, time.perf_counter() - start_time)

    @contextlib.contextmanager
    def _stop_on_signals(self):
        """SIGINT/SIGTERM set a flag the loop reads after each step (the main thread only: elsewhere, nothing)."""
        import threading

        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def request_stop(signum, frame):
            if self._stop_signal is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt  # a second Ctrl-C: stop now
            self._stop_signal = signum
            log.warning("%s: stopping after this step and saving a checkpoint (Ctrl-C again to stop at once)",
                        signal.Signals(signum).name)

        previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def train_step(self, micro_batches: list[dict]) -> dict[str, Tensor]:
        """One optimizer step per turn over ``grad_accum`` micro-batches; returns detached stats.

        Non-finite policy (``train.nonfinite``): a turn whose loss or gradient norm is NaN/Inf is not applied. With
        ``stop`` the run ends with :class:`NonFiniteLossError` (the weights are those of the last good step); with
        ``skip`` the turn's gradients are dropped, the optimizer and its moments stay untouched, and the skipped
        turns are counted in ``nonfinite/skipped``. (With fp16's GradScaler, infinite gradients are the scaler's
        business; only the loss counts.) The check reads one scalar per turn from the device.
        """
        cfg, k = self.cfg, len(micro_batches)
        self.objective.begin_step(self.step)
        stats: dict[str, Tensor] = {}
        skipped = 0
        for turn in self.objective.turns(self.step):
            optimizer, module = self.optimizers[turn], self.modules[turn]
            optimizer.zero_grad(set_to_none=True)
            for i, batch in enumerate(micro_batches):
                # DDP reduces gradients in the backward of the last micro-batch only.
                sync = module.no_sync() if (i < k - 1 and hasattr(module, "no_sync")) else contextlib.nullcontext()
                with sync:
                    with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                                        enabled=self.amp_dtype is not None):
                        result = self.objective.step(batch, turn)
                    self.scaler.scale(result.loss / k).backward()
                stats[f"loss/{turn}_total"] = stats.get(f"loss/{turn}_total", 0) + result.loss.detach().float() / k
                for name, value in result.stats.items():
                    stats[name] = stats.get(name, 0) + value.float() / k
            self.scaler.unscale_(optimizer)
            params = [p for group in optimizer.param_groups for p in group["params"]]
            norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip or math.inf).detach()
            stats[f"grad_norm/{turn}"] = norm
            # made on the device: a host tensor would be copied there in _record, a blocking copy every step
            stats[f"lr/{turn}"] = torch.full((), optimizer.param_groups[0]["lr"], device=self.device)
            loss = stats[f"loss/{turn}_total"]
            finite = torch.isfinite(loss) & (torch.isfinite(norm) | self.scaler.is_enabled())
            if all_true(bool(finite), self.dist):
                self.scaler.step(optimizer)
            else:
                self._nonfinite(turn, float(loss), float(norm))
                optimizer.zero_grad(set_to_none=True)
                if self.scaler.is_enabled():
                    self.scaler.step(optimizer)  # no gradients: records the inf check, updates nothing
                skipped += 1
            self.schedulers[turn].step()
        self.scaler.update()
        self.objective.reset()
        stats["nonfinite/skipped"] = torch.tensor(float(skipped))
        if self.ema is not None:
            self.ema.update(self.codec)
        if cfg.sync_buffers:
            broadcast_buffers(self.codec, self.dist)
            if self.discriminator is not None:
                broadcast_buffers(self.discriminator, self.dist)
        return stats

    def _nonfinite(self, turn: str, loss: float, norm: float) -> None:
        step = self.step + 1
        what = f"step {step}: the {turn} loss is {loss:.4g} and its gradient norm {norm:.4g}"
        if self.cfg.nonfinite == "skip":
            log.warning("%s; the %s update is skipped (train.nonfinite: skip)", what, turn)
            return
        self._flush_log()  # the metrics up to the last good step
        latest = ckpt.latest_checkpoint(self.run_dir) if self.dist.is_main else None
        raise NonFiniteLossError(
            f"{what}: not finite, the run stopped (train.nonfinite: stop). The weights were not updated; the last "
            f"checkpoint is {latest or 'none (no checkpoint yet)'}. Lower train.lr, set train.grad_clip, or set "
            f"train.nonfinite=skip to skip such updates")

    # -- data ------------------------------------------------------------------------------------------------

    def _start_epoch(self):
        """An iterator over this epoch's remaining batches (``batches_done`` of them were used before a resume)."""
        loader, skip = self.train_loader, self.batches_done
        sampler = getattr(loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            try:
                sampler.set_epoch(self.epoch, skip=self.batches_done * loader.batch_size)
                skip = 0
            except TypeError:  # a plain DistributedSampler: set the epoch, skip batches by drawing them
                sampler.set_epoch(self.epoch)
        # The loader draws its worker base seed from the global RNG: keep that draw out of the training stream.
        with torch.random.fork_rng(devices=[]):
            it = iter(loader)
        for _ in range(skip):
            next(it, None)
        return it

    def _next_batch(self) -> dict:
        for attempt in range(2):
            batch = next(self._data, None)
            if all_true(batch is not None, self.dist):  # every rank has one, or every rank moves on together
                self.batches_done += 1
                batch = dict(batch)
                batch["waveform"] = batch["waveform"].to(self.device, non_blocking=True)
                return batch
            self.epoch, self.batches_done = self.epoch + 1, 0
            self._data = self._start_epoch()
        raise RuntimeError(f"the training data yields no batch in a fresh epoch on some rank: fewer usable items than "
                           f"batch_size × processes ({self.recipe.data.batch_size} × {self.dist.world_size})?")

    # -- logging ---------------------------------------------------------------------------------------------

    def _record(self, stats: dict[str, Tensor]) -> None:
        keys = sorted(stats)
        # non_blocking: a host scalar (a plugin's float metric) must not wait for the device's queue to drain
        values = all_reduce_mean(torch.stack([torch.as_tensor(stats[k]).to(self.device, torch.float32,
                                                                            non_blocking=True)
                                              for k in keys]), self.dist)
        extra = {"epoch": self.epoch, "time": time.time()}
        self._log_buffer.append((self.step, keys, values, extra))  # host sync deferred to the flush

    def _flush_log(self, bar: Any = None) -> None:
        if not self.dist.is_main:
            self._log_buffer.clear()
            return
        lines = []
        for step, keys, values, extra in self._log_buffer:
            row = {"split": "train", "step": step, **extra, **dict(zip(keys, values.tolist()))}
            lines.append(row)
            if self.writer is not None:
                for k, v in zip(keys, values.tolist()):
                    self.writer.add_scalar(f"train/{k}", v, step)
        self._log_buffer.clear()
        if not lines:
            return
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.writelines(json.dumps(row) + "\n" for row in lines)
        last = lines[-1]
        if bar is not None and not bar.disable:
            bar.set_postfix(loss=f"{last['loss/generator_total']:.4g}", epoch=last["epoch"])
        else:
            log.info("step %d/%d  loss %.4g", last["step"], self.cfg.steps, last["loss/generator_total"])

    def _truncate_metrics(self, step: int) -> None:
        """Drop lines a crashed session logged after its last checkpoint (all of them when there is none): the
        resumed session logs those steps again. A line that is not JSON (torn by a kill mid-write) is dropped with
        a warning naming it."""
        path = self.run_dir / "metrics.jsonl"
        if not path.is_file():
            return
        kept = []
        for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                row_step = int(row.get("step", 0))
            except (ValueError, TypeError, AttributeError):
                log.warning("%s:%d: dropping a line that is not a JSON metrics row (cut by a crash?)", path, lineno)
                continue
            if row_step <= step:
                kept.append(line)
        atomic.write_text(path, "".join(line + "\n" for line in kept))

    # ------------------------------------------------------------------------------------------------------------
    # validation
    # ------------------------------------------------------------------------------------------------------------

    def _validate_and_track(self) -> bool:
        """Validate on rank 0 (the others wait); True when the validation loss is the best so far."""
        is_best = False
        if self.dist.is_main and self.valid_loader is not None:
            results = self.validate()
            row = {"split": "valid", "step": self.step, "time": time.time(), **results}
            with open(self.run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
            for k, v in results.items():
                self.writer.add_scalar(k, v, self.step)
            log.info("step %d validation: %s", self.step, ", ".join(f"{k} {v:.4g}" for k, v in results.items()))
            is_best = results["valid/loss"] < self.best_valid
            if is_best:
                self.best_valid = results["valid/loss"]
        return not all_true(not is_best, self.dist)  # rank 0 decides; every rank must agree to save together

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Validation losses (EMA weights when kept), ``valid/log_mel_l1`` and clips of the reconstruction."""
        from ..data.dataset import write_audio

        codec = self.codec
        was_training = codec.training
        codec.eval()
        devices = [self.device] if self.device.type == "cuda" else []
        swap = self.ema.swapped(codec) if self.ema is not None else contextlib.nullcontext()
        try:
            with torch.random.fork_rng(devices=devices), swap:
                torch.manual_seed(self.cfg.seed)  # the same noise at every validation: comparable losses
                results, clips = validate(self.objective, codec, self.valid_loader, self.device,
                                          self.recipe.sample_rate, self.recipe.data.valid_clips,
                                          self.cfg.valid_batches, self.amp_dtype)
        finally:
            codec.train(was_training)
        folder = self.run_dir / "samples" / ckpt.checkpoint_name(self.step)
        folder.mkdir(parents=True, exist_ok=True)
        for i, (name, reference, reconstruction) in enumerate(clips):
            for tag, wav in (("reference", reference), ("reconstruction", reconstruction)):
                if not torch.isfinite(wav).all():  # a codec gone NaN: say so, write nothing unplayable
                    log.warning("step %d: validation clip %s (%s) has NaN/Inf samples; not written", self.step,
                                name, tag)
                    continue
                write_audio(folder / f"{i:02d}-{name}-{tag}.flac", wav, self.recipe.sample_rate)
                if self.writer is not None:
                    self.writer.add_audio(f"valid/{i:02d}-{tag}", wav.reshape(-1), self.step, self.recipe.sample_rate)
        return results

    # ------------------------------------------------------------------------------------------------------------
    # checkpoints
    # ------------------------------------------------------------------------------------------------------------

    def save(self, best: bool = False) -> Path | None:
        """Checkpoint on rank 0 (every rank contributes its RNG state)."""
        self._flush_log()  # the JSONL must hold every step up to the checkpoint
        rngs = gather_objects(rng_state(), self.dist)
        path = None
        if self.dist.is_main and self._last_saved != self.step:
            weights: dict[str, Any] = {"model": self.codec}
            if self.ema is not None:
                weights["ema"] = self.ema.state_dict()
            if self.discriminator is not None:
                weights["discriminator"] = self.discriminator
            state = {"step": self.step, "epoch": self.epoch, "batches_done": self.batches_done,
                     "best_valid": self.best_valid, "world_size": self.dist.world_size, "rng": rngs,
                     "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
                     "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
                     "scaler": self.scaler.state_dict()}
            meta = {"epoch": self.epoch, "config_hash": self.recipe.config_hash(), "run_hash": self.recipe.run_hash(),
                    "name": self.recipe.name,
                    "objective": self.objective_kind, "recipe": self.recipe.model_dump(mode="json"),
                    "plugins": plugin_versions(self.recipe, self.registry), "torch": torch.__version__,
                    "valid_loss": None if math.isinf(self.best_valid) else self.best_valid,
                    "world_size": self.dist.world_size, "streams": [s.__dict__ for s in self.codec.streams()]}
            path = ckpt.save_checkpoint(self.run_dir, self.step, weights, meta, state)
            self._last_saved = self.step
            if best:
                ckpt.mark_best(self.run_dir, path, self.best_valid)
            ckpt.prune_checkpoints(self.run_dir, self.cfg.keep_last)
        barrier(self.dist)
        return path

    def _load_weights(self, checkpoint: Path) -> None:
        ckpt.load_weights(self.codec, checkpoint / "model.safetensors")
        if self.discriminator is not None and (checkpoint / "discriminator.safetensors").is_file():
            ckpt.load_weights(self.discriminator, checkpoint / "discriminator.safetensors")

    def _load_state(self, checkpoint: Path) -> dict[str, Any] | None:
        state = ckpt.load_state(checkpoint)
        meta = ckpt.read_meta(checkpoint)
        if meta.get("run_hash", self.recipe.run_hash()) != self.recipe.run_hash():
            log.warning("%s was written by another run's recipe (run hash %s, now %s); resuming anyway",
                        checkpoint, meta.get("run_hash"), self.recipe.run_hash())
        try:
            for k, opt in self.optimizers.items():
                opt.load_state_dict(state["optimizers"][k])
            for k, sched in self.schedulers.items():
                sched.load_state_dict(state["schedulers"][k])
            self.scaler.load_state_dict(state["scaler"])
        except (KeyError, ValueError, TypeError) as exc:
            raise ckpt.CheckpointError(f"{checkpoint / 'state.pt'}: the training state does not fit this recipe's "
                                       f"optimizers ({type(exc).__name__}: {str(exc)[:200]})") from None
        self._apply_session_settings(checkpoint, meta)
        self.step, self.epoch, self.batches_done = state["step"], state["epoch"], state["batches_done"]
        self.best_valid = state["best_valid"]
        self._last_saved = self.step
        if state["world_size"] != self.dist.world_size:
            log.warning("%s was written by %d process(es), now %d: the data order and RNG streams start afresh",
                        checkpoint, state["world_size"], self.dist.world_size)
            self.batches_done = 0
            seed_everything(self.cfg.seed + self.dist.rank + 7919 * self.step)
            return None
        return state["rng"][self.dist.rank]

    def _apply_session_settings(self, checkpoint: Path, meta: dict[str, Any]) -> None:
        """The optimiser and schedule settings of *this* recipe, over the ones the checkpoint's state restored.

        Decision: changed session settings (``train.lr``, ``betas``, ``weight_decay``, the schedule, ``steps``, ...;
        :data:`~codecfw.core.config.SESSION_SETTINGS`) are applied from the resumed step on and logged, and
        ``meta.json``/``recipe.yaml`` record them. (``LambdaLR.load_state_dict`` would otherwise bring back the old
        schedule, and the optimizer's param groups the old lr.)"""
        from ..config import SESSION_SETTINGS

        old = (meta.get("recipe") or {}).get("train") or {}
        new = self.recipe.model_dump(mode="json")["train"]
        changed = [f"train.{k}: {old[k]!r} -> {new[k]!r}" for k in SESSION_SETTINGS["train"]
                   if k in old and old[k] != new.get(k)]
        if changed:
            log.info("settings changed since %s, applied from step %d: %s", checkpoint.name, self.step,
                     "; ".join(changed))
        for turn, sched in self.schedulers.items():
            lr = self._turn_lr(turn)
            sched.lr_lambdas = [self._schedule(turn) for _ in sched.optimizer.param_groups]
            sched.base_lrs = [lr for _ in sched.optimizer.param_groups]
            for group, fn in zip(sched.optimizer.param_groups, sched.lr_lambdas):
                group.update(initial_lr=lr, lr=lr * fn(sched.last_epoch), betas=tuple(self.cfg.betas),
                             weight_decay=self.cfg.weight_decay)
            sched._last_lr = [group["lr"] for group in sched.optimizer.param_groups]

    def _write_recipe(self) -> None:
        path = self.run_dir / "recipe.yaml"
        text = yaml.safe_dump(self.recipe.model_dump(mode="json"), sort_keys=False)
        if path.is_file() and path.read_text() != text:
            log.info("%s: this session's recipe replaces the previous one (checkpoints keep theirs)", path)
        atomic.write_text(path, text)

    # ------------------------------------------------------------------------------------------------------------
    # end of run
    # ------------------------------------------------------------------------------------------------------------

    def _finish(self, start_step: int, seconds: float) -> dict[str, Any]:
        steps = self.step - start_step
        per_step = self.recipe.data.batch_size * self.cfg.grad_accum * self.dist.world_size
        summary: dict[str, Any] = {
            "name": self.recipe.name, "run_dir": str(self.run_dir), "step": self.step, "steps_this_session": steps,
            "seconds": round(seconds, 2), "steps_per_second": steps / seconds if seconds > 0 else None,
            "samples_per_second": steps * per_step / seconds if seconds > 0 else None,
            "best_valid_loss": None if math.isinf(self.best_valid) else self.best_valid,
            "last_checkpoint": str(ckpt.latest_checkpoint(self.run_dir)), "world_size": self.dist.world_size,
        }
        if self.device.type == "cuda":  # this process's peak (rank 0's in the summary)
            summary["peak_gpu_memory_mib"] = torch.cuda.max_memory_allocated(self.device) / 2**20
        for split, loader in (("train_data", self.train_loader), ("valid_data", self.valid_loader)):
            dataset = getattr(loader, "dataset", None)
            if hasattr(dataset, "summary"):
                summary[split] = dataset.summary()
        if self.dist.is_main:
            atomic.write_json(self.run_dir / "summary.json", summary, sort_keys=True, default=str)
            if self.writer is not None:
                self.writer.close()
        return summary

    def close(self) -> None:
        """Close the TensorBoard writer and release the run directory."""
        if getattr(self, "writer", None) is not None:
            self.writer.close()
        self._release_lock()

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __del__(self) -> None:
        lock = getattr(self, "_lock", None)
        if lock is not None:
            lock.release()

