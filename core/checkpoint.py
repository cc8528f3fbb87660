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

A checkpoint whose ``meta.json`` cannot be read is skipped with a warning (the previous one is used); an unreadable
``best.json`` is ignored with a warning. A failed write (disk full, ...) removes its temporary folder and raises
:class:`CheckpointWriteError` naming the checkpoint, the file and the reason; the earlier checkpoints stay.
``RUN/checkpoints/best`` and ``RUN/checkpoints/latest`` name the best and the latest checkpoint of a run.

One training per run directory: :func:`lock_run_dir` takes an exclusive ``flock`` on ``RUN/.lock`` for as long as
the trainer lives; a second one fails at once with :class:`RunDirectoryInUse` naming the holder's PID.
"""

from __future__ import annotations

import errno
import json
import logging
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
ALIASES = ("best", "latest")  # RUN/checkpoints/best, RUN/checkpoints/latest

log = logging.getLogger("codecfw.checkpoint")
_warned: set[str] = set()


class CheckpointError(ValueError):
    """A checkpoint (or weights file) cannot be used; the message names the file and what was expected."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, ...); nothing of it is left, earlier checkpoints are kept."""


class RunDirectoryInUse(RuntimeError):
    """Another process trains in this run directory."""


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning("%s", message)


class RunLock:
    """An exclusive ``flock`` on ``RUN/.lock``, held until :meth:`release` (or the process ends: the kernel drops
    flock locks with the file descriptor, so a SIGKILLed training never leaves a stale lock)."""

    def __init__(self, run_dir: str | Path) -> None:
        import fcntl

        self.path = Path(run_dir) / ".lock"
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(self._fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(self._fd)
            self._fd = None
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise RunDirectoryInUse(f"run directory {Path(run_dir)} is in use by PID {holder} (another codecfw "
                                        f"train); wait for it to end, or give another --run-dir") from None
            raise
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def lock_run_dir(run_dir: str | Path) -> RunLock:
    return RunLock(run_dir)


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def save_weights(tensors_or_module: nn.Module | dict[str, Tensor], path: Path, metadata: dict[str, str] | None = None
                 ) -> None:
    """A module's state dict (tied tensors de-duplicated by ``safetensors.torch.save_model``) or a tensor dict."""
    from safetensors.torch import save_file, save_model

    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o666))  # the mode open() gives (0666 & ~umask) ...
    mode = os.stat(path).st_mode
    if isinstance(tensors_or_module, nn.Module):
        save_model(tensors_or_module, str(path), metadata=metadata)
    else:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors_or_module.items()}, str(path), metadata=metadata)
    os.chmod(path, mode)  # ... which safetensors replaces with 0600


def load_weights(module: nn.Module, path: str | Path, strict: bool = True) -> tuple[list[str], list[str]]:
    """Load safetensors weights into ``module``; a clear error names the file and the mismatched keys."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file")
    state = read_safetensors(path)
    own = module.state_dict()
    shapes = [f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}" for k, v in state.items()
              if k in own and tuple(own[k].shape) != tuple(v.shape)]
    if shapes:
        raise CheckpointError(f"{path}: {len(shapes)} tensor(s) have another shape than the model's, e.g. "
                              + "; ".join(shapes[:3]))
    # load_state_dict casts silently: int8 (quantized) weights would load into a float model as garbage
    kinds = [f"{k}: file {v.dtype} vs model {own[k].dtype}".replace("torch.", "") for k, v in state.items()
             if k in own and _dtype_kind(v.dtype) != _dtype_kind(own[k].dtype)]
    if kinds:
        raise CheckpointError(f"{path}: {len(kinds)} tensor(s) have another kind of dtype than the model's, e.g. "
                              + "; ".join(kinds[:3]))
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


def _dtype_kind(dtype: torch.dtype) -> str:
    if dtype == torch.bool:
        return "bool"
    return "complex" if dtype.is_complex else "float" if dtype.is_floating_point else "int"


def read_safetensors(path: str | Path) -> dict[str, Tensor]:
    """All tensors of a safetensors file; anything else (truncated, empty, another format) is a
    :class:`CheckpointError` naming the file."""
    from safetensors.torch import load_file

    path = Path(path)
    try:
        return load_file(str(path))
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except Exception as exc:  # noqa: BLE001 - SafetensorError, and whatever a damaged header provokes
        size = path.stat().st_size if path.exists() else 0
        raise CheckpointError(f"{path}: not a readable safetensors file ({size} bytes; "
                              f"{str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}); expected "
                              f"weights written by codecfw or safetensors") from None


def load_tensor_pickle(path: str | Path, **kwargs: Any) -> Any:
    """``torch.load(path, weights_only=True)`` for formats that force it (training state, official ``.ckpt``/
    ``.pth`` checkpoints). A file holding other objects is a :class:`CheckpointError` naming it: codecfw never
    unpickles anything else, whatever the file claims to be."""
    import pickle

    path = Path(path)
    try:
        return torch.load(path, map_location=kwargs.pop("map_location", "cpu"), weights_only=True, **kwargs)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        detail = re.sub(r"\s*\(?[^.]*weights_only=False.*$", "", first)[:200]
        raise CheckpointError(f"{path}: refused: it holds Python objects other than tensors and plain containers, "
                              f"which codecfw never unpickles ({detail or 'unsupported object'}); if you trust it, "
                              f"convert it to safetensors on a machine you trust") from None
    except (RuntimeError, EOFError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable torch file ({str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__})") from None


def _write_error(final: Path, current: Path, exc: BaseException) -> CheckpointWriteError:
    code = getattr(exc, "errno", None)
    if code is None:  # safetensors and torch's C++ writers report errno in their text only
        m = re.search(r"os error (\d+)|code: (\d+)", str(exc))
        code = int(m.group(1) or m.group(2)) if m else None
    reason = os.strerror(code) if code else (str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    return CheckpointWriteError(code or errno.EIO, f"{final}: cannot write the checkpoint ({current.name}): "
                                                   f"{reason}; the earlier checkpoints are kept")


def save_checkpoint(run_dir: str | Path, step: int, weights: dict[str, nn.Module | dict[str, Tensor]],
                    meta: dict[str, Any], state: dict[str, Any]) -> Path:
    """Write ``checkpoints/step-XXXXXXXX`` atomically and return its path.

    weights : ``{"model": codec, "ema": {...}, "discriminator": module}`` → ``<key>.safetensors``.
    """
    final = Path(run_dir) / "checkpoints" / checkpoint_name(step)
    current = final
    try:
        # the same step may be saved twice (e.g. best, then periodic): atomic_folder swaps the old copy out
        with atomic_folder(final) as tmp:
            for key, value in weights.items():
                current = tmp / f"{key}.safetensors"
                save_weights(value, current, metadata={"format": FORMAT, "step": str(step)})
            current = tmp / "state.pt"
            with open(current, "wb") as f:  # a Python file: a short write raises OSError with its errno
                torch.save(state, f)
            meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "step": step, "saved_at": time.time(),
                    "files": sorted(f"{k}.safetensors" for k in weights) + ["state.pt"], **meta}
            current = tmp / "meta.json"
            _write_meta(tmp, meta)
    except Exception as exc:  # atomic_folder has removed the temporary folder
        raise _write_error(final, current, exc) from exc
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
    """Complete checkpoints with a readable ``meta.json``, oldest first (others are skipped with a warning)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        if p.is_dir() and (m := _STEP_DIR.match(p.name)) and (p / "meta.json").is_file():
            try:
                read_meta(p)
            except ValueError as exc:
                _warn_once(str(p / "meta.json"), f"skipping checkpoint {p}: {exc}")
                continue
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def remove_incomplete(run_dir: str | Path) -> list[Path]:
    """Remove leftovers of writes a crash interrupted (``.tmp-*``/``.old-*`` folders; the hidden ``.<name>.*.tmp*``
    files of :mod:`codecfw.core.atomic` in the run directory and ``checkpoints/``). Call it only while holding the
    run directory's lock: the leftovers could otherwise be another run's writes."""
    root = Path(run_dir) / "checkpoints"
    removed = []
    for p in [*Path(run_dir).glob(".*.tmp*"), *(root.glob(".*.tmp*") if root.is_dir() else [])]:
        if p.is_file():
            p.unlink(missing_ok=True)
            removed.append(p)
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith((".tmp-", ".old-")):
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def read_best(run_dir: str | Path) -> dict[str, Any] | None:
    """``best.json``, or None when there is none or it cannot be read (warned; the caller falls back)."""
    path = Path(run_dir) / "checkpoints" / "best.json"
    if not path.is_file():
        return None
    try:
        best = json.loads(path.read_text())
        if not isinstance(best, dict) or not isinstance(best.get("checkpoint"), str) \
                or not _STEP_DIR.match(best["checkpoint"]):
            raise ValueError("expected {\"checkpoint\": \"step-XXXXXXXX\", ...}")
    except (OSError, ValueError) as exc:
        _warn_once(str(path), f"ignoring {path}: not readable ({str(exc)[:200]})")
        return None
    return best


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
        raise CheckpointError(
            f"{path}: holds objects other than tensors, which codecfw does not unpickle (weights_only=True): "
            f"{str(exc).splitlines()[0][:200]}. On a machine you trust, save its state dict with safetensors.") from None
    for key in allow_wrapper:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a flat state dict of tensors (the official checkpoint layout)")
    return state


def load_state(checkpoint: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The training state; ``weights_only=True``: nothing in it can run code."""
    state = load_tensor_pickle(Path(checkpoint) / "state.pt", map_location=map_location)
    if not isinstance(state, dict):
        raise CheckpointError(f"{Path(checkpoint) / 'state.pt'}: expected a dict of training state")
    return state


def best_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint ``best.json`` names, when it is readable and still there."""
    best = read_best(run_dir)
    found = Path(run_dir) / "checkpoints" / best["checkpoint"] if best else None
    return found if found is not None and (found / "meta.json").is_file() else None


def is_alias(path: str | Path) -> bool:
    """``RUN/checkpoints/best`` or ``RUN/checkpoints/latest`` (names, not folders)."""
    path = Path(path)
    return path.name in ALIASES and path.parent.name == "checkpoints" and not path.exists()


def resolve_run_checkpoint(path: Path) -> Path:
    """A run directory → its best checkpoint, else its latest; ``RUN/checkpoints/best`` and ``.../latest`` → that
    checkpoint; any other path is returned unchanged."""
    path = Path(path)
    if is_alias(path):
        run = path.parent.parent
        found = best_checkpoint(run) if path.name == "best" else latest_checkpoint(run)
        if found is None:
            raise FileNotFoundError(f"{path}: {run} has no {path.name} checkpoint"
                                    + (" (no validation has run yet; use checkpoints/latest)" if path.name == "best"
                                       else ""))
        return found
    if not (path / "checkpoints").is_dir():
        return path
    found = best_checkpoint(path) or latest_checkpoint(path)
    if found is None:
        raise FileNotFoundError(f"{path}: a run directory without any complete checkpoint")
    return found


def resolve_weights_file(path: str | Path, prefer_ema: bool = True) -> tuple[Path, Path | None]:
    """``--init-from`` accepts a checkpoint folder, a run directory (its best, else latest checkpoint) or a
    ``.safetensors`` file. Returns (model weights, EMA weights or None)."""
    path = Path(path)
    if path.is_file():
        if path.suffix != ".safetensors":
            raise CheckpointError(f"{path}: expected a .safetensors weights file, a checkpoint folder or a run "
                                  f"directory")
        return path, None
    path = resolve_run_checkpoint(path)
    model = path / "model.safetensors"
    if not model.is_file():
        raise FileNotFoundError(f"{path}: expected a checkpoint folder with model.safetensors, a run directory, "
                                f"or a .safetensors file")
    ema = path / "ema.safetensors"
    return model, (ema if prefer_ema and ema.is_file() else None)


def load_codec_weights(codec: nn.Module, path: str | Path, prefer_ema: bool = True, strict: bool = True,
                       allow_missing: bool = False) -> Path:
    """Load a checkpoint's codec weights (the EMA weights over them when present and ``prefer_ema``).

    ``allow_missing``: parameters the file lacks keep their initialisation, with a warning (fine-tuning a codec
    that adds a module to the checkpoint's architecture); weights the codec has no place for are still an error."""
    model_file, ema_file = resolve_weights_file(path, prefer_ema)
    missing, unexpected = load_weights(codec, model_file, strict=strict and not allow_missing)
    if allow_missing and unexpected:
        raise KeyError(f"{model_file}: weights do not match the model: unexpected {unexpected[:5]}"
                       f"{' ...' if len(unexpected) > 5 else ''}")
    if allow_missing and missing:
        log.warning("%s has no weights for %d tensor(s) of this codec (%s%s): they keep their initialisation",
                    model_file, len(missing), ", ".join(missing[:4]), " ..." if len(missing) > 4 else "")
    if ema_file is not None:
        shadow = read_safetensors(ema_file)
        params = dict(codec.named_parameters())
        with torch.no_grad():
            for name, value in shadow.items():
                if name in params:
                    params[name].copy_(value)
    return model_file


# ---------------------------------------------------------------------------------------------------------------
# Loading a codec (codecfw.load, codecfw eval, pretrained names)
# ---------------------------------------------------------------------------------------------------------------


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
