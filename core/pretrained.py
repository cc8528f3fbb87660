"""Pretrained names: official checkpoints on the Hugging Face hub, converted to codecfw codecs on first use.

A name is registered through the ``register_pretrained(register)`` hook, like any plugin kind, so plugin packages
add their own::

    from codecfw import hookimpl
    from codecfw.core.pretrained import pretrained_spec

    @hookimpl
    def register_pretrained(register):
        spec = pretrained_spec("mycodec-base", repo_id="me/mycodec", files=["model.pth", "config.yaml"])
        register("mycodec-base", spec, convert_mycodec)   # or "my_package.convert:convert_mycodec"

A converter is ``converter(spec, files) -> Converted`` where ``files`` maps each name in ``spec.files`` to a local
path; it returns the codecfw recipe (plain data) and a state dict for the codec that recipe builds. :func:`load_pretrained`
fetches the files (``huggingface_hub.hf_hub_download``; offline it uses the hub cache or a local folder, and fails
with :class:`PretrainedUnavailable` naming the cache folder and the files expected there), converts, validates the
recipe, builds the codec, loads the weights strictly, and caches the result as a codecfw checkpoint folder under
``$CODECFW_CACHE/pretrained/<name>/`` so later loads skip the conversion.

codecfw's own names (SemantiCodec, X-Codec) are registered by :mod:`codecfw.plugins.pretrained.names` through the
``pretrained`` entry point, like a third party's; their converters are imported only when a name is loaded.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

from pydantic import Field, create_model

from .config import PluginConfig

ENV_CACHE = "CODECFW_CACHE"
ENV_LOCAL = "CODECFW_PRETRAINED_DIR"


class PretrainedUnavailable(FileNotFoundError):
    """The files of a pretrained name could not be downloaded and are not cached locally."""


class PretrainedSpec(PluginConfig):
    """Where a pretrained codec's official files live and what its converter needs. Subclassed per name by
    :func:`pretrained_spec` so the registry's ``kind`` is the name."""

    kind: str
    repo_id: str = Field("", description="Hugging Face hub repository, e.g. haoheliu/SemantiCodec; empty for a codec "
                                         "shipped inside a package (``folder``)")
    files: list[str] = Field(default_factory=list,
                             description="files of the repository the converter needs (paths inside the repo)")
    folder: str | None = Field(None, description="a codecfw checkpoint folder installed with a package "
                                                 "(``model.safetensors`` + ``meta.json``): loaded as it is, no "
                                                 "download and no conversion; see :func:`bundled_spec`")
    revision: str | None = Field(None, description="branch, tag or commit; None = the default branch")
    options: dict[str, Any] = Field(default_factory=dict, description="converter settings (token rate, ...)")
    description: str = ""
    license: str = ""
    url: str = ""


class ImporterSpec(PluginConfig):
    """A ``codecfw import SOURCE`` converter (slot ``importer``); subclass it with ``kind: Literal["<source>"]``."""

    kind: str


def pretrained_spec(name: str, **fields: Any) -> type[PretrainedSpec]:
    """A :class:`PretrainedSpec` subclass whose defaults describe ``name`` (instantiate it with no arguments)."""
    typed = {k: (Any, v) for k, v in fields.items()}
    safe = "".join(c if c.isalnum() else "_" for c in name)
    return create_model(f"Pretrained_{safe}", __base__=PretrainedSpec,
                        kind=(Literal[name], name), **typed)  # type: ignore[call-overload]


def bundled_spec(name: str, folder: str | os.PathLike, **fields: Any) -> type[PretrainedSpec]:
    """The spec of a codec whose weights ship inside a package: ``folder`` is a checkpoint folder (typically
    written by :func:`release_checkpoint` next to the registering module), so ``codecfw.load(name)`` works offline
    right after ``pip install``."""
    return pretrained_spec(name, folder=str(folder), **fields)


@dataclass
class Converted:
    """What a converter returns: the recipe (plain data, validated by codecfw) and the codec's state dict."""

    recipe: dict[str, Any]
    state_dict: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)


def lazy_converter(target: str) -> Callable[[PretrainedSpec, dict[str, Path]], Converted]:
    """A converter given as ``"package.module:function"``, imported when first called."""

    def convert(spec: PretrainedSpec, files: dict[str, Path]) -> Converted:
        module_name, _, attr = target.partition(":")
        try:
            fn = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise RuntimeError(f"pretrained {spec.kind!r}: its converter {target} is not available "
                               f"({type(exc).__name__}: {exc}); install or update the plugin that provides it") from None
        return fn(spec, files)

    convert.target = target  # type: ignore[attr-defined]
    return convert


# ---------------------------------------------------------------------------------------------------------------
# Lookup, download, conversion
# ---------------------------------------------------------------------------------------------------------------


def pretrained_names(registry=None) -> list[str]:
    from .registry import get_registry

    return sorted((registry or get_registry()).kinds("pretrained"))


def cache_root() -> Path:
    return Path(os.environ.get(ENV_CACHE) or Path.home() / ".cache" / "codecfw")


def hub_cache_folder(repo_id: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where huggingface_hub keeps ``repo_id``'s files."""
    from huggingface_hub import constants

    return Path(cache_dir or constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}"


def local_folder(name: str) -> Path:
    """A folder where the official files may be placed by hand (same relative paths as in the hub repository)."""
    root = os.environ.get(ENV_LOCAL)
    return Path(root) / name if root else cache_root() / "pretrained" / name / "files"


def fetch_files(spec: PretrainedSpec, cache_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """Local paths of ``spec.files``: from the local folder if complete, else through huggingface_hub (download
    when online, cache only when ``HF_HUB_OFFLINE=1`` or the hub is unreachable)."""
    if not spec.repo_id:
        raise PretrainedUnavailable(f"pretrained {spec.kind!r}: no hub repository to fetch files from"
                                    + (f" (its weights ship in {spec.folder})" if spec.folder else ""))
    local = local_folder(spec.kind)
    if all((local / f).is_file() for f in spec.files):
        return {f: local / f for f in spec.files}
    from huggingface_hub import hf_hub_download

    found: dict[str, Path] = {}
    missing: list[str] = []
    errors: list[str] = []
    # Cached files first (no network); then download the rest, and after the first failure stop trying the network
    # (an unreachable hub costs ~25 s of retries per file).
    online = True
    for name in spec.files:
        for local_only in ((True, False) if online else (True,)):
            try:
                found[name] = Path(hf_hub_download(spec.repo_id, name, revision=spec.revision, cache_dir=cache_dir,
                                                   local_files_only=local_only))
                break
            except Exception as exc:  # offline, unreachable, gated, missing file: all end in the same advice
                if not local_only:
                    online = False
                    errors.append(f"{name}: {type(exc).__name__}: {_first_line(exc)}")
        if name not in found:
            missing.append(name)
    if missing:
        folder = hub_cache_folder(spec.repo_id, cache_dir)
        raise PretrainedUnavailable(
            f"pretrained {spec.kind!r}: cannot download from the hub repository {spec.repo_id} and the files are not "
            f"cached.\n  cache folder: {folder}\n  files expected there: {', '.join(missing)}\n"
            f"  alternatively put all of {', '.join(spec.files)} (same relative paths) under {local}\n"
            f"  fix: go online and retry, or on a connected machine run "
            f"`hf download {spec.repo_id} {' '.join(missing)}` and copy {folder}"
            + (f"\n  hub error: {errors[0]}" if errors else ""))
    return found


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def converted_folder(spec: PretrainedSpec) -> Path:
    return cache_root() / "pretrained" / spec.kind / (spec.revision or "default")


def load_pretrained(name: str, registry=None, cache_dir: str | os.PathLike | None = None, reconvert: bool = False):
    """Fetch, convert (or reuse the cached conversion), validate, build, load weights.
    Returns (codec in eval mode, recipe, meta)."""
    from .checkpoint import CheckpointError, load_checkpoint
    from .registry import get_registry

    registry = registry or get_registry()
    reg = registry.get("pretrained", name)
    spec = reg.config()
    if spec.folder:
        return _load_bundled(spec, registry)
    target = converted_folder(spec)
    if not reconvert and (target / "model.safetensors").is_file():
        try:
            return load_checkpoint(target, registry, prefer_ema=False)
        except CheckpointError:
            pass  # stale conversion (plugin changed): convert again
    files = fetch_files(spec, cache_dir)
    converted = reg.build(spec, files)
    if not isinstance(converted, Converted):
        raise TypeError(f"pretrained {name!r}: converter returned {type(converted).__name__}, expected Converted")
    save_converted(target, spec, converted, registry)
    return load_checkpoint(target, registry, prefer_ema=False)


def save_converted(folder: Path, spec: PretrainedSpec, converted: Converted, registry) -> Path:
    """Write a converted codec as a checkpoint folder (``model.safetensors`` + ``meta.json``), atomically."""
    from .checkpoint import save_codec_folder
    from .config import validate_recipe

    recipe = validate_recipe(converted.recipe, registry, source=f"pretrained {spec.kind}")
    return save_codec_folder(folder, converted.state_dict, recipe, registry, pretrained=spec.model_dump(mode="json"),
                             **converted.metadata)


def pretrained_folder(name: str, registry=None) -> Path:
    """The codecfw checkpoint folder holding ``name``'s weights: the package's folder of a bundled name, else the
    cached conversion (fetched and converted first when needed). ``--init-from NAME`` trains from it."""
    from .registry import get_registry

    registry = registry or get_registry()
    spec = registry.get("pretrained", name).config()
    if spec.folder:
        return Path(spec.folder)
    load_pretrained(name, registry)
    return converted_folder(spec)


def _load_bundled(spec: PretrainedSpec, registry):
    from .checkpoint import CheckpointError, load_checkpoint

    folder = Path(spec.folder)
    if not (folder / "model.safetensors").is_file():
        raise PretrainedUnavailable(f"pretrained {spec.kind!r}: its weights should ship at {folder / 'model.safetensors'}"
                                    f" but the file is missing; reinstall the package that registers it")
    try:
        return load_checkpoint(folder, registry, prefer_ema=False)
    except CheckpointError as exc:
        raise CheckpointError(f"pretrained {spec.kind!r}: {exc}") from None


def release_checkpoint(checkpoint: str | os.PathLike, out: str | os.PathLike, *, dtype: Any = None,
                       overrides: Sequence[str] = (), registry=None, prefer_ema: bool = True,
                       max_bytes: int | None = None, **meta: Any) -> Path:
    """Write a trained checkpoint as a folder to ship (``model.safetensors`` + ``meta.json``): the EMA weights when
    the checkpoint has them and ``prefer_ema`` (else the raw ones), floating tensors cast to ``dtype`` (e.g.
    ``torch.float16`` halves the size; loading casts back to the model's dtype), the recipe with ``overrides``
    applied (``key.sub=value``, as on the command line: inputs that exist only on the training machine) and
    re-validated. Refuses (``ValueError``, nothing written) when the tensors exceed ``max_bytes``. Returns ``out``;
    written atomically."""
    from .checkpoint import load_checkpoint, resolve_checkpoint_dir, save_codec_folder
    from .config import apply_overrides, validate_recipe
    from .registry import get_registry

    registry = registry or get_registry()
    folder = resolve_checkpoint_dir(checkpoint)
    codec, recipe, source_meta = load_checkpoint(folder, registry, prefer_ema=prefer_ema)
    released = validate_recipe(apply_overrides(recipe.model_dump(mode="json"), list(overrides)), registry,
                               source=f"release of {folder}")
    state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v)
             for k, v in codec.state_dict().items()}
    size = sum(v.numel() * v.element_size() for v in state.values())
    if max_bytes is not None and size > max_bytes:
        raise ValueError(f"release of {folder}: the weights take {size / 2**20:.1f} MiB, over the limit of "
                         f"{max_bytes / 2**20:.1f} MiB (a smaller dtype or model); nothing written to {out}")
    trained = {k: source_meta[k] for k in ("step", "config_hash") if k in source_meta}
    weights = "ema" if prefer_ema and (folder / "ema.safetensors").is_file() else "raw"
    return save_codec_folder(Path(out), state, released, registry, **{
        "step": source_meta.get("step", 0), "weights": weights,
        "trained_from": {"checkpoint": folder.name, **trained}, **meta})
