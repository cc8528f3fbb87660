"""Recipes: YAML files validated by pydantic models that are built after the plugins register.

Each slot of a recipe (``semantic``, ``acoustic``, ``decoder``, each item of ``discriminators`` and ``losses``) is a
discriminated union on ``kind`` over every config class registered for that slot, so a third-party kind validates
exactly like a built-in one (the ert3/nshconfig pattern, on pydantic v2). ``extra="forbid"`` everywhere turns a typo
into an error. :func:`load_recipe` collects *every* error with its YAML path before raising (torchtune's
``ConfigError`` idea) so one run of ``codecfw validate`` shows them all.

Composition rules:

- ``include: base.yaml`` (or a list) merges this file over its bases, paths relative to the including file.
  Dicts merge key by key; anything else replaces. A slot whose ``kind`` changes is replaced whole, so an ablation
  that swaps ``acoustic.kind`` does not inherit the old kind's keys.
- Overrides ``key.sub=value`` (values parsed as YAML, list items by index: ``losses.0.weight=2``) apply last, in
  order; ``acoustic.kind=other`` swaps the slot to that kind's defaults, and later overrides set its keys.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from .registry import Registry, get_registry

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"


class StrictModel(BaseModel):
    """Base for every config model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class PluginConfig(StrictModel):
    """Base for plugin configs. Subclasses declare ``kind: Literal["<kind>"] = "<kind>"``."""

    kind: str


class RecipeError(ValueError):
    """A recipe failed to load or validate. ``errors`` holds one ``"path: message"`` line per problem."""

    def __init__(self, source: str, errors: list[str]) -> None:
        self.source = source
        self.errors = errors
        super().__init__(f"{source}: {len(errors)} error(s)\n" + "\n".join(f"  {e}" for e in errors))


# --------------------------------------------------------------------------------------------------------------
# Sections every recipe has. Slot sections are added by build_recipe_model.
# --------------------------------------------------------------------------------------------------------------


class DataConfig(StrictModel):
    """Where audio comes from and how it is cut (see ``codecfw.core.data.dataset``)."""

    train: str | None = Field(None, description="manifest (.jsonl/.csv) or folder of audio for training")
    valid: str | None = Field(None, description="manifest or folder for validation; fixed crops")
    segment_seconds: float = Field(1.0, gt=0, description="random crop length for training")
    valid_segment_seconds: float | None = Field(None, gt=0, description="validation crop length (default: segment)")
    batch_size: int = Field(8, gt=0, description="examples per optimizer step per process (before accumulation)")
    num_workers: int = Field(0, ge=0)
    prefetch_factor: int = Field(2, gt=0)
    valid_clips: int = Field(4, ge=0, description="validation clips written as audio at each validation")
    gain: float = Field(1.0, gt=0, description="every loaded waveform (train and valid) is multiplied by this; "
                                              "X-Codec's reference uses 0.95 (audio_norm_scale)")
    mixdown: Literal["mean", "first"] = Field("mean", description="multichannel → mono: channel mean, or channel 0 "
                                              "(SemantiCodec's reference takes channel 0)")
    silence_threshold: float = Field(1e-4, ge=0, description="a file whose peak |x| is at most this is skipped as silent")
    scan_cache: str | None = Field(None, description="JSON file caching the file scan (keyed by path, size, mtime)")
    cache_audio: bool = Field(False, description="keep each resampled file in worker memory (small corpora only)")
    pin_memory: bool | None = Field(None, description="default: True when CUDA is available")
    persistent_workers: bool = Field(True, description="keep workers alive between epochs (when num_workers > 0)")


class TrainConfig(StrictModel):
    """The loop's settings (see ``codecfw.core.training.trainer``)."""

    steps: int = Field(1000, gt=0)
    seed: int = 0
    lr: float = Field(1e-4, gt=0)
    discriminator_lr: float | None = Field(None, gt=0, description="default: lr")
    betas: tuple[float, float] = (0.8, 0.99)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(0, ge=0)
    schedule: Literal["constant", "cosine", "exponential"] = "constant"
    lr_decay: float = Field(0.999996, gt=0, le=1, description="per-step factor for the exponential schedule")
    grad_accum: int = Field(1, gt=0)
    grad_clip: float | None = Field(None, gt=0)
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="autocast: bf16 on CUDA or CPU, fp16 "
                                                                           "(with a GradScaler) on CUDA; CPU runs "
                                                                           "fp16 as fp32")
    compile: bool = Field(False, description="torch.compile the codec's compile targets (T-UNet, DAC encoder and "
                                             "decoder) before training")
    compile_backend: str = Field("inductor", description="torch.compile backend (aot_eager/eager: debugging, no "
                                                         "C compiler needed)")
    ema_decay: float | None = Field(None, gt=0, lt=1, description="EMA of the weights; None disables it")
    discriminator_start: int = Field(0, ge=0, description="step from which the adversarial turns run")
    loss_weights: dict[str, float] = Field(default_factory=dict,
                                           description="weights of the slots' own losses by name (default 1.0)")
    log_every: int = Field(10, gt=0)
    valid_every: int = Field(500, gt=0)
    checkpoint_every: int = Field(500, gt=0)
    keep_last: int = Field(2, gt=0)
    run_dir: str | None = Field(None, description="default: runs/<name>-<config hash>")
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="cosine schedule floor, as a fraction of lr")
    gan_loss: Literal["lsgan", "hinge"] = Field("lsgan", description="adversarial loss (adversarial objective)")
    sync_buffers: bool = Field(True, description="DDP: broadcast buffers (EMA codebooks) from rank 0 after each step")
    find_unused_parameters: bool = Field(False, description="DDP: allow parameters without gradient in a step")
    valid_batches: int | None = Field(None, gt=0, description="validation batches per validation (default: all)")
    num_threads: int | None = Field(None, gt=0, description=(
        "CPU training: intra-op threads (torch.set_num_threads). None: torch's default (OMP_NUM_THREADS, else every "
        "core). Small models train faster on 1 thread and do not slow to a crawl when other jobs share the cores"))


class RecipeBase(StrictModel):
    name: str = "codec"
    description: str = ""
    sample_rate: int = Field(16000, gt=0)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    def config_hash(self) -> str:
        """A short stable hash of the resolved recipe (run ids, token-file headers)."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


_SLOT_FIELDS = {
    # field name → (slot, container, required)
    "semantic": ("semantic", None, True),
    "acoustic": ("acoustic", None, True),
    "decoder": ("decoder", None, True),
    "discriminators": ("discriminator", list, False),
    "losses": ("loss", list, False),
}


def _slot_type(registry: Registry, slot: str) -> Any:
    configs = [reg.config for reg in registry.kinds(slot).values()]
    if not configs:
        return PluginConfig  # validated later: "no kinds registered" is reported by kind check
    return Annotated[Union[tuple(configs)], Field(discriminator="kind")]


def build_recipe_model(registry: Registry | None = None) -> type[RecipeBase]:
    """The pydantic model of a recipe given the kinds registered now."""
    registry = registry or get_registry()
    fields: dict[str, Any] = {}
    for name, (slot, container, required) in _SLOT_FIELDS.items():
        tp = _slot_type(registry, slot)
        if container is list:
            fields[name] = (list[tp], Field(default_factory=list))
        else:
            fields[name] = (tp, ...) if required else (tp | None, None)
    return create_model("Recipe", __base__=RecipeBase, **fields)


# --------------------------------------------------------------------------------------------------------------
# Loading: includes, overrides, validation with every error collected.
# --------------------------------------------------------------------------------------------------------------


def resolve_recipe_path(name: str | Path) -> Path:
    """A recipe argument is a path, or the name of a recipe shipped in ``recipes/`` (``xcodec`` → xcodec.yaml)."""
    path = Path(name)
    if path.is_file():
        return path
    for candidate in (RECIPES_DIR / path, RECIPES_DIR / f"{path}.yaml"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"recipe {str(name)!r} not found: no such file, and no recipe of that name in {RECIPES_DIR}")


def merge(base: Any, override: Any) -> Any:
    """Deep-merge ``override`` over ``base`` (see the module docstring for the rules)."""
    if isinstance(base, dict) and isinstance(override, dict):
        if "kind" in override and "kind" in base and override["kind"] != base["kind"]:
            return copy.deepcopy(override)
        out = dict(base)
        for key, value in override.items():
            out[key] = merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    return copy.deepcopy(override)


def _read_yaml(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = path.resolve()
    if path in chain:
        raise RecipeError(str(path), [f"include: cycle {' -> '.join(str(p) for p in (*chain, path))}"])
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise RecipeError(str(path), [f"not valid YAML: {exc}"]) from exc
    except OSError as exc:
        raise RecipeError(str(path), [f"cannot read: {exc}"]) from exc
    if not isinstance(data, dict):
        raise RecipeError(str(path), [f"<root>: expected a mapping of sections, got {type(data).__name__}"])
    includes = data.pop("include", None)
    if includes is None:
        return data
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        raise RecipeError(str(path), [f"include: expected a path or a list of paths, got {includes!r}"])
    merged: dict[str, Any] = {}
    for inc in includes:
        inc_path = (path.parent / inc) if not Path(inc).is_absolute() else Path(inc)
        if not inc_path.is_file():
            try:
                inc_path = resolve_recipe_path(inc)
            except FileNotFoundError:
                raise RecipeError(str(path), [f"include: {inc!r} not found (looked in {path.parent} and {RECIPES_DIR})"])
        merged = merge(merged, _read_yaml(inc_path, (*chain, path)))
    return merge(merged, data)


def _parse_key(part: str) -> str | int:
    return int(part) if part.lstrip("-").isdigit() else part


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides; values are parsed as YAML (``true``, ``3``, ``[1,2]``, ``null``)."""
    data = copy.deepcopy(data)
    errors = []
    for item in overrides:
        if "=" not in item:
            errors.append(f"override {item!r}: expected key.sub=value")
            continue
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        parts = [_parse_key(p) for p in key.strip().split(".") if p]
        if not parts:
            errors.append(f"override {item!r}: empty key")
            continue
        node: Any = data
        ok = True
        for i, part in enumerate(parts[:-1]):
            if isinstance(node, list) and isinstance(part, int):
                if not -len(node) <= part < len(node):
                    errors.append(f"override {item!r}: index {part} out of range for {'.'.join(map(str, parts[:i]))}")
                    ok = False
                    break
                node = node[part]
            elif isinstance(node, dict):
                node = node.setdefault(part, {})
            else:
                errors.append(f"override {item!r}: {'.'.join(map(str, parts[:i + 1]))} is not a mapping")
                ok = False
                break
        if not ok:
            continue
        last = parts[-1]
        if last == "kind" and isinstance(node, dict) and node.get("kind") not in (None, value):
            node.clear()  # a new kind starts from its own defaults, as an include that changes the kind does
        if isinstance(node, list) and isinstance(last, int) and -len(node) <= last < len(node):
            node[last] = merge(node[last], value)
        elif isinstance(node, dict):
            node[last] = merge(node[last], value) if last in node else value
        else:
            errors.append(f"override {item!r}: cannot set {last!r} here")
    if errors:
        raise RecipeError("overrides", errors)
    return data


def load_recipe_data(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """The merged, overridden recipe as plain data (before validation)."""
    return apply_overrides(_read_yaml(resolve_recipe_path(path)), overrides)


def validate_recipe(data: dict[str, Any], registry: Registry | None = None, source: str = "<recipe>") -> RecipeBase:
    """Validate plain recipe data, raising :class:`RecipeError` with every problem at once."""
    model = build_recipe_model(registry)
    try:
        recipe = model.model_validate(data)
    except ValidationError as exc:
        raise RecipeError(source, format_validation_errors(exc, data, model)) from None
    errors = _check_kinds(recipe, registry or get_registry())
    if errors:
        raise RecipeError(source, errors)
    return recipe


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = (),
                registry: Registry | None = None) -> RecipeBase:
    resolved = resolve_recipe_path(path)
    return validate_recipe(load_recipe_data(resolved, overrides), registry, str(resolved))


def _check_kinds(recipe: RecipeBase, registry: Registry) -> list[str]:
    """Slots with no or one registered kind are not tagged unions; check their kind here."""
    errors = []
    for name, (slot, container, _) in _SLOT_FIELDS.items():
        value = getattr(recipe, name)
        items = value if container is list else [value]
        for i, item in enumerate(items):
            if item is None:
                continue
            known = registry.kinds(slot)
            if item.kind not in known:
                path = f"{name}.{i}.kind" if container is list else f"{name}.kind"
                errors.append(f"{path}: unknown kind {item.kind!r}; known kinds: {', '.join(sorted(known)) or 'none'}")
    return errors


# --------------------------------------------------------------------------------------------------------------
# Error messages: "acoustic.codebook_size: expected an integer > 0, got 'big'"
# --------------------------------------------------------------------------------------------------------------


def _yaml_path(loc: tuple, data: Any) -> tuple[list[str], Any]:
    """Drop the union tags pydantic inserts into ``loc`` by walking the raw data alongside it."""
    parts: list[str] = []
    node = data
    for item in loc:
        if isinstance(node, dict) and item not in node and node.get("kind") == item:
            continue  # tagged-union branch name, not a YAML key
        if item in ("function-after", "function-before", "function-wrap"):
            continue
        parts.append(str(item))
        if isinstance(node, dict):
            node = node.get(item)
        elif isinstance(node, list) and isinstance(item, int) and 0 <= item < len(node):
            node = node[item]
        else:
            node = None
    return parts, node


def _schema_at(schema: dict, loc: tuple, data: Any) -> dict | None:
    defs = schema.get("$defs", {})

    def resolve(node: dict) -> dict:
        while "$ref" in node:
            node = defs[node["$ref"].split("/")[-1]]
        return node

    node, value = resolve(schema), data
    for item in loc:
        node = resolve(node)
        if "discriminator" in node and isinstance(value, dict) and value.get("kind") == item:
            mapping = node["discriminator"].get("mapping", {})
            if item in mapping:
                node = resolve({"$ref": mapping[item]})
                continue
        if "anyOf" in node:  # Optional[X]: take the non-null branch
            branches = [b for b in node["anyOf"] if b.get("type") != "null"]
            if len(branches) == 1:
                node = resolve(branches[0])
        if "properties" in node and item in node["properties"]:
            node = node["properties"][item]
        elif "items" in node and isinstance(item, int):
            node = node["items"]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            return None
        if isinstance(value, dict):
            value = value.get(item)
        elif isinstance(value, list) and isinstance(item, int) and 0 <= item < len(value):
            value = value[item]
        else:
            value = None
    node = resolve(node)
    if "anyOf" in node:
        branches = [resolve(b) for b in node["anyOf"] if b.get("type") != "null"]
        if len(branches) == 1:
            nullable = len(branches) != len(node["anyOf"])
            node = dict(branches[0], **({"nullable": True} if nullable else {}))
    return node


_TYPE_NAMES = {"integer": "an integer", "number": "a number", "string": "a string", "boolean": "true or false",
               "array": "a list", "object": "a mapping"}


def _describe(node: dict | None) -> str | None:
    if not node:
        return None
    if "const" in node:
        return f"{node['const']!r}"
    if "enum" in node:
        return "one of " + ", ".join(repr(v) for v in node["enum"])
    tp = node.get("type")
    if tp is None:
        return None
    text = _TYPE_NAMES.get(tp, tp)
    bounds = []
    for key, op in (("exclusiveMinimum", ">"), ("minimum", ">="), ("exclusiveMaximum", "<"), ("maximum", "<=")):
        if key in node:
            bounds.append(f"{op} {node[key]}")
    if bounds:
        text += " " + " and ".join(bounds)
    if node.get("nullable"):
        text += " or null"
    return text


def format_validation_errors(exc: ValidationError, data: Any, model: type[BaseModel]) -> list[str]:
    schema = model.model_json_schema()
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        parts, _ = _yaml_path(loc, data)
        path = ".".join(parts) or "<root>"
        etype = err["type"]
        got = err.get("input")
        if etype == "extra_forbidden":
            parent = _schema_at(schema, loc[:-1], data) or {}
            allowed = ", ".join(sorted(parent.get("properties", {})))
            msg = f"unknown key; allowed keys: {allowed}" if allowed else "unknown key"
        elif etype == "union_tag_invalid":
            ctx = err.get("ctx", {})
            tags = sorted(t.strip().strip("'") for t in str(ctx.get("expected_tags", "")).split(","))
            msg = f"unknown kind {ctx.get('tag')!r}; known kinds: {', '.join(tags)}"
            path = f"{path}.kind"
        elif etype == "union_tag_not_found":
            node = _schema_at(schema, loc, data) or {}
            tags = ", ".join(sorted(node.get("discriminator", {}).get("mapping", {})))
            msg = f"missing 'kind'; known kinds: {tags}"
            path = f"{path}.kind"
        elif etype == "literal_error" and parts and parts[-1] == "kind":
            expected = err.get("ctx", {}).get("expected", "").replace("'", "")
            msg = f"unknown kind {got!r}; known kinds: {expected}"
        elif etype == "missing":
            msg = "required key is missing"
        else:
            expected = _describe(_schema_at(schema, loc, data))
            msg = f"expected {expected}, got {got!r}" if expected else f"{err['msg']}, got {got!r}"
            if expected and etype not in {"int_parsing", "int_type", "float_parsing", "float_type", "string_type",
                                          "bool_parsing", "bool_type", "greater_than", "greater_than_equal",
                                          "less_than", "less_than_equal", "literal_error", "enum", "list_type",
                                          "dict_type", "int_from_float", "model_type", "model_attributes_type"}:
                msg += f" ({err['msg']})"
        lines.append(f"{path}: {msg}")
    return lines
