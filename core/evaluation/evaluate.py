"""``codecfw eval``: metrics over a dataset through a codec (and non-neural anchors), with every setting recorded.

::

    clips (manifest / folder) ──► System.process(wav) ──► Reconstruction(waveform, tokens)
                                                             │
               metrics (registry slot "metric") ◄────────────┘   one failing metric → NaN + one logged error

A :class:`System` is anything that turns a waveform into a reconstruction: a trained or untrained :class:`Codec`
(:class:`CodecSystem`), the lossless :class:`IdentitySystem` (the metrics' ideal values, and the ground-truth WER
of the ASR model), or an anchor (:mod:`codecfw.core.evaluation.anchors`: Codec2, Opus). Every system is scored at one
evaluation sample rate (default: the first system's) against the original resampled to that rate.

Outputs (``out_dir``): ``clips.csv`` (one row per clip and system), ``summary.csv`` (per system and domain, ``all``
first), ``results.json`` (every setting: sample rate, resampler, alignment, metric parameter sets, ASR model and
text normaliser, checkpoint hashes, package versions; the summaries; unavailable backends; errors), ``report.md``
with spectrograms (see :mod:`codecfw.core.evaluation.report`), and ``comparison.csv``/``.md`` when several systems ran.
"""

from __future__ import annotations

import hashlib
import logging
import math
import platform
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from ..data.dataset import Clip, load_clips, read_clip  # noqa: F401 - load_clips is part of this API
from ..metric import ALIGNMENT, RESAMPLER, Metric, MetricUnavailable, align, resample
from ..types import TokenStream, bitrate, token_rate

logger = logging.getLogger("codecfw.eval")


# ------------------------------------------------------------------------------------------------------------
# Systems
# ------------------------------------------------------------------------------------------------------------


class SystemUnavailable(RuntimeError):
    """A system's external tool is missing (e.g. the codec2 binaries); reported, never fatal."""


@dataclass
class Reconstruction:
    """waveform : Tensor[N] at the system's rate; tokens : {stream: LongTensor[T]}; encoded_bits: anchors' file size."""

    waveform: Tensor
    tokens: dict[str, Tensor] = field(default_factory=dict)
    encoded_bits: int | None = None


class System:
    """Something evaluated: waveform in, reconstruction out. Subclasses set ``name``, ``sample_rate``, ``streams``."""

    kind = "system"
    name: str = "system"
    sample_rate: int = 16000
    streams: list[TokenStream] = []
    #: Domains this system is meant for (Codec2: speech); other clips are skipped. None: every clip.
    domains: tuple[str, ...] | None = None

    @property
    def bitrate(self) -> float | None:
        return bitrate(self.streams) if self.streams else None

    @property
    def token_rate(self) -> float | None:
        return token_rate(self.streams) if self.streams else None

    def check(self) -> None:
        """Raise :class:`SystemUnavailable` when a required tool is missing."""

    def process(self, wav: Tensor) -> Reconstruction:  # pragma: no cover - abstract
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        return {"kind": self.kind, "sample_rate": self.sample_rate, "bitrate": self.bitrate,
                "token_rate": self.token_rate, "streams": [vars(s) for s in self.streams]}


class IdentitySystem(System):
    """Returns its input: every metric's ideal value (and the ASR model's own error on the originals)."""

    kind = "identity"

    def __init__(self, sample_rate: int = 16000, name: str = "identity") -> None:
        self.sample_rate, self.name = sample_rate, name

    def process(self, wav: Tensor) -> Reconstruction:
        return Reconstruction(wav.clone())


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class CodecSystem(System):
    """A codec evaluated through exactly what users ship: :class:`~codecfw.core.tokenizer.api.AudioTokenizer` ``encode`` →
    a token file written to disk and read back (``TokenFile.save`` / ``TokenFile.load``, the ``.cfwt`` format of
    ``codecfw encode``) → ``decode``, with the tokenizer's chunk policy (recordings longer than its window are
    processed in windows, as ``codecfw encode/decode`` do; ``chunked=False`` processes them whole).

    codec : AudioTokenizer | Codec
        A bare :class:`~codecfw.core.codec.Codec` is wrapped in a tokenizer (codec id ``name``, config hash from
        ``info["config_hash"]``).
    """

    kind = "codec"

    def __init__(self, codec: Any, name: str, device: str = "cpu", info: dict[str, Any] | None = None, *,
                 chunk_seconds: float | None = None, chunked: bool = True, batch_size: int = 8) -> None:
        from ..tokenizer.api import AudioTokenizer

        self.info = dict(info or {})
        if not isinstance(codec, AudioTokenizer):
            codec = AudioTokenizer(codec, codec_id=name, config_hash=str(self.info.get("config_hash", "unknown")),
                                   chunk_seconds=chunk_seconds)
        elif chunk_seconds is not None:
            codec.set_chunk_seconds(chunk_seconds)
        self.tokenizer = codec.to(device)
        self.codec = self.tokenizer.codec
        self.name, self.device = name, torch.device(device)
        self.sample_rate = int(self.tokenizer.sample_rate)
        self.streams = list(self.tokenizer.streams)
        self.chunked, self.batch_size = chunked, batch_size
        self._token_bytes: list[tuple[int, int]] = []  # (file size, packed token payload) per clip

    def process(self, wav: Tensor) -> Reconstruction:
        """wav : Tensor[N] at the codec's rate → its reconstruction through a token file on disk."""
        import tempfile

        from ..tokenizer.tokens import SUFFIX, TokenFile

        written = self.tokenizer.encode(wav.float(), self.sample_rate, batch_size=self.batch_size,
                                        chunked=self.chunked)[0]
        with tempfile.TemporaryDirectory(prefix="codecfw-eval-") as tmp:
            path = written.save(Path(tmp) / f"clip{SUFFIX}")
            tf = TokenFile.load(path)
            self._token_bytes.append((path.stat().st_size, tf.payload_bytes()))
        y = self.tokenizer.decode(tf, batch_size=self.batch_size, chunked=self.chunked)[0]
        return Reconstruction(y.reshape(-1).float().cpu(),
                              {k: torch.from_numpy(np.asarray(v)).reshape(-1).long() for k, v in tf.tokens.items()})

    def settings(self) -> dict[str, Any]:
        from dataclasses import asdict

        params = sum(p.numel() for p in self.codec.parameters())
        path = {"route": "AudioTokenizer.encode -> TokenFile.save/.load (.cfwt) -> AudioTokenizer.decode",
                "chunked": self.chunked, "chunk_policy": asdict(self.tokenizer.policy),
                "batch_size": self.batch_size, "codec_id": self.tokenizer.codec_id,
                "token_file_bytes_total": sum(f for f, _ in self._token_bytes),
                "token_payload_bytes_total": sum(p for _, p in self._token_bytes)}
        return {**super().settings(), **self.info, "parameters": params, "device": str(self.device),
                "tokenizer": path}


def load_system(spec: str, registry: Any = None, device: str = "cpu", overrides: Sequence[str] = (), *,
                chunk_seconds: float | None = None, chunked: bool = True, batch_size: int = 8) -> System:
    """``identity``, a checkpoint folder / run directory, a recipe (file or shipped name; an *untrained* codec
    seeded with ``train.seed``), or a registered pretrained name. Codecs are loaded as
    :class:`~codecfw.core.tokenizer.api.AudioTokenizer` (``codecfw.load``), as ``codecfw encode/decode`` load them."""
    from ..config import load_recipe, resolve_recipe_path
    from ..tokenizer.api import AudioTokenizer, load

    run = {"chunk_seconds": chunk_seconds, "chunked": chunked, "batch_size": batch_size}
    if spec == "identity":
        return IdentitySystem()
    path = Path(spec)
    if path.exists() and path.suffix.lower() not in (".yaml", ".yml"):
        from ..checkpoint import resolve_checkpoint_dir

        tokenizer = load(path, registry=registry)
        folder = resolve_checkpoint_dir(path)
        hashes = {p.name: file_sha256(p)[:16] for p in sorted(folder.glob("*.safetensors"))}
        recipe = tokenizer.recipe
        info = {"checkpoint": str(folder), "checkpoint_hash": hashes, "step": tokenizer.info.get("step"),
                "config_hash": recipe.config_hash(), "recipe": recipe.model_dump(mode="json")}
        return CodecSystem(tokenizer, recipe.name, device, info, **run)
    try:
        recipe_path = resolve_recipe_path(spec)
    except FileNotFoundError:
        recipe_path = None
    if recipe_path is not None:
        recipe = load_recipe(recipe_path, list(overrides), registry)
        torch.manual_seed(recipe.train.seed)
        logger.warning("evaluating an UNTRAINED codec built from %s (random weights, seed %d)", recipe_path,
                       recipe.train.seed)
        info = {"checkpoint": None, "checkpoint_hash": f"untrained (seed {recipe.train.seed})",
                "recipe_file": str(recipe_path), "config_hash": recipe.config_hash(),
                "recipe": recipe.model_dump(mode="json")}
        return CodecSystem(AudioTokenizer.from_recipe(recipe, registry), recipe.name, device, info, **run)
    tokenizer = load(spec, registry=registry)
    info = {"pretrained": spec, "config_hash": tokenizer.config_hash, **tokenizer.info}
    return CodecSystem(tokenizer, spec, device, info, **run)


# ------------------------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------------------------


@dataclass
class EvalResult:
    rows: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    columns: list[str]
    directions: dict[str, bool | None]
    settings: dict[str, Any]
    errors: dict[str, dict[str, dict[str, Any]]]
    unavailable: dict[str, dict[str, str]]
    examples: dict[str, dict[str, Tensor]] = field(default_factory=dict)
    artifacts: dict[str, dict[str, list]] = field(default_factory=dict)
    probe: dict[str, Any] | None = None
    out_dir: Path | None = None

    def overall(self, system: str) -> dict[str, Any]:
        """The ``all``-domain summary row of one system."""
        return next(r for r in self.summary if r["system"] == system and r["domain"] == "all")


def _choose_examples(clips: list[Clip], report_clips: int | Sequence[str]) -> set[str]:
    if not isinstance(report_clips, int):
        return set(report_clips)
    by_domain: dict[str | None, list[Clip]] = {}
    for clip in clips:
        by_domain.setdefault(clip.domain, []).append(clip)
    chosen: list[str] = []
    while len(chosen) < min(report_clips, len(clips)):  # round robin over domains: one of each first
        for group in by_domain.values():
            if group and len(chosen) < report_clips:
                chosen.append(group.pop(0).id)
    return set(chosen)


def _mean(values: list[float]) -> float:
    finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else float("nan")


def evaluate(systems: Sequence[System], clips: Sequence[Clip], metrics: Sequence[Metric],
             out_dir: str | Path | None = None, *, sample_rate: int | None = None, max_seconds: float | None = None,
             report_clips: int | Sequence[str] = 3, probe: dict[str, Any] | None = None, progress: bool = True,
             data_source: str | None = None, group_by: str | None = None) -> EvalResult:
    """Score every system on every clip with every metric; write the outputs when ``out_dir`` is given.

    group_by : a manifest column (e.g. ``kind``: recorded/synthetic); the summary then adds, under each domain, one
        row per value of that column (``speech/recorded``), so a subset is compared without a second run.

    probe : keyword arguments of :func:`.probe.run_probe` (e.g. ``{"label_key": "domain"}``), run for
        each codec system.
    """
    from tqdm.auto import tqdm

    clips = list(clips)
    if not clips:
        raise ValueError("no clips to evaluate")
    eval_sr = int(sample_rate or systems[0].sample_rate)
    examples_wanted = _choose_examples(clips, report_clips)
    unavailable: dict[str, dict[str, str]] = {"metrics": {}, "systems": {}}
    usable: list[Metric] = []
    for metric in metrics:
        try:
            metric.check()
            usable.append(metric)
        except MetricUnavailable as exc:
            unavailable["metrics"][metric.name] = str(exc)
            logger.warning("metric %s unavailable: %s", metric.name, exc)
    rows: list[dict[str, Any]] = []
    errors: dict[str, dict[str, dict[str, Any]]] = {}
    columns: list[str] = []
    directions: dict[str, bool | None] = {"rtf": False}
    corpus: dict[str, dict[str, float]] = {}
    examples: dict[str, dict[str, Tensor]] = {}
    system_settings: dict[str, Any] = {}
    artifacts: dict[str, dict[str, list]] = {}

    def add_columns(names: list[str], metric: Metric | None) -> None:
        for n in names:
            if n not in columns:
                columns.append(n)
                directions[n] = metric.direction(n) if metric is not None else None

    def record_error(system: str, what: str, clip: Clip, exc: BaseException) -> None:
        entry = errors.setdefault(system, {}).setdefault(what, {"count": 0})
        entry["count"] += 1
        if entry["count"] == 1:  # one logged error per system and metric; the rest are counted
            entry.update(first_clip=clip.id, error=f"{type(exc).__name__}: {exc}")
            logger.error("%s: %s failed on %s: %s: %s (further failures are counted, not logged)", system, what,
                         clip.id, type(exc).__name__, exc)
            logger.debug("".join(traceback.format_exception(exc)))

    for system in systems:
        try:
            system.check()
        except SystemUnavailable as exc:
            unavailable["systems"][system.name] = str(exc)
            logger.warning("system %s unavailable: %s", system.name, exc)
            continue
        system_settings[system.name] = system.settings()
        for metric in usable:
            metric.setup(system)
            metric.reset()
            add_columns(metric.columns(), metric)
        for clip in tqdm(clips, desc=f"eval {system.name}", disable=not progress, leave=False):
            row: dict[str, Any] = {"system": system.name, "clip": clip.id, "domain": clip.domain or ""}
            if group_by:
                row["group"] = str(clip.meta.get(group_by) or "")
            rows.append(row)
            if system.domains is not None and clip.domain is not None and clip.domain not in system.domains:
                row["skipped"] = f"system for {'/'.join(system.domains)} only"
                continue
            try:
                ref = read_clip(clip, eval_sr, max_seconds)
                start = time.perf_counter()
                rec = system.process(resample(ref, eval_sr, system.sample_rate))
                elapsed = time.perf_counter() - start
                est, ref_aligned = align(resample(rec.waveform.reshape(-1).float(), system.sample_rate, eval_sr), ref)
                if not torch.isfinite(est).all():
                    raise ValueError("the reconstruction contains NaN or inf")
            except Exception as exc:  # noqa: BLE001 - one broken clip must not stop the run
                record_error(system.name, "process", clip, exc)
                continue
            row["seconds"] = ref.numel() / eval_sr
            row["rtf"] = elapsed / row["seconds"]
            meta = {"transcript": clip.transcript, "tokens": rec.tokens, "clip_id": clip.id, "domain": clip.domain,
                    "num_samples": est.numel(), "encoded_bits": rec.encoded_bits, "system_name": system.name}
            for metric in usable:
                if not metric.applies_to(clip.domain) or (metric.needs_transcript and not clip.transcript) or \
                        (metric.needs_tokens and not rec.tokens):
                    continue
                try:
                    value = metric(est, ref_aligned, eval_sr, **meta)
                except Exception as exc:  # noqa: BLE001 - NaN + one logged error, never a crashed run
                    record_error(system.name, metric.name, clip, exc)
                    continue
                values = value if isinstance(value, dict) else {metric.name: value}
                add_columns(list(values), metric)
                row.update({k: float(v) for k, v in values.items()})
            if clip.id in examples_wanted:
                examples.setdefault(clip.id, {"original": ref})[system.name] = est
        system_settings[system.name] = system.settings()  # again: some record what processing measured
        corpus[system.name] = {k: v for m in usable for k, v in m.summary().items()}
        for metric in usable:
            for fname, records in getattr(metric, "artifacts", dict)().items():
                artifacts.setdefault(system.name, {})[fname] = list(records)

    for row in rows:
        for col in columns:
            row.setdefault(col, float("nan"))
    summary = summarise(rows, columns, corpus)
    metric_settings = {}
    for metric in metrics:
        entry = {"kind": metric.config.kind, "needs_reference": metric.needs_reference,
                 "needs_transcript": metric.needs_transcript, "needs_tokens": metric.needs_tokens,
                 "dependency": metric.dependency, "domains": list(metric.domains) if metric.domains else None}
        try:
            entry["settings"] = metric.settings() if metric.name not in unavailable["metrics"] else \
                metric.config.model_dump(mode="json")
        except Exception as exc:  # noqa: BLE001
            entry["settings"] = {"error": f"{type(exc).__name__}: {exc}"}
        metric_settings[metric.name] = entry
    settings = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "data": {"source": data_source, "clips": len(clips), "max_seconds": max_seconds,
                 "domains": {d or "unlabelled": sum(1 for c in clips if c.domain == d) for d in
                             sorted({c.domain for c in clips}, key=str)}},
        "sample_rate": eval_sr, "resampler": RESAMPLER, "alignment": ALIGNMENT,
        "mixdown": "channel mean (codecfw.core.data.dataset.read_audio)", "metrics": metric_settings,
        "systems": system_settings, "environment": environment(),
    }
    result = EvalResult(rows, summary, columns, directions, settings, errors, unavailable, examples,
                        artifacts=artifacts)
    if probe is not None:
        from .probe import run_probe

        result.probe = {}
        for system in systems:
            if isinstance(system, CodecSystem) and system.name in system_settings:
                result.probe[system.name] = run_probe(system, clips, max_seconds=max_seconds, **probe)
    if out_dir is not None:
        from .report import write_outputs

        write_outputs(result, Path(out_dir))
    return result


def summarise(rows: list[dict[str, Any]], columns: list[str], corpus: dict[str, dict[str, float]]
              ) -> list[dict[str, Any]]:
    """Per system: an ``all`` row (corpus-level values where a metric defines them) then one row per domain (and per
    ``domain/group`` value when rows carry a ``group``)."""
    out = []
    for system in dict.fromkeys(r["system"] for r in rows):
        mine = [r for r in rows if r["system"] == system and "seconds" in r]
        domains = sorted({r["domain"] for r in mine if r["domain"]})
        # ``group`` (evaluate's group_by): sub-rows ``domain/value`` after each domain that holds several values
        subgroups = []
        for domain in domains:
            members = [r for r in mine if r["domain"] == domain]
            subgroups.append((domain, members))
            values = sorted({r.get("group", "") for r in members} - {""})
            if len(values) > 1:
                subgroups += [(f"{domain}/{v}", [r for r in members if r.get("group") == v]) for v in values]
        for domain, group in [("all", mine), *subgroups]:
            entry: dict[str, Any] = {"system": system, "domain": domain, "clips": len(group),
                                     "seconds": sum(r["seconds"] for r in group)}
            for col in ["rtf", *columns]:
                entry[col] = _mean([r.get(col, float("nan")) for r in group])
            if domain == "all":
                entry.update(corpus.get(system, {}))
            out.append(entry)
    return out


def environment() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for dist in ("codecfw", "torch", "torchaudio", "numpy", "pesq", "pystoi", "pocketsphinx", "transformers"):
        try:
            versions[dist] = version(dist)
        except PackageNotFoundError:
            versions[dist] = None
    return {"python": platform.python_version(), "platform": platform.platform(), "packages": versions}
