"""``codecfw ablate BASE VARIANT...``: side-by-side architecture ablations through one evaluation.

A variant is either a small recipe file that includes the base and changes a few keys::

    # recipes/ablations/simvq.yaml
    include: ../xcodec.yaml
    acoustic: {kind: simvq_residual, codebook_size: 4096}

or a named set of overrides on the base, ``name:key=value,key=value`` (values are YAML; a comma starts a new
override only when a ``key=`` follows it, so ``ratios=[8,5,4,2]`` stays whole). Each variant is trained through
the one training loop (``--train``, :class:`codecfw.core.training.trainer.Trainer`, optionally for ``--steps`` steps) or
evaluated as built (untrained weights seeded with ``train.seed``: a check of the plumbing, bitrate and token rate),
then scored by :func:`codecfw.core.evaluation.evaluate.evaluate` with the same metrics on the same clips. Outputs::

    OUT/variants/<name>/{recipe.yaml, run/ (training), eval/ (the full eval outputs)}
    OUT/comparison.csv, comparison.md     rows = variants; columns = bitrate, token rate, parameters, metrics
    OUT/plots/<column>.png                one bar chart per column
    OUT/ablation.json                     variants, their changes against the base, settings, errors

A variant that fails (bad recipe, training error) gets a row of NaN and its error in ``ablation.json``; the
others still run.
"""

from __future__ import annotations

import logging
import re
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
import yaml

from ..config import load_recipe, resolve_recipe_path
from ..data.dataset import load_clips
from ..metric import build_metrics, load_metric_configs
from .evaluate import CodecSystem, evaluate
from .report import write_comparison, write_json, write_text

logger = logging.getLogger("codecfw.ablate")


class AblationError(ValueError):
    """A variant specification is invalid; the message names it."""


@dataclass
class Variant:
    name: str
    recipe: str
    overrides: list[str] = field(default_factory=list)
    source: str = ""


_OVERRIDE_SPLIT = re.compile(r",(?=\s*[A-Za-z_][\w.\-]*\s*=)")


def split_overrides(text: str) -> list[str]:
    """``"a.b=1,c=[1,2],d=x"`` → ``["a.b=1", "c=[1,2]", "d=x"]``."""
    return [p.strip() for p in _OVERRIDE_SPLIT.split(text) if p.strip()]


def parse_variants(base: str, specs: Sequence[str], include_base: bool = True) -> list[Variant]:
    """The base (named ``base``) followed by one :class:`Variant` per spec (file or ``name:key=value,...``)."""
    variants = [Variant("base", base, [], base)] if include_base else []
    for spec in specs:
        path = Path(spec)
        if path.suffix.lower() in (".yaml", ".yml"):
            try:
                resolved = resolve_recipe_path(spec)
            except FileNotFoundError:
                raise AblationError(f"variant {spec!r}: no such recipe file") from None
            variants.append(Variant(path.stem, str(resolved), [], spec))
            continue
        name, sep, rest = spec.partition(":")
        if not sep:
            name, rest = "", spec
        overrides = split_overrides(rest)
        bad = [o for o in overrides if "=" not in o]
        if not overrides or bad:
            raise AblationError(f"variant {spec!r}: expected a recipe file (.yaml) or name:key=value[,key=value...]")
        variants.append(Variant(name.strip() or ",".join(o.split("=", 1)[0].split(".")[-1] + "=" +
                                                         o.split("=", 1)[1] for o in overrides), base, overrides, spec))
    names = [v.name for v in variants]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise AblationError(f"variant names must be unique; repeated: {', '.join(dupes)} (name them: name:key=value)")
    return variants


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: data}


def recipe_diff(base: dict[str, Any], other: dict[str, Any], ignore: tuple[str, ...] = ("name", "train.run_dir")
                ) -> list[str]:
    """Keys whose resolved values differ, as ``key=value`` (``key=<removed>`` when only the base has it)."""
    a, b = _flatten(base), _flatten(other)
    keys = sorted(set(a) | set(b))
    return [f"{k}={yaml.safe_dump(b[k], default_flow_style=True).strip() if k in b else '<removed>'}"
            .replace("\n...", "") for k in keys if a.get(k, object()) != b.get(k, object()) and k not in ignore]


def summarise_changes(changes: list[str], limit: int = 6) -> str:
    """The table's ``changes`` cell: every change when few; else the swapped kinds and a count (the full list is in
    ablation.json)."""
    if not changes:
        return "–"
    if len(changes) <= limit:
        return "; ".join(changes)
    kinds = [c for c in changes if c.split("=", 1)[0].endswith(".kind")]
    shown = kinds[:limit] if kinds else changes[:limit]
    return "; ".join(shown) + f"; … ({len(changes) - len(shown)} more keys differ)"


def run_ablation(base: str, variants: Sequence[Variant], out_dir: str | Path, *, data: str | None = None,
                 train: bool = False, steps: int | None = None, metrics: Sequence[str] | None = None,
                 overrides: Sequence[str] = (), registry: Any = None, device: str = "cpu",
                 split: str | None = None, limit: int | None = None, max_seconds: float | None = None,
                 sample_rate: int | None = None, probe: dict[str, Any] | None = None, report_clips: int = 2,
                 progress: bool = True) -> dict[str, Any]:
    """Train and/or evaluate every variant; write the comparison table, plots and ``ablation.json``."""
    from ..registry import get_registry

    registry = registry or get_registry()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metric_objs = build_metrics(load_metric_configs(metrics, registry), registry)
    extra = [*overrides, *([f"train.steps={steps}"] if steps else [])]
    base_recipe = load_recipe(base, list(extra), registry)
    base_data = base_recipe.model_dump(mode="json")
    clip_cache: dict[str, list] = {}
    rows, columns, directions, records = [], [], {}, []
    for variant in variants:
        record: dict[str, Any] = {"name": variant.name, "spec": variant.source, "recipe_file": variant.recipe,
                                  "overrides": variant.overrides}
        row: dict[str, Any] = {"variant": variant.name}
        rows.append(row)
        records.append(record)
        vdir = out_dir / "variants" / variant.name
        try:
            recipe = load_recipe(variant.recipe, [*extra, *variant.overrides], registry)
            record["changes"] = recipe_diff(base_data, recipe.model_dump(mode="json"))
            row["changes"] = summarise_changes(record["changes"])
            record["config_hash"] = recipe.config_hash()
            write_text(vdir / "recipe.yaml", yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))
            system = _trained_system(recipe, variant.name, vdir / "run", registry, device, progress, record) if train \
                else _untrained_system(recipe, variant.name, registry, device)
            source = data or recipe.data.valid
            if source is None:
                raise AblationError(f"variant {variant.name}: no evaluation data (give --data or set data.valid)")
            if source not in clip_cache:
                clip_cache[source] = load_clips(source, split=split, limit=limit)
            result = evaluate([system], clip_cache[source], metric_objs, vdir / "eval", sample_rate=sample_rate,
                              max_seconds=max_seconds, report_clips=report_clips, probe=probe, progress=progress,
                              data_source=str(source))
        except Exception as exc:  # noqa: BLE001 - one broken variant must not stop the others
            record["error"] = f"{type(exc).__name__}: {exc}"
            row.setdefault("changes", "–")
            logger.error("variant %s failed: %s", variant.name, record["error"])
            logger.debug("".join(traceback.format_exception(exc)))
            continue
        overall = result.overall(system.name)
        row["params_M"] = sum(p.numel() for p in system.codec.parameters()) / 1e6
        row.update({k: v for k, v in overall.items() if k not in ("system", "domain")})
        for col in result.columns:
            if col not in columns:
                columns.append(col)
                directions[col] = result.directions.get(col)
        if result.probe and "all_streams" in result.probe.get(system.name, {}):
            p = result.probe[system.name]
            row["probe_all"], row["probe_first"] = p["all_streams"]["accuracy"], p["first_stream"]["accuracy"]
            directions.update(probe_all=True, probe_first=True)
        record.update(eval_dir=str(vdir / "eval"), unavailable=result.unavailable, errors=result.errors)
    cols = ["params_M", *columns, *(["probe_all", "probe_first"] if "probe_all" in directions else [])]
    directions.setdefault("params_M", None)
    for row in rows:  # failed variants: explicit NaN, not empty cells
        for col in cols:
            row.setdefault(col, float("nan"))
    comparison = write_comparison(rows, "variant", cols, directions, out_dir, extra=["changes"])
    write_json(out_dir / "ablation.json", {"base": base, "train": train, "steps": steps, "data": data,
                                           "overrides": list(overrides), "variants": records, "rows": rows,
                                           "higher_is_better": directions})
    write_text(out_dir / "report.md", _render(base, train, steps, data, records, comparison, out_dir))
    return {"rows": rows, "variants": records, "comparison": comparison, "out_dir": out_dir}


def _render(base: str, train: bool, steps: int | None, data: str | None, records: list[dict[str, Any]],
            comparison: dict[str, Any], out_dir: Path) -> str:
    lines = ["# codecfw ablation", "",
             f"Base `{base}`; {'trained' + (f' for {steps} steps' if steps else '') if train else 'untrained (as built)'};"
             f" evaluated on `{data or 'data.valid of each recipe'}`.", "",
             comparison["markdown"].read_text(), "## Plots", ""]
    lines += [f"![{p.stem}]({p.relative_to(out_dir)})" for p in comparison["plots"]]
    lines += ["", "## Variants", ""]
    for r in records:
        status = f"**failed**: {r['error']}" if "error" in r else f"[eval report]({Path('variants', r['name'], 'eval', 'report.md')})"
        what = summarise_changes(r["changes"], limit=12) if "changes" in r else "recipe not resolved"
        lines.append(f"- **{r['name']}** (`{r['spec']}`): {'same as the base' if what == '–' else what} — {status}")
    return "\n".join(lines) + "\n"


def _untrained_system(recipe: Any, name: str, registry: Any, device: str) -> CodecSystem:
    from ..codec import build_codec

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.train.seed)
        codec = build_codec(recipe, registry)
    info = {"checkpoint": None, "checkpoint_hash": f"untrained (seed {recipe.train.seed})",
            "config_hash": recipe.config_hash(), "recipe": recipe.model_dump(mode="json")}
    return CodecSystem(codec, name, device, info)


def _trained_system(recipe: Any, name: str, run_dir: Path, registry: Any, device: str, progress: bool,
                    record: dict[str, Any]) -> CodecSystem:
    from ..checkpoint import load_checkpoint, resolve_checkpoint_dir
    from .evaluate import file_sha256
    from ..training.trainer import Trainer

    trainer = Trainer(recipe, registry=registry, run_dir=run_dir, device=device, progress=progress)
    try:
        trainer.setup()
        record["train"] = trainer.train()
    finally:
        trainer.close()
    codec, loaded, meta = load_checkpoint(run_dir, registry)
    folder = resolve_checkpoint_dir(run_dir)
    info = {"checkpoint": str(folder), "step": meta.get("step"), "config_hash": loaded.config_hash(),
            "checkpoint_hash": {p.name: file_sha256(p)[:16] for p in sorted(folder.glob("*.safetensors"))},
            "recipe": loaded.model_dump(mode="json")}
    return CodecSystem(codec, name, device, info)
