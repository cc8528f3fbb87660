"""Training curves of a run directory: its ``metrics.jsonl`` (one JSON object per logged step, ``split`` train or
valid) read into series and drawn as one figure of small panels (matplotlib, Agg).

A run that resumed after an interruption logs the steps between its last checkpoint and the interruption twice;
the later record of a step wins, so the curves show the run that the checkpoints hold.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

#: Default panels: (title, [(split, key), ...]); keys missing from a run are left out.
PANELS: list[tuple[str, list[tuple[str, str]]]] = [
    ("mel reconstruction", [("train", "loss/mel"), ("valid", "valid/loss/mel")]),
    ("validation log-mel L1 (EMA weights)", [("valid", "valid/log_mel_l1")]),
    ("anchoring (projector vs teacher)", [("train", "loss/anchoring")]),
    ("semantic perplexity", [("train", "metric/semantic_perplexity"), ("valid", "valid/metric/semantic_perplexity")]),
    ("adversarial", [("train", "loss/adversarial"), ("train", "loss/feature_matching"),
                     ("train", "loss/discriminator")]),
    ("commitment / residual RMS", [("train", "loss/commitment"), ("train", "metric/residual_rms")]),
    ("codebook usage per batch", [("train", "metric/semantic_usage"), ("train", "metric/acoustic_usage")]),
    ("spectral convergence / P.862 disturbance", [("train", "loss/multi_resolution_stft"),
                                                  ("valid", "valid/loss/multi_resolution_stft"),
                                                  ("train", "loss/pesq"), ("valid", "valid/loss/pesq")]),
    ("learning rate", [("train", "lr/generator"), ("train", "lr/discriminator")]),
]


def read_metrics(run_dir: str | Path) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """``{split: {key: [(step, value), ...]}}`` sorted by step, the last record of a repeated step kept. Lines
    that are not JSON objects (a line cut short by a crash) are skipped."""
    file = Path(run_dir) / "metrics.jsonl"
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no metrics log (expected a codecfw run directory)")
    by_step: dict[str, dict[int, dict[str, float]]] = {}
    for line in file.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(record, dict) or "step" not in record:
            continue
        values = {k: float(v) for k, v in record.items() if isinstance(v, (int, float)) and k not in ("step", "time")}
        by_step.setdefault(str(record.get("split", "train")), {})[int(record["step"])] = values
    series: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for split, steps in by_step.items():
        for step in sorted(steps):
            for key, value in steps[step].items():
                series.setdefault(split, {}).setdefault(key, []).append((step, value))
    return series


def smooth(values: Sequence[float], window: int) -> list[float]:
    """Centred moving average over ``window`` points (NaN-aware; shorter at the ends)."""
    half = window // 2
    out = []
    for i in range(len(values)):
        part = [v for v in values[max(0, i - half):i + half + 1] if not math.isnan(v)]
        out.append(sum(part) / len(part) if part else math.nan)
    return out


def plot_curves(run_dir: str | Path, out: str | Path, panels=PANELS, smooth_window: int = 9, title: str | None = None
                ) -> Path:
    """Draw ``panels`` of the run's curves into ``out`` (PNG); training series are smoothed (raw values faint)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from ..atomic import atomic_path

    series = read_metrics(run_dir)
    present = [(name, [(s, k) for s, k in keys if k in series.get(s, {})]) for name, keys in panels]
    present = [(name, keys) for name, keys in present if keys]
    if not present:
        raise ValueError(f"{run_dir}: none of the plotted keys is in metrics.jsonl")
    cols = 2
    rows = math.ceil(len(present) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(11, 2.6 * rows), squeeze=False)
    for ax, (name, keys) in zip(axes.flat, present):
        for split, key in keys:
            steps, values = zip(*series[split][key])
            label = key.split("/", 1)[-1] if split == "train" else f"{key.removeprefix('valid/')} (valid)"
            if split == "train" and len(values) > smooth_window:
                line, = ax.plot(steps, values, alpha=0.2, linewidth=0.6)
                ax.plot(steps, smooth(values, smooth_window), color=line.get_color(), linewidth=1.2, label=label)
            else:
                ax.plot(steps, values, marker="o", markersize=3, linewidth=1.2, label=label)
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(present):]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("step", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return out
