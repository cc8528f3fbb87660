"""Perceptual and intelligibility metrics backed by reference implementations: PESQ, STOI, ViSQOL.

* PESQ (ITU-T P.862.2 wide-band by default) through the ``pesq`` package, the wrapper VERSA, Codec-SUPERB and
  torchmetrics use; signals are resampled to 16 kHz (wb) or 8/16 kHz (nb) first.
* STOI / eSTOI (Taal et al. 2011; Jensen & Taal 2016) through ``pystoi``, which resamples to 10 kHz itself.
* ViSQOL v3 (Chinen et al. 2020) through Google's Python bindings (``visqol`` built from google/visqol), the
  ``visqol`` binary on PATH, or ``visqol-python`` (PyPI), a pure-Python *port* of ViSQOL v3.3.3 that ships the
  speech-mode lattice model and the audio-mode SVR model in its wheel; speech mode at 16 kHz, audio mode at 48 kHz
  (SemantiCodec resamples to 48 kHz and uses audio mode on AudioSet/MUSDB). ``backend=auto`` prefers Google's
  code and falls back to the port; the backend actually used is recorded. The port's agreement with Google's
  published conformance values is in docs/evaluation.md (benchmarks/visqol_conformance.py).

PESQ, STOI and ViSQOL's speech mode are speech metrics: their default ``domains`` is ``[speech]``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field
from torch import Tensor

from codecfw import hookimpl
from codecfw.core.metric import Metric, MetricConfig, MetricUnavailable, resample


class PESQConfig(MetricConfig):
    kind: Literal["pesq"] = "pesq"
    mode: Literal["wb", "nb"] = Field("wb", description="wide-band (P.862.2, 16 kHz) or narrow-band (P.862)")
    sample_rate: Literal[8000, 16000] = Field(16000, description="rate PESQ runs at (wb needs 16000)")
    domains: list[str] | None = ["speech"]


class PESQ(Metric):
    """PESQ MOS-LQO (wb range 1.04–4.64). estimate, reference : Tensor[N]."""

    higher_is_better = True
    dependency = "pesq"

    def __init__(self, config: PESQConfig) -> None:
        if config.mode == "wb" and config.sample_rate != 16000:
            raise ValueError("pesq: wide-band mode needs sample_rate 16000")
        super().__init__(config)

    def default_name(self) -> str:
        return "pesq" if self.config.mode == "wb" else "pesq_nb"

    def settings(self) -> dict:
        return {**super().settings(), "package": f"pesq {_version('pesq')}",
                "standard": "ITU-T P.862.2" if self.config.mode == "wb" else "ITU-T P.862"}

    def __call__(self, estimate: Tensor, reference: Tensor, sample_rate: int, **meta) -> float:
        from pesq import pesq

        sr = self.config.sample_rate
        ref = resample(reference.float(), sample_rate, sr).numpy()
        deg = resample(estimate.float(), sample_rate, sr).numpy()
        return float(pesq(sr, ref, deg, self.config.mode))


class STOIConfig(MetricConfig):
    kind: Literal["stoi"] = "stoi"
    extended: bool = Field(False, description="eSTOI (Jensen & Taal 2016) instead of STOI")
    domains: list[str] | None = ["speech"]


class STOI(Metric):
    """Short-time objective intelligibility in [0, 1] (pystoi resamples to 10 kHz internally)."""

    higher_is_better = True
    dependency = "pystoi"

    def default_name(self) -> str:
        return "estoi" if self.config.extended else "stoi"

    def settings(self) -> dict:
        return {**super().settings(), "package": f"pystoi {_version('pystoi')}", "internal_rate": 10000}

    def __call__(self, estimate: Tensor, reference: Tensor, sample_rate: int, **meta) -> float:
        from pystoi import stoi

        return float(stoi(reference.double().numpy(), estimate.double().numpy(), sample_rate,
                          extended=self.config.extended))


class ViSQOLConfig(MetricConfig):
    kind: Literal["visqol"] = "visqol"
    mode: Literal["speech", "audio"] = Field("speech", description="speech mode at 16 kHz, audio mode at 48 kHz")
    backend: Literal["auto", "python", "binary", "port"] = Field(
        "auto", description="python: Google's bindings (visqol.visqol_lib_py); binary: the 'visqol' binary; port: "
                            "the pure-Python port visqol-python (PyPI); auto: the first of these available")
    binary: str = Field("visqol", description="name or path of the ViSQOL binary")
    model: str | None = Field(None, description="similarity-to-quality model file; default: the one shipped with "
                                                "the backend for the mode")
    domains: list[str] | None = None


_SPEECH_MODEL = "lattice_tcditugenmeetpackhref_ls2_nl60_lr12_bs2048_learn.005_ep2400_train1_7_raw.tflite"
_AUDIO_MODEL = "libsvm_nu_svr_model.txt"


class ViSQOL(Metric):
    """ViSQOL v3 MOS-LQO (1–5). Speech mode scores speech clips only unless ``domains`` says otherwise."""

    higher_is_better = True
    dependency = "visqol-python"  # or Google's bindings / binary (backend=python|binary)

    def __init__(self, config: ViSQOLConfig) -> None:
        if config.domains is None and config.mode == "speech":
            config = config.model_copy(update={"domains": ["speech"]})
        super().__init__(config)
        self._api = None
        self._backend: str | None = None

    def default_name(self) -> str:
        return f"visqol_{self.config.mode}"

    @property
    def rate(self) -> int:
        return 16000 if self.config.mode == "speech" else 48000

    def check(self) -> None:
        reasons = []
        if self.config.backend in ("auto", "python"):
            try:
                from visqol import visqol_lib_py  # noqa: F401  (Google's bindings, built with bazel)

                self._backend = "python"
                return
            except ImportError as exc:
                reasons.append(f"Python bindings: {exc}")
        if self.config.backend in ("auto", "binary"):
            if shutil.which(self.config.binary):
                self._backend = "binary"
                return
            reasons.append(f"binary {self.config.binary!r} not on PATH")
        if self.config.backend in ("auto", "port"):
            try:
                from visqol import VisqolApi  # noqa: F401  (visqol-python, the pure-Python port)

                self._backend = "port"
                return
            except ImportError as exc:
                reasons.append(f"visqol-python: {exc}")
        raise MetricUnavailable("ViSQOL is not installed (" + "; ".join(reasons) + "). pip install "
                                "'visqol-python[lattice]' (a pure-Python port; extra 'eval'), or build "
                                "google/visqol and install its Python package, or put the 'visqol' binary on PATH.")

    def settings(self) -> dict:
        out = {**super().settings(), "resolved_backend": self._backend, "rate": self.rate,
               "model": self.config.model or (_SPEECH_MODEL if self.config.mode == "speech" else _AUDIO_MODEL)}
        if self._backend == "port":
            out["implementation"] = f"visqol-python {_version('visqol-python')} (pure-Python port of ViSQOL v3.3.3)"
            if self.config.mode == "speech":
                out["speech_mapping"] = "lattice (TFLite, ai-edge-litert)" if self._port_lattice() else \
                    "exponential fallback (ai-edge-litert missing; not the C++ default)"
        return out

    @staticmethod
    def _port_lattice() -> bool:
        from importlib.util import find_spec

        return find_spec("ai_edge_litert") is not None

    def _python_api(self):
        if self._api is None:
            from visqol import visqol_lib_py
            from visqol.pb2 import visqol_config_pb2

            cfg = visqol_config_pb2.VisqolConfig()
            cfg.audio.sample_rate = self.rate
            cfg.options.use_speech_scoring = self.config.mode == "speech"
            model = self.config.model or os.path.join(os.path.dirname(visqol_lib_py.__file__), "model",
                                                      _SPEECH_MODEL if self.config.mode == "speech" else _AUDIO_MODEL)
            cfg.options.svr_model_path = model
            if self.config.mode == "speech" and model.endswith(".tflite"):
                cfg.options.use_lattice_model = True
            api = visqol_lib_py.VisqolApi()
            api.Create(cfg)
            self._api = api
        return self._api

    def _port_api(self):
        if self._api is None:
            from visqol import VisqolApi

            api = VisqolApi()
            speech = self.config.mode == "speech"
            model = self.config.model
            api.create(mode=self.config.mode, model_path=None if speech else model,
                       use_lattice_model=self._port_lattice() if speech else None,
                       lattice_model_path=model if speech and model and model.endswith(".tflite") else None)
            self._api = api
        return self._api

    def __call__(self, estimate: Tensor, reference: Tensor, sample_rate: int, **meta) -> float:
        if self._backend is None:
            self.check()
        ref = resample(reference.double(), sample_rate, self.rate).numpy()
        deg = resample(estimate.double(), sample_rate, self.rate).numpy()
        if self._backend == "python":
            return float(self._python_api().Measure(ref, deg).moslqo)
        if self._backend == "port":
            return float(self._port_api().measure_from_arrays(ref, deg, self.rate).moslqo)
        return self._run_binary(ref, deg)

    def _run_binary(self, ref: np.ndarray, deg: np.ndarray) -> float:
        import soundfile as sf

        with tempfile.TemporaryDirectory(prefix="codecfw-visqol-") as tmp:
            r, d = Path(tmp) / "ref.wav", Path(tmp) / "deg.wav"
            sf.write(r, ref, self.rate, subtype="PCM_16")
            sf.write(d, deg, self.rate, subtype="PCM_16")
            cmd = [self.config.binary, "--reference_file", str(r), "--degraded_file", str(d)]
            if self.config.mode == "speech":
                cmd.append("--use_speech_mode")
            if self.config.model:
                cmd += ["--similarity_to_quality_model", self.config.model]
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        match = re.search(r"MOS-LQO:\s*([0-9.]+)", out.stdout)
        if out.returncode != 0 or match is None:
            raise RuntimeError(f"{self.config.binary} exited {out.returncode}: {out.stderr.strip()[-300:]}")
        return float(match.group(1))


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


@hookimpl
def register_metrics(register):
    register("pesq", PESQConfig, lambda cfg, ctx: PESQ(cfg), needs_reference=True, dependency="pesq",
             higher_is_better=True)
    register("stoi", STOIConfig, lambda cfg, ctx: STOI(cfg), needs_reference=True, dependency="pystoi",
             higher_is_better=True)
    register("visqol", ViSQOLConfig, lambda cfg, ctx: ViSQOL(cfg), needs_reference=True, dependency="visqol-python",
             higher_is_better=True)
