"""Writing evaluation results: CSV, JSON, Markdown tables, spectrogram figures and bar charts (matplotlib, Agg).

Every file is written to a temporary name beside its destination and renamed into place, so an interrupted run
never leaves a half-written table that looks complete.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import re
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from ..atomic import atomic_path, write_text

logger = logging.getLogger("codecfw.eval")

#: Columns shown first in comparison tables.
LEADING = ("bitrate_kbps", "token_rate")


# ------------------------------------------------------------------------------------------------------------
# Atomic writers
# ------------------------------------------------------------------------------------------------------------


def clean(obj: Any) -> Any:
    """NaN/inf → None, tensors → lists, paths → str: strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if isinstance(obj, Tensor):
        return clean(obj.tolist())
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    return str(obj)


def write_json(path: str | Path, obj: Any) -> Path:
    return write_text(path, json.dumps(clean(obj), indent=2, allow_nan=False) + "\n")


def write_csv(path: str | Path, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> Path:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (_csv_value(row.get(k))) for k in columns})
    return write_text(path, buf.getvalue())


def _csv_value(v: Any) -> Any:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else repr(v)
    return "" if v is None else v


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "item"


# ------------------------------------------------------------------------------------------------------------
# Tables
# ------------------------------------------------------------------------------------------------------------


def fmt(v: Any) -> str:
    if isinstance(v, float):
        if not math.isfinite(v):
            return "–"
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.3e}"
    return str(v) if v is not None else "–"


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], directions: dict[str, bool | None]
                   | None = None, bold_best: bool = False) -> str:
    """A GitHub Markdown table; with ``bold_best`` the best value of each column with a direction is bold."""
    directions = directions or {}
    best: dict[str, float] = {}
    if bold_best and len(rows) > 1:
        for col in columns:
            d = directions.get(col)
            vals = [r.get(col) for r in rows if isinstance(r.get(col), float) and math.isfinite(r.get(col))]
            if d is not None and vals:
                best[col] = max(vals) if d else min(vals)
    head = [f"{c} {'↑' if directions.get(c) else '↓' if directions.get(c) is False else ''}".strip() for c in columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for r in rows:
        cells = []
        for c in columns:
            text = fmt(r.get(c))
            if c in best and r.get(c) == best[c]:
                text = f"**{text}**"
            cells.append(text.replace("|", "\\|"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def order_columns(columns: Sequence[str]) -> list[str]:
    lead = [c for c in LEADING if c in columns]
    return lead + [c for c in columns if c not in lead]


# ------------------------------------------------------------------------------------------------------------
# Figures
# ------------------------------------------------------------------------------------------------------------


def have_matplotlib() -> bool:
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _savefig(fig: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    return path


def log_spectrogram(wav: Tensor, n_fft: int = 1024, hop: int = 256) -> Tensor:
    """wav : Tensor[N] → dB magnitude Tensor[F x T] (Hann window)."""
    spec = torch.stft(wav.float(), n_fft, hop, window=torch.hann_window(n_fft), center=True, return_complex=True)
    return 20 * spec.abs().clamp_min(1e-5).log10()


def spectrogram_figure(signals: dict[str, Tensor], sample_rate: int, path: str | Path, title: str = "",
                       ncols: int = 5) -> Path:
    """Original beside reconstructions: one panel per entry of ``signals`` (``"original"`` first), ``ncols`` per row,
    one dB scale for all panels."""
    plt = _pyplot()
    specs = {name: log_spectrogram(w) for name, w in signals.items()}
    vmax = max(float(s.max()) for s in specs.values())
    cols = min(ncols, len(specs))
    rows = math.ceil(len(specs) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), sharex=True, sharey=True, squeeze=False)
    for ax, (name, spec) in zip(axes.flat, specs.items()):
        seconds = signals[name].numel() / sample_rate
        im = ax.imshow(spec.numpy(), origin="lower", aspect="auto", cmap="magma", vmin=vmax - 80, vmax=vmax,
                       extent=(0, seconds, 0, sample_rate / 2000))
        ax.set_title(name, fontsize=9)
    for ax in list(axes.flat)[len(specs):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("kHz")
    for ax in axes[-1]:
        ax.set_xlabel("s")
    fig.colorbar(im, ax=axes.ravel().tolist(), label="dB", shrink=0.8)
    if title:
        fig.suptitle(title, fontsize=10, y=1.0 + 0.02 / rows)
    try:
        return _savefig(fig, Path(path))
    finally:
        plt.close(fig)


def _bars(ax: Any, labels: Sequence[str], values: Sequence[float], column: str, direction: bool | None) -> None:
    heights = [v if math.isfinite(v) else 0.0 for v in values]
    bars = ax.bar(range(len(labels)), heights, color=["#4c72b0" if math.isfinite(v) else "#cccccc" for v in values])
    for bar, v in zip(bars, values):
        ax.annotate(fmt(v), (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom",
                    fontsize=7)
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=7)
    note = " ↑" if direction else " ↓" if direction is False else ""
    ax.set_title(column + note, fontsize=8)


def bar_chart(labels: Sequence[str], values: Sequence[float], column: str, direction: bool | None,
              path: str | Path) -> Path:
    """One column as a bar chart (title arrow: ↑ higher is better, ↓ lower is better)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(3.5, 0.9 * len(labels) + 1.5), 3.0))
    _bars(ax, labels, values, column, direction)
    try:
        return _savefig(fig, Path(path))
    finally:
        plt.close(fig)


def bar_grid(labels: Sequence[str], table: dict[str, Sequence[float]], directions: dict[str, bool | None],
             path: str | Path, ncols: int = 4) -> Path:
    """Every column of a comparison as one panel of a single figure (one file, rendered once)."""
    plt = _pyplot()
    n = len(table)
    nrows = max(1, math.ceil(n / ncols))
    width = max(2.6, 0.45 * len(labels) + 1.2)
    fig, axes = plt.subplots(nrows, min(ncols, n), figsize=(width * min(ncols, n), 2.6 * nrows), squeeze=False)
    for ax, (column, values) in zip(axes.flat, table.items()):
        _bars(ax, labels, values, column, directions.get(column))
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.tight_layout()
    try:
        return _savefig(fig, Path(path))
    finally:
        plt.close(fig)


def write_comparison(rows: Sequence[dict[str, Any]], key: str, columns: Sequence[str],
                     directions: dict[str, bool | None], out_dir: str | Path, plots: bool = True,
                     extra: Sequence[str] = (), per_column: bool = False) -> dict[str, Any]:
    """One table, rows = systems or variants: ``comparison.csv``, ``comparison.md``, ``plots/comparison.png`` (a bar
    chart per column, one figure) and, with ``per_column``, ``plots/<column>.png`` each."""
    out_dir = Path(out_dir)
    cols = order_columns([c for c in columns if any(_finite(r.get(c)) for r in rows)])
    write_csv(out_dir / "comparison.csv", rows, [key, *extra, *cols])
    write_text(out_dir / "comparison.md", markdown_table(rows, [key, *extra, *cols], directions, bold_best=True))
    charts = []
    if plots and cols and have_matplotlib():
        labels = [str(r[key]) for r in rows]
        table = {c: [float(r.get(c, float("nan"))) for r in rows] for c in cols}
        charts.append(bar_grid(labels, table, directions, out_dir / "plots" / "comparison.png"))
        if per_column:
            charts += [bar_chart(labels, v, c, directions.get(c), out_dir / "plots" / f"{safe_name(c)}.png")
                       for c, v in table.items()]
    return {"csv": out_dir / "comparison.csv", "markdown": out_dir / "comparison.md", "plots": charts,
            "columns": cols}


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


# ------------------------------------------------------------------------------------------------------------
# The evaluation outputs
# ------------------------------------------------------------------------------------------------------------


def write_outputs(result: Any, out_dir: Path) -> None:
    """clips.csv, summary.csv, results.json, artifacts, example audio and spectrograms, report.md (+ comparison)."""
    from ..data.dataset import write_audio

    out_dir.mkdir(parents=True, exist_ok=True)
    result.out_dir = out_dir
    base = ["system", "clip", "domain", *(["group"] if any("group" in r for r in result.rows) else []), "seconds", "rtf"]
    write_csv(out_dir / "clips.csv", result.rows, base + result.columns + ["skipped"])
    write_csv(out_dir / "summary.csv", result.summary, ["system", "domain", "clips", "seconds", "rtf",
                                                        *result.columns])
    for system, files in result.artifacts.items():
        for fname, records in files.items():
            write_text(out_dir / "artifacts" / safe_name(system) / fname,
                       "".join(json.dumps(clean(r)) + "\n" for r in records))
    sr = result.settings["sample_rate"]
    figures = {}
    plots = have_matplotlib()
    if not plots:
        logger.warning("matplotlib is not installed: no spectrograms or bar charts (pip install codecfw[eval])")
    for clip_id, signals in result.examples.items():
        folder = out_dir / "audio" / safe_name(clip_id)
        folder.mkdir(parents=True, exist_ok=True)
        for name, wav in signals.items():
            write_audio(folder / f"{safe_name(name)}.wav", wav, sr)
        if plots:
            figures[clip_id] = spectrogram_figure(signals, sr, out_dir / "plots" / f"spec_{safe_name(clip_id)}.png",
                                                  title=clip_id)
    systems = [s for s in result.settings["systems"]]
    overall = [dict(result.overall(s), system=s) for s in systems]
    comparison = None
    if len(systems) > 1:
        comparison = write_comparison(overall, "system", result.columns, result.directions, out_dir)
    write_json(out_dir / "results.json", {**result.settings, "columns": result.columns,
                                          "higher_is_better": result.directions, "summary": result.summary,
                                          "unavailable": result.unavailable, "errors": result.errors,
                                          "probe": result.probe})
    write_text(out_dir / "report.md", render_report(result, overall, figures, out_dir, comparison))


def render_report(result: Any, overall: list[dict[str, Any]], figures: dict[str, Path], out_dir: Path,
                  comparison: dict[str, Any] | None) -> str:
    s = result.settings
    lines = ["# codecfw evaluation report", "",
             f"Created {s['created']} from `{s['data']['source']}`: {s['data']['clips']} clips "
             f"({', '.join(f'{k}: {v}' for k, v in s['data']['domains'].items())}).", "",
             "## Settings", "",
             f"- evaluation sample rate: **{s['sample_rate']} Hz**; resampler: {s['resampler']['function']} "
             f"({s['resampler']['resampling_method']}, width {s['resampler']['lowpass_filter_width']}, rolloff "
             f"{s['resampler']['rolloff']}); alignment: {s['alignment']}; mixdown: {s['mixdown']}",
             f"- crop: {str(s['data']['max_seconds']) + ' s' if s['data']['max_seconds'] else 'whole clips'}", ""]
    lines += ["| metric | kind | settings | better | domains |", "|---|---|---|---|---|"]
    for name, m in s["metrics"].items():
        st = m.get("settings", {})
        brief = {k: st[k] for k in ("parameter_set", "sample_rate", "mode", "extended", "zero_mean", "asr", "units")
                 if k in st and st[k] is not None}
        if "asr_model" in st:
            brief["asr_model"] = st["asr_model"].get("model") or st["asr_model"].get("hmm")
            brief["normaliser"] = st["text_normaliser"]["name"]
        better = result.directions.get(name)
        lines.append(f"| {name} | {m['kind']} | {', '.join(f'{k}={v}' for k, v in brief.items()) or '–'} | "
                     f"{'higher' if better else 'lower' if better is False else '–'} | "
                     f"{', '.join(m['domains']) if m['domains'] else 'all'} |")
    lines += ["", "| system | kind | kbps | tokens/s | checkpoint |", "|---|---|---|---|---|"]
    for name, st in s["systems"].items():
        ck = st.get("checkpoint_hash")
        ck = ", ".join(f"{k}: {v}" for k, v in ck.items()) if isinstance(ck, dict) else ck
        kbps = st.get("bitrate")
        lines.append(f"| {name} | {st['kind']} | {fmt(kbps / 1000) if kbps else '–'} | "
                     f"{fmt(st.get('token_rate')) if st.get('token_rate') else '–'} | {ck or '–'} |")
    lines.append("")
    if result.unavailable["metrics"] or result.unavailable["systems"]:
        lines += ["## Unavailable (reported, not fatal)", ""]
        for what, items in result.unavailable.items():
            lines += [f"- {what[:-1]} **{k}**: {v}" for k, v in items.items()]
        lines.append("")
    if result.errors:
        lines += ["## Errors (values are NaN)", ""]
        for system, items in result.errors.items():
            lines += [f"- {system} / {k}: {v['count']} clip(s), first {v['first_clip']}: {v['error']}"
                      for k, v in items.items()]
        lines.append("")
    cols = order_columns([c for c in result.columns if any(_finite(r.get(c)) for r in overall)])
    lines += ["## Results (all clips)", "", markdown_table(overall, ["system", "clips", *cols, "rtf"],
                                                           result.directions, bold_best=True)]
    if comparison:
        lines += [f"![comparison]({p.relative_to(out_dir)})" for p in comparison["plots"]] + [""]
    lines += ["## Per domain", ""]
    for system in s["systems"]:
        rows = [r for r in result.summary if r["system"] == system]
        lines += [f"### {system}", "", markdown_table(rows, ["domain", "clips", *cols], result.directions)]
    if result.probe:
        lines += ["## Semantic probe (SemantiCodec Table III protocol)", ""]
        for system, p in result.probe.items():
            lines.append(f"- **{system}** ({p.get('protocol')}; label `{p.get('label_key')}`, {p.get('n_clips')} "
                         f"clips, {len(p.get('classes', []))} classes, majority baseline "
                         f"{fmt(p.get('majority_baseline'))}): all streams {fmt(p['all_streams']['accuracy'])}, "
                         f"first stream `{p['first_stream'].get('stream')}` {fmt(p['first_stream']['accuracy'])} "
                         f"({p['first_stream'].get('features')})" if "all_streams" in p else
                         f"- **{system}**: {p.get('error')}")
        lines.append("")
    if figures:
        lines += ["## Examples (original beside reconstruction)", ""]
        for clip_id, fig in figures.items():
            audio = sorted((out_dir / "audio" / safe_name(clip_id)).glob("*.wav"))
            lines += [f"### {clip_id}", "", f"![{clip_id}]({fig.relative_to(out_dir)})", "",
                      "Audio: " + ", ".join(f"[{p.stem}]({p.relative_to(out_dir)})" for p in audio), ""]
    return "\n".join(lines)
