"""Non-intrusive speech quality prediction: a MOS estimate from the reconstruction alone (no reference).

Codec papers pair intrusive scores (PESQ, ViSQOL) with a learned non-intrusive predictor (UTMOS, DNSMOS), which
rewards a generative decoder whose output sounds natural without matching the original sample by sample.

``dnsmos``: Microsoft's DNSMOS (Reddy et al., ICASSP 2022, "DNSMOS P.835"; the P.808 model of Reddy et al. 2021)
through ``speechmos``, whose wheel ships the ONNX models of the DNS-Challenge repository (``sig_bak_ovr.onnx``,
``model_v8.onnx``, and the personalised ``pdnsmos`` variant) and Microsoft's ``dnsmos_local.py`` computation: 16 kHz
input, 9.01 s windows hopped by 1 s (a shorter clip is repeated until it is 9.01 s long), per-window ONNX
predictions mapped by the published polynomials, averaged. Columns: ``dnsmos_ovrl`` (P.835 overall), ``dnsmos_sig``
(speech signal), ``dnsmos_bak`` (background noise), ``dnsmos_p808`` (P.808 MOS); range about 1–5.

What else was checked (none ships usable weights in its wheel): ``utmos`` 1.1.10, ``utmos-pytorch`` 0.1.0 and
``hyperion-utmosv2`` 1.3.1 download their checkpoints at run time; ``nisqa`` 2.0.post2 has no weights in its wheel
(27 kB) and pins torch==2.2.1. See docs/evaluation.md.

For the identity "codec" the value is the original's own score, not an ideal value: compare a codec with it.
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field
from torch import Tensor

from codecfw import hookimpl
from codecfw.core.metric import Metric, MetricConfig, MetricUnavailable, resample

DNSMOS_RATE = 16000
_COLUMNS = ("ovrl", "sig", "bak", "p808")


class DNSMOSConfig(MetricConfig):
    kind: Literal["dnsmos"] = "dnsmos"
    personalized: bool = Field(False, description="the personalised DNSMOS model (pdnsmos: interfering talkers "
                                                  "count as noise)")
    domains: list[str] | None = ["speech"]


class DNSMOS(Metric):
    """DNSMOS P.835 (SIG, BAK, OVRL) and P.808 MOS of the estimate; ``reference`` is not used."""

    needs_reference = False
    higher_is_better = True
    dependency = "speechmos"

    def __init__(self, config: DNSMOSConfig) -> None:
        super().__init__(config)
        self._model = None

    def default_name(self) -> str:
        return "dnsmos" if not self.config.personalized else "dnsmos@personalized"

    def columns(self) -> list[str]:
        prefix = "dnsmos" if self.name == "dnsmos" else self.name.replace("@", "_")
        return [self.column(f"{prefix}_{c}") for c in _COLUMNS]

    def _model_files(self) -> tuple[Path, Path]:
        import speechmos

        root = Path(speechmos.__file__).resolve().parent
        primary = root / ("pdnsmos_models" if self.config.personalized else "dnsmos_models") / "sig_bak_ovr.onnx"
        return primary, root / "dnsmos_models" / "model_v8.onnx"

    @property
    def model(self):
        if self._model is None:
            try:
                from speechmos.dnsmos import DNSMOS as SpeechMOSDNSMOS
            except ImportError as exc:  # speechmos itself, or onnxruntime / librosa / requests it imports
                raise MetricUnavailable(f"dnsmos needs the optional package 'speechmos' with onnxruntime and "
                                        f"librosa (pip install speechmos onnxruntime librosa): {exc}") from None
            primary, p808 = self._model_files()
            self._model = SpeechMOSDNSMOS(str(primary), str(p808))
        return self._model

    def check(self) -> None:
        self.model  # noqa: B018 - loading the ONNX sessions is the check

    def settings(self) -> dict[str, Any]:
        from codecfw.core.evaluation.evaluate import file_sha256

        primary, p808 = self._model_files()
        return {**super().settings(), "package": f"speechmos {version('speechmos')}",
                "onnxruntime": version("onnxruntime"), "rate": DNSMOS_RATE,
                "models": {p.parent.name + "/" + p.name: file_sha256(p)[:16] for p in (primary, p808)},
                "windowing": "9.01 s windows, 1 s hop; shorter clips repeated to 9.01 s; mean over windows",
                "reference": "Reddy et al. 2022 (DNSMOS P.835), Microsoft DNS-Challenge dnsmos_local.py"}

    def __call__(self, estimate: Tensor, reference: Tensor | None, sample_rate: int, **meta) -> dict[str, float]:
        x = resample(estimate.float(), sample_rate, DNSMOS_RATE).clamp(-1, 1).numpy().astype(np.float32)
        out = self.model(x, DNSMOS_RATE, self.config.personalized)
        keys = {"ovrl": "ovrl_mos", "sig": "sig_mos", "bak": "bak_mos", "p808": "p808_mos"}
        return {col: float(out[keys[c]]) for col, c in zip(self.columns(), _COLUMNS)}


@hookimpl
def register_metrics(register):
    register("dnsmos", DNSMOSConfig, lambda cfg, ctx: DNSMOS(cfg), needs_reference=False, dependency="speechmos",
             higher_is_better=True)
