"""Checkpoints: safetensors weights, a JSON description, and the training state, written atomically.

A run directory holds ``checkpoints/step-00001000/`` folders::

    model.safetensors          the codec's weights (persistent buffers included: EMA codebooks, ...)
    ema.safetensors            EMA of the codec's trainable weights (when train.ema_decay is set)
    discriminator.safetensors  the discriminators (adversarial objective)
    meta.json                  step, epoch, config hash, resolved recipe, plugin versions, validation loss, ...
    state.pt                   optimizers, schedulers, grad scaler, sampler position, RNG states of every rank

A folder is written under a temporary name and renamed into place only when complete (``os.replace`` of a
directory is atomic on POSIX), so a crash mid-write leaves a ``.tmp-*`` folder that is ignored and removed, never a
half checkpoint that a resume would trust. ``best.json`` points at the checkpoint with the lowest validation loss;
pruning keeps the last ``keep_last`` checkpoints plus that one. ``state.pt`` holds only tensors and plain containers
and is read with ``torch.load(weights_only=True)``; weights are safetensors.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from .atomic import atomic_folder, write_json

if TYPE_CHECKING:
    from .codec import Codec
    from .config import RecipeBase
    from .registry import Registry

FORMAT = "codecfw-checkpoint"
FORMAT_VERSION = 1
_STEP_DIR = re.compile(r"^step-(\d+)$")


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def save_weights(tensors_or_module: nn.Module | dict[str, Tensor], path: Path, metadata: dict[str, str] | None = None
                 ) -> None:
    """A module's state dict (tied tensors de-duplicated by ``safetensors.torch.save_model``) or a tensor dict."""
    from safetensors.torch import save_file, save_model

    if isinstance(tensors_or_module, nn.Module):
        save_model(tensors_or_module, str(path), metadata=metadata)
    else:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors_or_module.items()}, str(path), metadata=metadata)


def load_weights(module: nn.Module, path: str | Path, strict: bool = True) -> tuple[list[str], list[str]]:
    """Load safetensors weights into ``module``; a clear error names the file and the mismatched keys."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file")
    state = load_file(str(path))
    own = module.state_dict()
    shapes = [f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}" for k, v in state.items()
              if k in own and tuple(own[k].shape) != tuple(v.shape)]
    if shapes:
        raise ValueError(f"{path}: {len(shapes)} tensor(s) have another shape than the model's, e.g. "
                         + "; ".join(shapes[:3]))
    # save_model drops tied duplicates; tensors sharing storage in the model are filled through their twin.
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    result = module.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if k in missing]
    if strict and (missing or unexpected):
        raise KeyError(f"{path}: weights do not match the model: missing {missing[:5]}"
                       f"{' ...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
                       f"{' ...' if len(unexpected) > 5 else ''}")
    return missing, unexpected


def save_checkpoint(run_dir: str | Path, step: int, weights: dict[str, nn.Module | dict[str, Tensor]],
                    meta: dict[str, Any], state: dict[str, Any]) -> Path:
    """Write ``checkpoints/step-XXXXXXXX`` atomically and return its path.

    weights : ``{"model": codec, "ema": {...}, "discriminator": module}`` → ``<key>.safetensors``.
    """
    final = Path(run_dir) / "checkpoints" / checkpoint_name(step)
    # the same step may be saved twice (e.g. best, then periodic): atomic_folder swaps the old copy out
    with atomic_folder(final) as tmp:
        for key, value in weights.items():
            save_weights(value, tmp / f"{key}.safetensors", metadata={"format": FORMAT, "step": str(step)})
        torch.save(state, tmp / "state.pt")
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "step": step, "saved_at": time.time(),
                "files": sorted(f"{k}.safetensors" for k in weights) + ["state.pt"], **meta}
        _write_meta(tmp, meta)
    return final


def _write_meta(folder: Path, meta: dict[str, Any]) -> None:
    (folder / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))


def save_codec_folder(folder: str | Path, state_dict: dict[str, Tensor], recipe: Any, registry: Any,
                      **meta: Any) -> Path:
    """Write a codec that was not trained here (a converted checkpoint) as a checkpoint folder loadable with
    ``codecfw.load``: ``model.safetensors`` + ``meta.json`` (step 0, the validated ``recipe``, its hash, the plugin
    versions of ``registry``, and ``meta``), atomically."""
    folder = Path(folder)
    with atomic_folder(folder) as tmp:
        save_weights(state_dict, tmp / "model.safetensors", metadata={"format": FORMAT})
        _write_meta(tmp, {"format": FORMAT, "format_version": FORMAT_VERSION, "step": 0,
                          "recipe": recipe.model_dump(mode="json"), "config_hash": recipe.config_hash(),
                          "plugins": {p.name: p.version for p in registry.plugins.values()}, **meta})
    return folder


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _STEP_DIR.match(p.name))
             and (p / "meta.json").is_file()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def remove_incomplete(run_dir: str | Path) -> list[Path]:
    """Remove leftovers of writes a crash interrupted (``.tmp-*``/``.old-*`` folders)."""
    root = Path(run_dir) / "checkpoints"
    removed = []
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith((".tmp-", ".old-")):
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def read_best(run_dir: str | Path) -> dict[str, Any] | None:
    path = Path(run_dir) / "checkpoints" / "best.json"
    return json.loads(path.read_text()) if path.is_file() else None


def mark_best(run_dir: str | Path, checkpoint: Path, valid_loss: float) -> None:
    write_json(Path(run_dir) / "checkpoints" / "best.json",
               {"checkpoint": checkpoint.name, "valid_loss": valid_loss, "step": read_meta(checkpoint)["step"]},
               sort_keys=True, default=str)


def prune_checkpoints(run_dir: str | Path, keep_last: int) -> list[Path]:
    """Delete all but the newest ``keep_last`` checkpoints and the best one; returns what was deleted."""
    found = list_checkpoints(run_dir)
    best = read_best(run_dir)
    keep = {p.name for p in found[-keep_last:]} | ({best["checkpoint"]} if best else set())
    removed = [p for p in found if p.name not in keep]
    for p in removed:
        shutil.rmtree(p, ignore_errors=True)
    return removed


def read_meta(checkpoint: str | Path) -> dict[str, Any]:
    path = Path(checkpoint) / "meta.json"
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable checkpoint description ({exc})") from exc
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not a codecfw checkpoint (format {meta.get('format')!r})")
    return meta


def read_state_dict(path: str | Path, allow_wrapper: tuple[str, ...] = ("state_dict",)) -> dict[str, Tensor]:
    """A flat state dict from a foreign ``torch.save`` file such as an official ``.ckpt`` (``weights_only=True``,
    memory-mapped when possible); a dict wrapping it under one of ``allow_wrapper`` is unwrapped."""
    import pickle

    path = Path(path)
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            state = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) serialization
    except pickle.UnpicklingError as exc:
        raise pickle.UnpicklingError(
            f"{path}: holds objects other than tensors, which codecfw does not unpickle (weights_only=True): "
            f"{str(exc).splitlines()[0]}. On a machine you trust, save its state dict with safetensors.") from None
    for key in allow_wrapper:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a flat state dict of tensors (the official checkpoint layout)")
    return state


def load_state(checkpoint: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The training state; ``weights_only=True``: nothing in it can run code."""
    return torch.load(Path(checkpoint) / "state.pt", map_location=map_location, weights_only=True)


def resolve_run_checkpoint(path: Path) -> Path:
    """A run directory → its best checkpoint, else its latest; any other path is returned unchanged."""
    if not (path / "checkpoints").is_dir():
        return path
    best = read_best(path)
    found = path / "checkpoints" / best["checkpoint"] if best else latest_checkpoint(path)
    if found is None:
        raise FileNotFoundError(f"{path}: a run directory without any complete checkpoint")
    return found


def resolve_weights_file(path: str | Path, prefer_ema: bool = True) -> tuple[Path, Path | None]:
    """``--init-from`` accepts a checkpoint folder, a run directory (its best, else latest checkpoint) or a
    ``.safetensors`` file. Returns (model weights, EMA weights or None)."""
    path = Path(path)
    if path.is_file():
        return path, None
    path = resolve_run_checkpoint(path)
    model = path / "model.safetensors"
    if not model.is_file():
        raise FileNotFoundError(f"{path}: expected a checkpoint folder with model.safetensors, a run directory, "
                                f"or a .safetensors file")
    ema = path / "ema.safetensors"
    return model, (ema if prefer_ema and ema.is_file() else None)


def load_codec_weights(codec: nn.Module, path: str | Path, prefer_ema: bool = True, strict: bool = True) -> Path:
    """Load a checkpoint's codec weights (the EMA weights over them when present and ``prefer_ema``)."""
    from safetensors.torch import load_file

    model_file, ema_file = resolve_weights_file(path, prefer_ema)
    load_weights(codec, model_file, strict=strict)
    if ema_file is not None:
        shadow = load_file(str(ema_file))
        params = dict(codec.named_parameters())
        with torch.no_grad():
            for name, value in shadow.items():
                if name in params:
                    params[name].copy_(value)
    return model_file


# ---------------------------------------------------------------------------------------------------------------
# Loading a codec (codecfw.load, codecfw eval, pretrained names)
# ---------------------------------------------------------------------------------------------------------------


class CheckpointError(ValueError):
    """A checkpoint folder cannot be loaded; the message names the file and the problem."""


def resolve_checkpoint_dir(path: str | os.PathLike) -> Path:
    """A checkpoint folder (``model.safetensors`` + ``meta.json``), a run directory (its best, else latest
    checkpoint) or a file inside a checkpoint folder → the checkpoint folder."""
    path = Path(path)
    if path.is_file():
        path = path.parent
    try:
        return resolve_run_checkpoint(path)
    except FileNotFoundError as exc:
        raise CheckpointError(str(exc)) from None


def read_checkpoint_meta(folder: Path) -> dict[str, Any]:
    """``meta.json`` (core.checkpoint's format), or ``config.json`` for folders written by hand."""
    for name in ("meta.json", "config.json"):
        file = folder / name
        if file.is_file():
            try:
                meta = json.loads(file.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise CheckpointError(f"{file}: not readable JSON ({exc})") from None
            if not isinstance(meta, dict) or not isinstance(meta.get("recipe"), dict):
                raise CheckpointError(f"{file}: no resolved recipe under the key 'recipe'")
            meta["_file"] = str(file)
            return meta
    raise CheckpointError(f"{folder}: not a codecfw checkpoint (expected model.safetensors with meta.json or "
                          f"config.json holding the resolved recipe)")


def load_checkpoint(path: str | os.PathLike, registry: Registry | None = None, prefer_ema: bool = True
                    ) -> tuple[Codec, RecipeBase, dict[str, Any]]:
    """Validate the recipe saved with a checkpoint, build the codec and load its weights (EMA weights when the
    checkpoint has them and ``prefer_ema``). Returns (codec in eval mode, recipe, meta)."""
    folder = resolve_checkpoint_dir(path)
    if not (folder / "model.safetensors").is_file():
        raise CheckpointError(f"{folder}: no model.safetensors (expected a checkpoint folder, a run directory or "
                              f"a registered pretrained name)")
    meta = read_checkpoint_meta(folder)
    from .codec import build_codec
    from .config import validate_recipe
    from .registry import get_registry

    registry = registry or get_registry()
    recipe = validate_recipe(meta["recipe"], registry, source=meta["_file"])
    codec = build_codec(recipe, registry)
    try:
        load_codec_weights(codec, folder, prefer_ema=prefer_ema, strict=True)
    except (KeyError, ValueError) as exc:
        raise CheckpointError(str(exc).strip("'\"")) from None
    _warn_plugin_versions(meta, registry)
    return codec.eval(), recipe, meta


def _warn_plugin_versions(meta: dict[str, Any], registry: Registry) -> None:
    saved = meta.get("plugins") or meta.get("plugin_versions")
    if not isinstance(saved, dict):
        return
    import warnings

    now = {p.name: p.version for p in registry.plugins.values()}
    changed = [f"{k} {v} -> {now[k]}" for k, v in saved.items() if k in now and str(v) != str(now[k])]
    if changed:
        warnings.warn(f"{meta['_file']}: plugin versions differ from the checkpoint's: {', '.join(changed)}",
                      stacklevel=3)
