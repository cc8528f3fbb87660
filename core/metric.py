"""The metric contract: what a metric plugin registers and what ``codecfw eval`` calls.

A metric plugin registers a kind in the ``metric`` slot::

    @hookimpl
    def register_metrics(register):
        register("pesq", PESQConfig, PESQ, needs_reference=True, dependency="pesq")

``factory(config, context)`` returns a :class:`Metric`: a callable with metadata attributes (does it need the
reference, a transcript, the tokens; which optional package backs it; is higher better) and
``__call__(estimate, reference, sample_rate, **meta) -> float | dict[str, float]``. The runner
(:mod:`.evaluation.evaluate`) wraps every call: a metric that raises yields NaN for its columns and one logged
error, never a crashed run (Codec-SUPERB's behaviour). A metric whose optional backend is missing is reported once
as unavailable and its columns stay NaN.

Reproducibility (frameworks.md §2.6): the same name ("mel distance", "WER") gives different numbers under different
parameter sets, sample rates, resamplers and text normalisers. Every metric therefore reports :meth:`Metric.settings`,
and the runner stores them with the results.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, ClassVar

import yaml
from pydantic import Field, ValidationError
from torch import Tensor

from .config import PluginConfig, format_validation_errors
from .data.audio import resample  # noqa: F401 - metric plugins resample through here, with the RESAMPLER settings
from .registry import Registry, get_registry

#: How every metric and the runner resample (torchaudio's defaults, stated so results can be reproduced).
RESAMPLER = {"library": "torchaudio", "function": "torchaudio.functional.resample",
             "resampling_method": "sinc_interp_hann", "lowpass_filter_width": 6, "rolloff": 0.99}

#: How estimate and reference of different lengths are made comparable.
ALIGNMENT = "trim both to the shorter length"


class MetricUnavailable(RuntimeError):
    """The metric's optional backend (package, binary, model) is not installed; reported, never fatal."""


class MetricConfig(PluginConfig):
    """Base of every metric's config. Subclasses declare ``kind: Literal["<kind>"] = "<kind>"``."""

    name: str | None = Field(None, description="column name; default: the kind plus any non-default parameter set")
    domains: list[str] | None = Field(None, description="apply only to clips of these domains (clips without a "
                                                        "domain label are always scored); None: every clip")


class Metric:
    """One metric, built from its config.

    Attributes (class-level defaults; instances may refine them):

    needs_reference : bool
        Compares the estimate with the original waveform.
    needs_transcript : bool
        Needs ``meta["transcript"]``; clips without one are skipped (NaN).
    needs_tokens : bool
        Needs ``meta["tokens"]`` (``{stream: LongTensor[T]}``) and ``meta["streams"]``.
    dependency : str | None
        The optional package (or binary) that backs the metric, for messages and the results JSON.
    higher_is_better : bool | dict[str, bool] | None
        Direction of the value, or of each column of a dict-valued metric.
    """

    needs_reference: ClassVar[bool] = True
    needs_transcript: ClassVar[bool] = False
    needs_tokens: ClassVar[bool] = False
    dependency: ClassVar[str | None] = None
    #: Module imported by :meth:`check` when ``dependency`` is set (defaults to ``dependency``).
    dependency_module: ClassVar[str | None] = None
    higher_is_better: ClassVar[bool | dict[str, bool] | None] = None

    def __init__(self, config: MetricConfig) -> None:
        self.config = config
        self.name = config.name or self.default_name()
        self.domains = tuple(config.domains) if config.domains is not None else None

    def default_name(self) -> str:
        return self.config.kind

    # -- setup -----------------------------------------------------------------------------------------------
    def check(self) -> None:
        """Raise :class:`MetricUnavailable` when the backend is missing. Called once before a run."""
        if self.dependency is None:
            return
        module = self.dependency_module or self.dependency
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise MetricUnavailable(f"metric {self.name!r} needs the optional package {self.dependency!r} "
                                    f"(pip install {self.dependency}): {exc}") from None

    def setup(self, system: Any) -> None:
        """Called once per evaluated system before its clips. ``system`` has ``sample_rate``, ``streams``
        (``list[TokenStream]``), ``bitrate`` and ``token_rate`` (see :class:`.evaluation.evaluate.System`)."""

    def column(self, key: str) -> str:
        """Column name of a dict-valued metric's entry: ``key`` itself, prefixed with the metric's name when the
        user renamed it (two WER metrics with different ASR models: ``wer``, ``cer`` / ``whisper/wer`` ...)."""
        return key if self.name == self.config.kind else f"{self.name}/{key}"

    def columns(self) -> list[str]:
        """Names of the values this metric produces (known before the first call, so failures fill NaN)."""
        return [self.name]

    def settings(self) -> dict[str, Any]:
        """Everything needed to reproduce a value: the config plus resolved parameter sets, models, normalisers."""
        return {"kind": self.config.kind, **self.config.model_dump(mode="json", exclude={"kind", "name"})}

    def applies_to(self, domain: str | None) -> bool:
        return self.domains is None or domain is None or domain in self.domains

    # -- use -------------------------------------------------------------------------------------------------
    def __call__(self, estimate: Tensor, reference: Tensor | None, sample_rate: int, **meta: Any) -> float | dict:
        """estimate, reference : Tensor[N] (mono, same length, float32) at ``sample_rate``."""
        raise NotImplementedError

    def reset(self) -> None:
        """Forget corpus-level state (before each system)."""

    def summary(self) -> dict[str, float]:
        """Corpus-level values that replace the mean over clips (corpus WER = errors / words, codebook usage over
        all tokens). Empty when the mean of the per-clip values is the summary."""
        return {}

    def direction(self, column: str) -> bool | None:
        """Is a higher value of ``column`` better? (``None``: no direction, e.g. bitrate.)"""
        hib = self.higher_is_better
        if isinstance(hib, dict):
            parts = column.split("/")
            return next((v for k, v in hib.items() if k in parts), None)
        return hib


# ------------------------------------------------------------------------------------------------------------
# Audio helpers shared by the metrics and the runner.
# ------------------------------------------------------------------------------------------------------------


def align(estimate: Tensor, reference: Tensor) -> tuple[Tensor, Tensor]:
    """Trim two waveforms ``Tensor[N]`` to the shorter length (:data:`ALIGNMENT`)."""
    n = min(estimate.shape[-1], reference.shape[-1])
    return estimate[..., :n], reference[..., :n]


# ------------------------------------------------------------------------------------------------------------
# Metric selection: "kind", "kind:key=value,key=value", or a YAML file with a list of configs.
# ------------------------------------------------------------------------------------------------------------

#: What ``codecfw eval`` computes when ``--metrics`` is not given.
DEFAULT_METRICS = ("mel", "stft", "l1", "si_sdr", "pesq", "stoi", "visqol", "wer", "codebook", "bitrate")


class MetricSpecError(ValueError):
    """A metric selection could not be parsed or validated; the message lists every problem."""


def parse_metric_spec(spec: str) -> dict[str, Any]:
    """``"mel:params=dac_train_7scale,sample_rate=44100"`` → ``{"kind": "mel", "params": ..., ...}``.

    Values are parsed as YAML; a list value uses ``;`` between items (``domains=speech;music``).
    """
    kind, _, rest = spec.partition(":")
    data: dict[str, Any] = {"kind": kind.strip()}
    if not data["kind"]:
        raise MetricSpecError(f"metric {spec!r}: empty kind (expected kind or kind:key=value,...)")
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise MetricSpecError(f"metric {spec!r}: {item!r} is not key=value")
        value: Any = [yaml.safe_load(v) for v in raw.split(";")] if ";" in raw else yaml.safe_load(raw)
        data[key.strip()] = value
    return data


def load_metric_configs(specs: list[str] | tuple[str, ...] | None, registry: Registry | None = None
                        ) -> list[MetricConfig]:
    """Validate metric selections against the registered metric kinds, reporting every error at once."""
    registry = registry or get_registry()
    kinds = registry.kinds("metric")
    items: list[tuple[str, dict[str, Any]]] = []
    errors: list[str] = []
    for spec in specs or DEFAULT_METRICS:
        if spec.endswith((".yaml", ".yml")):
            try:
                loaded = yaml.safe_load(Path(spec).read_text())
            except (OSError, yaml.YAMLError) as exc:
                errors.append(f"{spec}: cannot read metric list: {exc}")
                continue
            loaded = loaded.get("metrics", loaded) if isinstance(loaded, dict) else loaded
            if not isinstance(loaded, list):
                errors.append(f"{spec}: expected a list of metric configs (or a mapping with 'metrics:')")
                continue
            for i, entry in enumerate(loaded):
                entry = {"kind": entry} if isinstance(entry, str) else entry
                if not isinstance(entry, dict):
                    errors.append(f"{spec}: item {i}: expected a kind or a mapping, got {entry!r}")
                    continue
                items.append((f"{spec}[{i}]", entry))
        else:
            try:
                items.append((spec, parse_metric_spec(spec)))
            except MetricSpecError as exc:
                errors.append(str(exc))
    configs: list[MetricConfig] = []
    for where, data in items:
        reg = kinds.get(str(data.get("kind")))
        if reg is None:
            errors.append(f"{where}: unknown metric kind {data.get('kind')!r}; known kinds: "
                          f"{', '.join(sorted(kinds)) or 'none registered'}")
            continue
        try:
            configs.append(reg.config.model_validate(data))
        except ValidationError as exc:
            errors.extend(f"{where}: {line}" for line in format_validation_errors(exc, data, reg.config))
    if errors:
        raise MetricSpecError("invalid metric selection:\n" + "\n".join(f"  {e}" for e in errors))
    return configs


def build_metrics(configs: list[MetricConfig], registry: Registry | None = None) -> list[Metric]:
    """Build metric objects; column names must be unique across them."""
    registry = registry or get_registry()
    metrics = [registry.build("metric", cfg, None) for cfg in configs]
    seen: dict[str, str] = {}
    for metric in metrics:
        if metric.name in seen:
            raise MetricSpecError(f"two metrics are both named {metric.name!r} ({seen[metric.name]} and "
                                  f"{metric.config.kind}); give one a name=... setting")
        seen[metric.name] = metric.config.kind
    return metrics
