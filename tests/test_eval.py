"""``codecfw eval``: outputs and recorded settings, the identity's ideal values, a failing metric, a missing backend,
anchors (present or missing), checkpoints through the CLI, and the semantic probe."""

from __future__ import annotations

import csv
import json
import logging
import math
import shutil
import sys
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import soundfile as sf
import torch

from codecfw import hookimpl
from codecfw.core.evaluation.anchors import Codec2Anchor, OpusAnchor, build_anchors, ogg_packet_bytes
from codecfw.core.config import validate_recipe
from codecfw.core.evaluation.evaluate import CodecSystem, IdentitySystem, evaluate, load_clips, load_system
from codecfw.core.metric import Metric, MetricConfig, build_metrics, load_metric_configs
from codecfw.core.evaluation.probe import clip_features, run_probe, stratified_folds

from .toy_codec import TOY_RECIPE

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "eval"


pytestmark = pytest.mark.usefixtures("one_thread")

FAST = ["mel", "stft", "l1", "si_sdr", "pesq", "stoi", "codebook", "bitrate"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """speech (the fixture sentence, cropped), music (a chord) and sound (noise bursts); a JSONL manifest."""
    root = tmp_path_factory.mktemp("corpus")
    speech, sr = sf.read(FIXTURES / "speech_kal.flac", dtype="float32")
    sf.write(root / "speech.flac", speech, sr)
    t = np.arange(16000) / 16000
    chord = sum(0.1 * np.sin(2 * np.pi * f * t) for f in (261.6, 329.6, 392.0)).astype(np.float32)
    sf.write(root / "chord.wav", chord, 16000)
    noise = (np.random.default_rng(0).standard_normal(16000) * 0.1 * (np.sin(2 * np.pi * 4 * t) > 0)).astype(np.float32)
    sf.write(root / "noise.wav", noise, 16000)
    rows = [{"path": "speech.flac", "domain": "speech", "transcript": "Rice is often served in round bowls."},
            {"path": "chord.wav", "domain": "music"}, {"path": "noise.wav", "domain": "sound"}]
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def _toy_system(registry, name="toy") -> CodecSystem:
    torch.manual_seed(0)
    from codecfw.core.codec import build_codec

    return CodecSystem(build_codec(validate_recipe(TOY_RECIPE, registry), registry), name)


def _read_csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_eval_writes_every_output_and_records_settings(eval_registry, corpus, tmp_path):
    metrics = build_metrics(load_metric_configs(FAST + ["mel:params=dac_train_7scale"], eval_registry), eval_registry)
    clips = load_clips(corpus / "manifest.jsonl")
    out = tmp_path / "out"
    result = evaluate([IdentitySystem(16000), _toy_system(eval_registry)], clips, metrics, out, max_seconds=1.5,
                      progress=False, data_source=str(corpus / "manifest.jsonl"))
    rows = _read_csv(out / "clips.csv")
    assert len(rows) == 6 and {r["system"] for r in rows} == {"identity", "toy"}
    ident = {r["clip"]: r for r in rows if r["system"] == "identity"}
    for r in ident.values():  # the identity codec gets every metric's ideal value
        assert float(r["mel"]) == 0.0 and float(r["stft"]) == 0.0 and float(r["l1"]) == 0.0
        assert float(r["mel@dac_train_7scale"]) == 0.0 and float(r["si_sdr"]) > 100
    assert float(ident["speech"]["pesq"]) == pytest.approx(4.644, abs=1e-3)
    assert float(ident["speech"]["stoi"]) == pytest.approx(1.0, abs=1e-6)
    assert ident["chord"]["pesq"] == "nan"  # speech metrics skip the other domains
    toy = result.overall("toy")
    assert toy["mel"] > 0.1 and toy["bitrate_kbps"] == pytest.approx(0.9) and toy["token_rate"] == 200
    assert 0 < toy["usage/acoustic"] <= 1 and 1 <= toy["perplexity/semantic"] <= 16
    summary = _read_csv(out / "summary.csv")
    assert [(r["system"], r["domain"]) for r in summary] == [
        (s, d) for s in ("identity", "toy") for d in ("all", "music", "sound", "speech")]
    saved = json.loads((out / "results.json").read_text())
    assert saved["sample_rate"] == 16000 and saved["resampler"]["resampling_method"] == "sinc_interp_hann"
    assert saved["metrics"]["mel"]["settings"]["parameter_set"] == "dac_eval_default"
    assert saved["metrics"]["mel@dac_train_7scale"]["settings"]["n_mels"] == [5, 10, 20, 40, 80, 160, 320]
    assert saved["metrics"]["pesq"]["settings"]["package"].startswith("pesq ")
    assert saved["systems"]["toy"]["streams"][0] == {"name": "semantic", "frame_rate": 100.0, "codebook_size": 16}
    assert saved["higher_is_better"]["mel"] is False and saved["higher_is_better"]["pesq"] is True
    assert saved["errors"] == {} and saved["data"]["domains"] == {"music": 1, "sound": 1, "speech": 1}
    report = (out / "report.md").read_text()
    assert "dac_eval_default" in report and "![speech](plots/spec_speech.png)" in report
    for clip in ("speech", "chord", "noise"):
        assert (out / "plots" / f"spec_{clip}.png").stat().st_size > 1000
        assert sf.info(out / "audio" / clip / "toy.wav").samplerate == 16000
    assert (out / "comparison.csv").is_file() and (out / "plots" / "comparison.png").is_file()


class ExplodingConfig(MetricConfig):
    kind: Literal["explode"] = "explode"


class Exploding(Metric):
    """Fails on every clip after the first: the run must go on."""

    higher_is_better = False

    def __init__(self, config):
        super().__init__(config)
        self.calls = 0

    def __call__(self, estimate, reference, sample_rate, **meta):
        self.calls += 1
        if self.calls > 1:
            raise RuntimeError("boom")
        return 1.0


class _ExplodingPlugin:
    @hookimpl
    def register_metrics(register):
        register("explode", ExplodingConfig, lambda cfg, ctx: Exploding(cfg))


def test_a_failing_metric_yields_nan_and_one_logged_error(eval_registry, corpus, tmp_path, caplog):
    eval_registry.register_module(_ExplodingPlugin, name="exploding")
    metrics = build_metrics(load_metric_configs(["explode", "l1"], eval_registry), eval_registry)
    with caplog.at_level(logging.ERROR, logger="codecfw.eval"):
        result = evaluate([IdentitySystem(16000)], load_clips(corpus / "manifest.jsonl"), metrics, tmp_path / "out",
                          progress=False)
    values = [r["explode"] for r in result.rows]
    assert values[0] == 1.0 and all(math.isnan(v) for v in values[1:])
    assert all(r["l1"] == 0.0 for r in result.rows)  # the other metric is untouched
    assert result.errors["identity"]["explode"] == {"count": 2, "first_clip": "chord", "error": "RuntimeError: boom"}
    assert len([r for r in caplog.records if "boom" in r.getMessage()]) == 1
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["errors"]["identity"]["explode"]["count"] == 2
    assert "boom" in (tmp_path / "out" / "report.md").read_text()


def test_a_missing_backend_is_reported_not_fatal(eval_registry, corpus, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "visqol", None)  # neither Google's ViSQOL nor the visqol-python port
    monkeypatch.setenv("PATH", str(tmp_path))  # no visqol binary
    metrics = build_metrics(load_metric_configs(["visqol:mode=audio", "l1"], eval_registry), eval_registry)
    result = evaluate([IdentitySystem(16000)], load_clips(corpus / "manifest.jsonl"), metrics, tmp_path / "out",
                      progress=False)
    assert "visqol_audio" in result.unavailable["metrics"]
    assert all(r["l1"] == 0.0 for r in result.rows)
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert "ViSQOL is not installed" in saved["unavailable"]["metrics"]["visqol_audio"]
    assert "Unavailable" in (tmp_path / "out" / "report.md").read_text()


def test_missing_anchor_tools_are_reported(eval_registry, corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no c2enc/opusenc here
    metrics = build_metrics(load_metric_configs(["l1"], eval_registry), eval_registry)
    anchors = build_anchors(["codec2-1200,opus-8k"])
    result = evaluate([IdentitySystem(16000), *anchors], load_clips(corpus / "manifest.jsonl"), metrics,
                      tmp_path / "out", progress=False)
    assert set(result.unavailable["systems"]) == {"codec2-1200", "opus-8k"}
    assert "apt-get install codec2" in result.unavailable["systems"]["codec2-1200"]
    assert {r["system"] for r in result.rows} == {"identity"}
    assert [a.name for a in build_anchors(["codec2", "opus"])] == [
        "codec2-700C", "codec2-1200", "codec2-2400", "codec2-3200", "opus-6k", "opus-8k", "opus-10k", "opus-12k"]
    with pytest.raises(ValueError, match="unknown anchor"):
        build_anchors(["mp3"])


@pytest.mark.skipif(not (shutil.which("c2enc") and shutil.which("opusenc")), reason="codec2/opus-tools not installed")
def test_anchors_run_through_the_same_metrics(eval_registry, corpus, tmp_path):
    metrics = build_metrics(load_metric_configs(["mel", "pesq", "bitrate"], eval_registry), eval_registry)
    result = evaluate([IdentitySystem(16000), Codec2Anchor("1200"), OpusAnchor(8)], load_clips(
        corpus / "manifest.jsonl"), metrics, tmp_path / "out", progress=False)
    c2 = [r for r in result.rows if r["system"] == "codec2-1200"]
    assert [r.get("skipped") is None for r in c2] == [True, False, False]  # speech only
    speech = c2[0]
    assert 1.0 < speech["pesq"] < 4.0 and speech["mel"] > 0.3
    assert speech["bitrate_kbps"] == 1.2 and speech["bitrate_kbps_measured"] == pytest.approx(1.2, rel=0.03)
    opus = result.overall("opus-8k")
    assert opus["bitrate_kbps"] == 8 and opus["bitrate_kbps_measured"] == pytest.approx(8, rel=0.1)
    assert opus["pesq"] > result.overall("codec2-1200")["pesq"]  # 8 kbps wide-band beats 1.2 kbps narrow-band


def test_ogg_packet_sizes():
    def page(packets: list[int]) -> bytes:
        lacing = b"".join(bytes([255] * (n // 255) + [n % 255]) for n in packets)
        return b"OggS" + bytes(22) + bytes([len(lacing)]) + lacing + bytes(sum(packets))

    assert ogg_packet_bytes(page([19]) + page([300, 3])) == [19, 300, 3]


def test_cli_eval_on_a_checkpoint(eval_registry, corpus, tmp_path, monkeypatch):
    from codecfw.core.checkpoint import save_checkpoint
    from codecfw.core.cli import main

    system = _toy_system(eval_registry)
    recipe = validate_recipe(TOY_RECIPE, eval_registry)
    folder = save_checkpoint(tmp_path / "run", 7, {"model": system.codec}, {"recipe": recipe.model_dump(mode="json")},
                             {"note": torch.zeros(1)})
    loaded = load_system(str(tmp_path / "run"), eval_registry)
    assert loaded.info["step"] == 7 and len(loaded.info["checkpoint_hash"]["model.safetensors"]) == 16
    monkeypatch.setattr("codecfw.core.registry._REGISTRY", eval_registry)
    code = main(["eval", str(folder), "--data", str(corpus / "manifest.jsonl"), "-o", str(tmp_path / "out"),
                 "--metrics", "mel", "bitrate", "--max-seconds", "1", "--no-progress", "--report-clips", "1"])
    assert code == 0
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["systems"]["toy"]["checkpoint_hash"] == loaded.info["checkpoint_hash"]
    assert saved["systems"]["toy"]["step"] == 7 and saved["data"]["max_seconds"] == 1.0
    x = torch.randn(1, 1, 3200)
    with torch.no_grad():
        assert torch.equal(loaded.codec.encode(x)["acoustic"], system.codec.encode(x)["acoustic"])
    assert main(["eval", "identity", "--data", str(corpus / "manifest.jsonl"), "-o", str(tmp_path / "o2"),
                 "--metrics", "melody"]) == 2


def _labelled_corpus(root: Path, n: int = 8, split: bool = False) -> Path:
    """Two separable classes (low tones vs. noise) in a CSV manifest with a ``label`` column."""
    rng = np.random.default_rng(1)
    t = np.arange(4000) / 16000
    lines = ["path,label,split"]
    for i in range(n):
        tone = 0.3 * np.sin(2 * np.pi * (100 + 10 * i) * t)
        noise = 0.3 * rng.standard_normal(len(t))
        for kind, x in (("tone", tone), ("noise", noise)):
            sf.write(root / f"{kind}{i}.wav", x.astype(np.float32), 16000)
            lines.append(f"{kind}{i}.wav,{kind},{('train' if i < n - 2 else 'test') if split else ''}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root / "labels.csv"


def test_semantic_probe_all_and_first_stream(eval_registry, tmp_path):
    system = _toy_system(eval_registry)
    clips = load_clips(_labelled_corpus(tmp_path))
    all_feat, first_feat, how = clip_features(system.codec, torch.randn(3200))
    assert all_feat.shape == (16,) and first_feat.shape == (8,) and "only stream" in how
    result = run_probe(system, clips, label_key="label", epochs=100, hidden=64)
    assert result["classes"] == ["noise", "tone"] and result["n_clips"] == 16
    assert result["protocol"] == "stratified 5-fold cross-validation" and result["majority_baseline"] == 0.5
    assert result["all_streams"]["accuracy"] >= 0.75 and result["first_stream"]["stream"] == "semantic"
    assert 0.0 <= result["first_stream"]["accuracy"] <= 1.0 and len(result["all_streams"]["folds"]) == 5
    split_clips = load_clips(_labelled_corpus(tmp_path, split=True))
    assert run_probe(system, split_clips, label_key="label", epochs=50, hidden=64)["protocol"].startswith("manifest split (12 train")
    assert "error" in run_probe(system, clips, label_key="missing_column")
    folds = stratified_folds([0, 0, 0, 1, 1, 1], 3)
    assert sorted(i for f in folds for i in f) == list(range(6)) and all(len(f) == 2 for f in folds)


def test_probe_runs_inside_eval_with_domain_labels(eval_registry, corpus, tmp_path):
    metrics = build_metrics(load_metric_configs(["l1"], eval_registry), eval_registry)
    clips = load_clips(corpus / "manifest.jsonl")
    result = evaluate([_toy_system(eval_registry)], clips, metrics, tmp_path / "out", max_seconds=0.5,
                      probe={"label_key": "domain", "epochs": 20}, progress=False)
    probe = result.probe["toy"]  # one clip per domain: reported, not fatal
    assert probe["classes"] == ["music", "sound", "speech"] and "at least 2 clips per class" in probe["error"]
    assert "Semantic probe" in (tmp_path / "out" / "report.md").read_text()


def test_an_unreadable_clip_is_an_error_of_that_clip_only(eval_registry, corpus, tmp_path):
    (tmp_path / "broken.wav").write_bytes(b"RIFF....WAVE not audio")
    shutil.copy(corpus / "chord.wav", tmp_path / "chord.wav")
    (tmp_path / "m.csv").write_text("path,domain\nbroken.wav,sound\nchord.wav,music\n")
    metrics = build_metrics(load_metric_configs(["l1"], eval_registry), eval_registry)
    result = evaluate([IdentitySystem(16000)], load_clips(tmp_path / "m.csv"), metrics, None, progress=False)
    assert math.isnan(result.rows[0]["l1"]) and result.rows[1]["l1"] == 0.0
    assert result.errors["identity"]["process"]["first_clip"] == "broken"
    assert "cannot read audio file" in result.errors["identity"]["process"]["error"]


def test_group_by_adds_sub_rows_per_domain_only_where_the_column_varies():
    from codecfw.core.evaluation.evaluate import summarise

    rows = [{"system": "s", "clip": c, "domain": d, "group": g, "seconds": 1.0, "rtf": 0.1, "mel": m}
            for c, d, g, m in [("a", "speech", "recorded", 1.0), ("b", "speech", "recorded", 3.0),
                               ("c", "speech", "synthetic", 8.0), ("d", "music", "recorded", 5.0)]]
    summary = summarise(rows, ["mel"], {})
    got = [(r["domain"], r["clips"], r["mel"]) for r in summary]
    assert got == [("all", 4, 4.25), ("music", 1, 5.0), ("speech", 3, 4.0), ("speech/recorded", 2, 2.0),
                   ("speech/synthetic", 1, 8.0)]
    for r in rows:
        del r["group"]
    assert [r["domain"] for r in summarise(rows, ["mel"], {})] == ["all", "music", "speech"]
