"""benchmarks/gpu_check.py: the CPU rehearsal (--dry-run) writes every section with figures or a recorded error,
a failing section leaves the others and the report intact, and the offline escapes let full-size recipes build."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "gpu_check.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, str(SCRIPT), str(out), "--dry-run", "--device", "cpu"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, json.loads((out / "gpu_check.json").read_text()), (out / "gpu_check.md").read_text(), proc.stdout


def test_dry_run_reports_every_section_with_figures(dry_run):
    out, report, md, stdout = dry_run
    sections = report["sections"]
    assert list(sections) == ["train", "decode", "xcodec", "kmeans", "cuda_tests"]
    assert report["meta"]["mode"] == "dry-run" and report["meta"]["device"] == "cpu"
    for name, entry in sections.items():
        assert entry["status"] in ("ok", "failed", "error", "timeout"), name
        assert entry["status"] == "ok" or entry.get("error"), f"{name}: not ok and no error recorded"
        assert entry["seconds"] >= 0 and entry["budget_s"] > 0

    train = sections["train"]["results"]
    assert {"xcodec", "sacodec", "semanticodec"} <= set(train)
    for name, r in train.items():
        if r["status"] == "ok":
            assert _positive(r["steps_per_s"]) and _positive(r["samples_per_s"]), name
            assert r["loss_finite"] and math.isfinite(r["fp32_loss"]) and math.isfinite(r["bf16_loss"]), name
            assert r["rel_diff"] <= r["rtol"], name
            assert r["peak_gpu_mib"] is None  # CPU: no GPU memory to report
        else:
            assert r["error"], name

    decode = sections["decode"]["results"]
    assert decode["codecfw"] and all(_positive(r["rtf"]) for r in decode["codecfw"].values())
    assert _positive(decode["unet_step"]["gflop"]) and _positive(decode["unet_step"]["seconds"])
    assert _positive(decode["encode"]["rtf"])
    assert "reference-path" in decode["reference"]["error"]  # no checkout here: said, not silently skipped

    xcodec = sections["xcodec"]["results"]
    assert set(xcodec) == {"batch 1", "batch 2"}
    for r in xcodec.values():
        assert r["codes_identical"] is True
        assert all(_positive(v["codecfw"]) and _positive(v["transformers"]) for v in r["rtf"].values())

    methods = sections["kmeans"]["results"]["methods"]
    assert _positive(methods["codecfw lloyd"]["inertia_per_row"])
    assert "faiss Kmeans (CPU)" in methods

    tests = sections["cuda_tests"]["results"]
    assert tests["tests"] > 0 and tests["skipped"] == tests["tests"] and tests["passed"] == 0  # no CUDA here

    for name in sections:
        assert f"## {name}" in md
    assert "| recipe | status |" in md and "| method | seconds |" in md
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # atomic writes leave no temporaries
    assert "== cuda_tests: ok" in stdout  # printed as it goes


def test_a_failing_section_is_recorded_and_the_others_still_run(tmp_path, monkeypatch):
    gpu_check = _module()

    def broken(*args):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setitem(gpu_check.SECTION_FUNCS, "xcodec", broken)
    assert gpu_check.main([str(tmp_path), "--dry-run", "--device", "cpu", "--only", "xcodec,kmeans"]) == 0
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["sections"]["xcodec"]["status"] == "error"
    assert "illegal memory access" in report["sections"]["xcodec"]["error"]
    assert report["sections"]["kmeans"]["status"] == "ok"
    assert "illegal memory access" in (tmp_path / "gpu_check.md").read_text()


def test_offline_escapes_let_the_full_size_recipes_validate():
    from codecfw.core.config import load_recipe

    gpu_check = _module()
    escapes = {name: gpu_check.offline_overrides(path) for name, path in gpu_check.recipe_list(small=False)}
    assert escapes["xcodec"] == ["semantic.teacher_config={model_type: hubert}"]
    assert set(escapes["sacodec"]) == {"semantic.codebook=null", "semantic.teacher.teacher_config={model_type: hubert}"}
    assert escapes["semanticodec"] == []  # random AudioMAE, VAE, vocoder and placeholder codebooks by default
    for name, path in gpu_check.recipe_list(small=False):
        recipe = load_recipe(path, escapes[name])
        teacher = getattr(recipe.semantic, "teacher", recipe.semantic)
        if hasattr(teacher, "teacher_config"):
            assert teacher.teacher_config == {"model_type": "hubert"}


def test_full_mode_trains_through_torchrun():
    gpu_check = _module()
    argv = gpu_check.train_argv(Path("recipes/xcodec.yaml"), ["train.steps=10"], Path("/tmp/run"), "cuda")
    cmd = gpu_check.torchrun_command(argv)
    assert cmd[1:5] == ["-m", "torch.distributed.run", "--nproc-per-node", "1"]
    assert cmd[cmd.index("-m", 2):][:4] == ["-m", "codecfw.core.cli", "train", "recipes/xcodec.yaml"]
    assert "--device" in cmd and "train.steps=10" in cmd
