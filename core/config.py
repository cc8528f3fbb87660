"""Recipes: YAML files validated by pydantic models that are built after the plugins register.

Each slot of a recipe (``semantic``, ``acoustic``, ``decoder``, each item of ``discriminators`` and ``losses``) is a
discriminated union on ``kind`` over every config class registered for that slot, so a third-party kind validates
exactly like a built-in one (the ert3/nshconfig pattern, on pydantic v2). ``extra="forbid"`` everywhere turns a typo
into an error. :func:`load_recipe` collects *every* error with its YAML path before raising (torchtune's
``ConfigError`` idea) so one run of ``codecfw validate`` shows them all.

Composition rules:

- ``include: base.yaml`` (or a list) merges this file over its bases, paths relative to the including file.
  An included file must be a ``.yaml``/``.yml`` file below the folder of the recipe given on the command line or
  that folder's parent (``ablations/x.yaml`` includes ``../base.yaml``), or a shipped recipe (``recipes/``, also by
  name): a recipe cannot make codecfw read, or echo, any other file.
  Dicts merge key by key; anything else replaces. A slot whose ``kind`` changes is replaced whole, so an ablation
  that swaps ``acoustic.kind`` does not inherit the old kind's keys.
- Overrides ``key.sub=value`` (values parsed as YAML, list items by index: ``losses.0.weight=2``) apply last, in
  order; ``acoustic.kind=other`` swaps the slot to that kind's defaults, and later overrides set its keys.

Untrusted text: recipes and override values are read by a safe YAML loader with limits (file size, aliases, and
the number of values after alias expansion), so an alias bomb is an error, not a hang; values quoted in error
messages are shortened.
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


# Limits on untrusted recipe text (a real recipe is a few KiB with no aliases).
MAX_RECIPE_BYTES = 1 << 20
MAX_YAML_ALIASES = 256
MAX_YAML_VALUES = 100_000
MAX_CODEBOOK_SIZE = 1 << 24  # 16.7M entries: far above any published codec (SemantiCodec's largest is 32768)

CodebookSize = Annotated[int, Field(gt=1, le=MAX_CODEBOOK_SIZE, description="entries of the codebook")]
"""The type of every ``codebook_size`` setting: a huge value is a recipe error, not a failed allocation."""


def clip_text(text: str, limit: int = 200) -> str:
    """``text`` cut to ``limit`` characters (values quoted in error messages may come from untrusted input)."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


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
    nonfinite: Literal["stop", "skip"] = Field(
        "stop", description="a NaN/Inf loss or gradient: 'stop' ends the run with a message, keeping the last good "
                            "checkpoint; 'skip' leaves the weights and optimizer untouched for that turn and goes on")


class RecipeBase(StrictModel):
    name: str = Field("codec", pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$",
                      description="names the run directory runs/<name>-<hash>: letters, digits, . _ + -")
    description: str = ""
    sample_rate: int = Field(16000, gt=0)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    # A permission, not part of the codec: left out of dumps, so it changes no config hash, run id or token file.
    allow_random_frozen: bool | list[str] = Field(False, exclude=True, description=(
        "train/cluster although frozen parts that need pretrained weights are random (tiny recipes, tests, smoke "
        "runs): true for all, or a list of part keys such as [semantic.audiomae]. Never needed when starting from "
        "a checkpoint that holds the weights (--init-from, resuming)"))

    def config_hash(self) -> str:
        """A short stable hash of the resolved recipe (token-file headers, checkpoints)."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def run_hash(self) -> str:
        """The identity of a training run: the hash of the recipe without :data:`SESSION_SETTINGS`, the keys that
        may change between the sessions of one run (how long and how fast it trains, how often it logs). So
        ``codecfw train RECIPE train.steps=800`` finds and continues the 400-step run of ``RECIPE``."""
        data = self.model_dump(mode="json")
        for section, keys in SESSION_SETTINGS.items():
            for key in keys:
                (data.get(section) or {}).pop(key, None) if section else data.pop(key, None)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


# Keys a resumed run takes from the new recipe (the trainer applies and logs changes); every other key defines the
# run. Changing the model, the data, the batch, the seed, the precision or the objective starts another run.
SESSION_SETTINGS: dict[str, tuple[str, ...]] = {
    "": ("description",),
    "train": ("steps", "lr", "discriminator_lr", "betas", "weight_decay", "warmup_steps", "schedule", "lr_decay",
              "min_lr_ratio", "grad_clip", "log_every", "valid_every", "checkpoint_every", "keep_last", "run_dir",
              "valid_batches", "nonfinite", "sync_buffers", "find_unused_parameters", "num_threads"),
    "data": ("num_workers", "prefetch_factor", "pin_memory", "persistent_workers", "scan_cache", "valid_clips"),
}


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


class _LimitedLoader(yaml.SafeLoader):
    """PyYAML's safe loader with a budget: at most ``MAX_YAML_ALIASES`` aliases and ``MAX_YAML_VALUES`` merged
    mapping entries (merge keys ``<<`` can double a mapping per level without any alias count to show for it)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_YAML_ALIASES:
                raise yaml.composer.ComposerError(None, None, f"more than {MAX_YAML_ALIASES} aliases (*name); a "
                                                  f"recipe does not need that many", self.peek_event().start_mark)
        return super().compose_node(parent, index)

    def flatten_mapping(self, node: Any) -> None:
        super().flatten_mapping(node)
        if len(node.value) > MAX_YAML_VALUES:
            raise yaml.constructor.ConstructorError(None, None, f"a mapping merges more than {MAX_YAML_VALUES} "
                                                    f"entries (alias/merge-key expansion)", node.start_mark)


def _count_values(data: Any, limit: int) -> int:
    """Values of ``data`` as a tree (an alias counts each time it is used); stops counting past ``limit``."""
    count, stack = 0, [data]
    while stack and count <= limit:
        node = stack.pop()
        count += 1
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return count


def parse_yaml(text: str) -> Any:
    """Untrusted YAML text → plain data, or ``ValueError`` saying which limit it broke (see the module docstring)."""
    try:
        data = yaml.load(text, Loader=_LimitedLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None)
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ValueError(f"not valid YAML: {clip_text(str(problem or exc).strip())}{where}") from None
    if _count_values(data, MAX_YAML_VALUES) > MAX_YAML_VALUES:
        raise ValueError(f"expands to more than {MAX_YAML_VALUES} values through its aliases (*name); refused "
                         f"(a YAML alias bomb?)")
    return data


def _read_yaml(path: Path, chain: tuple[Path, ...] = (), roots: tuple[Path, ...] | None = None) -> dict[str, Any]:
    path = path.resolve()
    if path in chain:
        raise RecipeError(str(path), [f"include: cycle {' -> '.join(str(p) for p in (*chain, path))}"])
    # The top-level recipe's folder and its parent (an ablations/ folder includes ../base.yaml, as the shipped
    # recipes do), and the shipped recipes.
    roots = roots or (path.parent.parent, RECIPES_DIR.resolve())
    try:
        if path.stat().st_size > MAX_RECIPE_BYTES:
            raise RecipeError(str(path), [f"<file>: {path.stat().st_size} bytes; a recipe is at most "
                                          f"{MAX_RECIPE_BYTES} bytes"])
        data = parse_yaml(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise RecipeError(str(path), [f"<file>: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
                                      f"{exc.start}); a recipe is a YAML text file"]) from None
    except ValueError as exc:
        if isinstance(exc, RecipeError):
            raise
        raise RecipeError(str(path), [str(exc)]) from None
    except OSError as exc:
        raise RecipeError(str(path), [f"cannot read: {exc.strerror or exc}"]) from None
    if not isinstance(data, dict):
        raise RecipeError(str(path), [f"<root>: expected a mapping of sections, got {type(data).__name__}"])
    includes = data.pop("include", None)
    if includes is None:
        return data
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        raise RecipeError(str(path), [f"include: expected a path or a list of paths, got "
                                      f"{clip_text(repr(includes))}"])
    merged: dict[str, Any] = {}
    for inc in includes:
        merged = merge(merged, _read_yaml(_include_path(path, inc, roots), (*chain, path), roots))
    return merge(merged, data)


def _include_path(including: Path, inc: str, roots: tuple[Path, ...]) -> Path:
    """Where ``include: inc`` of ``including`` points, if it may be read: a ``.yaml``/``.yml`` file below one of
    ``roots`` (relative to the including file, or a shipped recipe's name). Nothing outside is opened."""
    shown = clip_text(repr(inc), 120)
    candidates = [(including.parent / inc).resolve()]
    if not Path(inc).is_absolute():
        candidates += [(RECIPES_DIR / inc).resolve(), (RECIPES_DIR / f"{inc}.yaml").resolve()]
    allowed = [c for c in candidates if any(c.is_relative_to(r) for r in roots)]
    for candidate in allowed:
        if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
            return candidate
    if not allowed:
        raise RecipeError(str(including), [f"include: {shown} resolves to {candidates[0]}, outside {roots[0]} (the "
                                           f"recipe's folder and its parent) and the shipped recipes {RECIPES_DIR}; an include "
                                           f"must stay there"])
    raise RecipeError(str(including), [f"include: {shown} not found: expected a .yaml file in {including.parent} "
                                       f"or a shipped recipe in {RECIPES_DIR}"])


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
        item = clip_text(item, 120)  # quoted in the messages below
        try:
            value = parse_yaml(raw) if raw != "" else ""
        except ValueError as exc:
            if "valid YAML" not in str(exc):  # a limit, not a plain string that happens not to parse
                errors.append(f"override {item!r}: value {exc}")
                continue
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
    if "pattern" in node:
        text += f" matching {node['pattern']}"
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
            shown = clip_text(repr(got))
            msg = f"expected {expected}, got {shown}" if expected else f"{err['msg']}, got {shown}"
            if expected and etype not in {"int_parsing", "int_type", "float_parsing", "float_type", "string_type",
                                          "bool_parsing", "bool_type", "greater_than", "greater_than_equal",
                                          "less_than", "less_than_equal", "literal_error", "enum", "list_type",
                                          "dict_type", "int_from_float", "model_type", "model_attributes_type",
                                          "string_pattern_mismatch"}:
                msg += f" ({err['msg']})"
        lines.append(f"{clip_text(path, 120)}: {msg}")
    return lines
