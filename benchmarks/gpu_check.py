"""The GPU check: one command that turns a briefly lent GPU into the figures the project lacks.

    python benchmarks/gpu_check.py OUTDIR [--device cuda|cpu] [--small] [--dry-run] [--only SECTION,...]
                                          [--budget-s 480] [--reference-path SEMANTICODEC_CHECKOUT] [--work-dir DIR]

Sections (each in its own process with its own time budget, so one failure, hang or overrun never loses the
others; OUTDIR/gpu_check.json and OUTDIR/gpu_check.md are rewritten atomically after every section):

- ``train``: every recipe at full size (semanticodec, xcodec, sacodec, and sacodec_small_16k when it exists) trains a
  few steps in bf16 through the real command, ``torchrun --nproc-per-node 1 -m codecfw.core.cli train``: steady
  steps/s and samples/s (from metrics.jsonl, warm-up steps excluded), the training process's peak GPU memory
  (``summary.json``), the last loss; then, in this process, one training step's loss on the same batch and weights in
  fp32 (TF32 off) and under bf16 autocast, and the host-device synchronisations of one training step
  (``torch.cuda.set_sync_debug_mode("warn")``). Full-size recipes need pretrained frozen parts and codebooks that a
  bare machine lacks: the recipes' documented escapes are applied and listed (random frozen teacher built from
  ``teacher_config``, random frozen codebook ``codebook: null``, random AudioMAE/VAE/vocoder by default).
- ``decode``: SemantiCodec's decoder at full size on 60 s of tokens: DDIM 50 + CFG 2 (and the reference pipeline's
  ``SemantiCodec.decode`` on the same weights and tokens when ``--reference-path`` names a checkout of
  haoheliu/SemantiCodec-inference), DPM-Solver++ and UniPC at 10 and 20 steps; RTF, the guided UNet step's time
  and its share of the GPU's dense bf16 peak (a table by device name; the number used is stated, with a measured
  bf16 GEMM rate beside it); encode RTF of the full codec.
- ``xcodec``: encode/decode RTF of codecfw's X-Codec against transformers' ``XcodecModel`` on the same weights,
  batch 1 and 16 (benchmarks/xcodec_speed.py).
- ``kmeans``: codecfw's k-means on the device at 1M x 768 -> 4096, two Lloyd passes, against faiss on the CPU
  (and faiss on the GPU when the wheel has it) (benchmarks/kmeans.py).
- ``cuda_tests``: ``pytest -m cuda`` (the CUDA-only tests: bf16 step, NCCL DDP step, no sync in the step, ...).

RTF = compute seconds / audio seconds (below 1: faster than real time). ``--small`` uses the tiny recipes and
reduced sizes; ``--dry-run`` (implies ``--small``) runs every code path in seconds, sections in this process: the
CPU rehearsal that tests/test_gpu_check.py runs. docs/gpu.md is the standing practice around this script.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmarks, imported by name

SECTIONS = ("train", "decode", "xcodec", "kmeans", "cuda_tests")
# share of --budget-s per section (full size on one H100: each recipe ~ 50 s of start-up, build, 10 steps,
# checkpoint and the in-process precision check)
BUDGET_SHARES = {"train": 0.50, "decode": 0.17, "xcodec": 0.08, "kmeans": 0.12, "cuda_tests": 0.13}
# in this order: when the train budget runs out, the last recipes are the ones reported as skipped
FULL_RECIPES = ("xcodec", "sacodec_small_16k", "semanticodec", "sacodec")
TINY_RECIPES = {"xcodec": "xcodec_tiny", "sacodec": "sacodec_tiny", "semanticodec": "semanticodec_tiny"}
# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) from the vendors' data sheets, matched against
# torch.cuda.get_device_name() in this order.
BF16_PEAK_TFLOPS = [("H100 NVL", 835.0), ("H100 PCIe", 756.0), ("H100", 989.4), ("H200", 989.4), ("GH200", 989.4),
                    ("B200", 2250.0), ("A100", 312.0), ("L40S", 362.0), ("L4", 121.0), ("A10", 125.0),
                    ("RTX 4090", 165.2)]
LOSS_RTOL = 0.05  # bf16 keeps 8 mantissa bits; a training loss summed over many terms agrees to ~1 %


def log(msg: str) -> None:
    print(msg, flush=True)


# ---------------------------------------------------------------------------------------------------------------
# Settings by mode
# ---------------------------------------------------------------------------------------------------------------


def settings(args) -> dict[str, Any]:
    """Sizes of every section for the mode: full (the GPU), --small (tiny recipes, minutes on a CPU) or --dry-run."""
    if not args.small:
        return dict(train_steps=10, train_warmup=3, train_batch=None, train_segment=None, num_workers=4,
                    corpus=(32, 12.0), decode_window=None,
                    decode_seconds=60.0, decode_steps=[("ddim", 50), ("dpmsolver++", 10), ("dpmsolver++", 20),
                                                      ("unipc", 10), ("unipc", 20)],
                    encode_seconds=60.0, xcodec_seconds=10.0, xcodec_batches=[1, 16], repeats=3,
                    kmeans=dict(rows=1_000_000, dim=768, clusters=4096, iters=2))
    if not args.dry_run:
        return dict(train_steps=4, train_warmup=1, train_batch=2, train_segment=0.5, num_workers=0,
                    corpus=(8, 2.0), decode_window=None,
                    decode_seconds=10.24, decode_steps=[("ddim", 10), ("dpmsolver++", 10), ("unipc", 10)],
                    encode_seconds=10.24, xcodec_seconds=2.0, xcodec_batches=[1, 4], repeats=2,
                    kmeans=dict(rows=20_000, dim=64, clusters=64, iters=2))
    return dict(train_steps=2, train_warmup=1, train_batch=1, train_segment=0.25, num_workers=0,
                corpus=(2, 1.0), decode_window=(2.56, 0.32),  # decoder windows of 2.56 s: a quarter of the work
                decode_seconds=2.56, decode_steps=[("ddim", 1), ("dpmsolver++", 2), ("unipc", 2)],
                encode_seconds=2.0, xcodec_seconds=0.5, xcodec_batches=[1, 2], repeats=1,
                kmeans=dict(rows=2_000, dim=16, clusters=8, iters=2))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bf16_peak(device: torch.device) -> tuple[float | None, str]:
    """(dense bf16 TFLOP/s, where the number comes from) for this device."""
    if device.type != "cuda":
        return None, "no table entry for CPUs"
    name = torch.cuda.get_device_name(device)
    for key, tflops in BF16_PEAK_TFLOPS:
        if key in name:
            return tflops, f"data-sheet dense bf16 peak of '{key}' (device '{name}')"
    return None, f"device '{name}' is not in the table"


def measured_bf16_gemm_tflops(device: torch.device) -> float:
    """The best of a few square bf16 matrix products: what this device sustains on GEMM."""
    n = 8192 if device.type == "cuda" else 512
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    best = math.inf
    for _ in range(5):
        sync(device)
        t = time.perf_counter()
        for _ in range(5):
            a @ b
        sync(device)
        best = min(best, (time.perf_counter() - t) / 5)
    return 2 * n ** 3 / best / 1e12


# ---------------------------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------------------------


def offline_overrides(recipe_path: Path) -> list[str]:
    """Overrides that let a recipe build on a machine without its pretrained parts (the recipes' documented escapes):
    a random frozen HuBERT-base-shaped teacher from ``teacher_config``, random frozen codebooks for missing files,
    no decoder/AudioMAE weights when the file is missing. Each returned item is a ``key=value`` override."""
    from codecfw.core.config import load_recipe_data

    data = load_recipe_data(recipe_path)
    out: list[str] = []
    semantic = data.get("semantic") or {}
    hubert = "{model_type: hubert}"  # HuBERT base: the shape of hubert-base-ls960, WavLM base+ and mHuBERT-147

    def missing(path: Any) -> bool:
        return isinstance(path, str) and not (REPO / path).exists() and not Path(path).exists()

    kind = semantic.get("kind")
    if kind == "ssl_teacher" and not semantic.get("teacher_config") and not Path(str(semantic.get("model"))).is_dir():
        out.append(f"semantic.teacher_config={hubert}")
    if kind == "semantic_anchoring":
        if missing(semantic.get("codebook")):
            out.append("semantic.codebook=null")
        teacher = semantic.get("teacher", {})
        if teacher is not None and not (teacher or {}).get("teacher_config") \
                and not Path(str((teacher or {}).get("model", ""))).is_dir():
            out.append(f"semantic.teacher.teacher_config={hubert}")
    if kind == "audiomae_kmeans":
        if missing(semantic.get("audiomae_weights")):
            out.append("semantic.audiomae_weights=null")
        for i, spec in enumerate(semantic.get("codebooks") or []):
            if isinstance(spec, dict) and missing(spec.get("path")):
                out.append(f"semantic.codebooks.{i}.path=null")
    if missing((data.get("decoder") or {}).get("weights")):
        out.append("decoder.weights=null")
    return out


def recipe_list(small: bool) -> list[tuple[str, Path]]:
    """(name, path) of the recipes the train section runs: full size, or the tiny ones with --small."""
    out = []
    for name in FULL_RECIPES:
        path = REPO / "recipes" / f"{name}.yaml"
        if small:
            tiny = TINY_RECIPES.get(name)
            if tiny is None:  # a full-size recipe without a tiny twin: its own file, shrunk by the overrides
                if not path.is_file():
                    continue
            else:
                path = REPO / "recipes" / f"{tiny}.yaml"
        if path.is_file():
            out.append((name, path))
    return out


def synthetic_corpus(folder: Path, files: int, seconds: float) -> Path:
    """``files`` WAV files of tones, chirps and noise at 16 kHz: throughput and precision need audio-shaped input,
    not a particular corpus (and none has to travel to the GPU machine)."""
    import numpy as np
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * 16000)) / 16000
    for i in range(files):
        f0 = 80 + 40 * i
        x = 0.3 * np.sin(2 * np.pi * (f0 + 30 * t) * t) + 0.1 * np.sin(2 * np.pi * 3 * f0 * t)
        x = x * (0.6 + 0.4 * np.sin(2 * np.pi * 0.7 * t)) + 0.03 * rng.standard_normal(len(t))
        sf.write(folder / f"synthetic_{i:03d}.wav", x.astype(np.float32), 16000)
    return folder


def train_overrides(cfg: dict, run_steps: int, corpus: Path) -> list[str]:
    # Speed and numerics only, on a machine without the pretrained weights: random frozen parts on purpose.
    out = [f"train.steps={run_steps}", "train.precision=bf16", "train.log_every=1", "train.valid_every=1000000",
           "train.checkpoint_every=1000000", "data.valid=null", f"data.train={corpus}",
           f"data.num_workers={cfg['num_workers']}", "data.cache_audio=true", "allow_random_frozen=true"]
    if cfg["train_batch"]:
        out.append(f"data.batch_size={cfg['train_batch']}")
    if cfg["train_segment"]:
        out += [f"data.segment_seconds={cfg['train_segment']}"]
    return out


def steady_rate(run_dir: Path, warmup: int) -> tuple[float | None, float | None, int]:
    """(steps/s after ``warmup`` steps, last logged generator loss, steps logged) from metrics.jsonl."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r.get("split") == "train"]
    if not rows:
        return None, None, 0
    loss = rows[-1].get("loss/generator_total")
    timed = [r for r in rows if r["step"] >= warmup]
    if len(timed) < 2:
        return None, loss, len(rows)
    return (timed[-1]["step"] - timed[0]["step"]) / (timed[-1]["time"] - timed[0]["time"]), loss, len(rows)


def train_argv(path: Path, overrides: list[str], run_dir: Path, device: str) -> list[str]:
    return ["train", str(path), "--run-dir", str(run_dir), "--device", device, "--no-progress", *overrides]


def torchrun_command(argv: list[str]) -> list[str]:
    """``torchrun --nproc-per-node 1 -m codecfw.core.cli ARGV`` (torchrun as this interpreter's module)."""
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "1", "--master-port",
            str(_free_port()), "-m", "codecfw.core.cli", *argv]


def run_training(name: str, path: Path, overrides: list[str], run_dir: Path, device: str, dry_run: bool,
                 timeout: float) -> dict:
    """Train through the real command; in a dry run the same command in this process (no torchrun start-up)."""
    argv = train_argv(path, overrides, run_dir, device)
    logfile = run_dir.parent / f"train-{name}.log"
    t = time.perf_counter()
    if dry_run:
        from codecfw.core.cli import main as cli_main

        rc = cli_main(argv)
        tail = ""
    else:
        cmd = torchrun_command(argv)
        with open(logfile, "w") as f:
            f.write(" ".join(cmd) + "\n")
            f.flush()
            rc, _ = run_group(cmd, timeout, stdout=f, stderr=subprocess.STDOUT)
        tail = "\n".join(logfile.read_text(errors="replace").splitlines()[-12:])
    out = {"command": ("torchrun --nproc-per-node 1 -m codecfw.core.cli " if not dry_run else "codecfw ")
           + " ".join(argv), "wall_s": time.perf_counter() - t, "returncode": rc}
    if rc != 0:
        raise RuntimeError(f"training {name} ended with {rc}:\n{tail}")
    return out


def run_group(cmd: list[str], timeout: float, **kwargs) -> tuple[int | str, str | None]:
    """Run ``cmd`` in a session of its own; on timeout kill the whole group (torchrun's and pytest's workers too,
    which would otherwise hold the GPU). Returns (exit code or "timeout", captured output if ``capture``)."""
    capture = kwargs.pop("capture", False)
    if capture:
        kwargs.update(stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    proc = subprocess.Popen(cmd, cwd=REPO, start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            **kwargs)
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        _terminate(proc)
        out, _ = proc.communicate()
        return "timeout", out
    finally:  # also when this section is stopped (SIGTERM → KeyboardInterrupt)
        _terminate(proc)


def _terminate(proc: subprocess.Popen, grace: float = 8.0) -> None:
    """SIGTERM to the group first: torchrun's agent then stops its workers (they run in sessions of their own, out
    of reach of a signal to its group); SIGKILL after ``grace`` seconds."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def precision_and_sync(path: Path, overrides: list[str], device: torch.device, work: Path) -> dict:
    """One training step's loss on one batch and the same weights in fp32 (TF32 off) and under bf16 autocast; then
    the host-device synchronisations of one real training step (CUDA only)."""
    from codecfw.core.config import load_recipe
    from codecfw.core.registry import get_registry
    from codecfw.core.training.trainer import Trainer

    registry = get_registry()
    recipe = load_recipe(path, [*overrides, "train.precision=fp32", "data.num_workers=0"], registry)
    run_dir = Path(tempfile.mkdtemp(prefix="precision-", dir=work))
    trainer = Trainer(recipe, registry=registry, run_dir=run_dir, device=str(device), progress=False).setup()
    try:
        trainer._data = trainer._start_epoch()
        batch = trainer._next_batch()
        codec = trainer.codec.train()
        state = {k: v.detach().clone() for k, v in codec.state_dict().items()}
        devices = [device] if device.type == "cuda" else []

        def step_loss(dtype: torch.dtype | None) -> tuple[float, dict[str, float]]:
            codec.load_state_dict(state)  # EMA codebooks, k-means init and scale_by_std change buffers in training
            trainer.objective.begin_step(0)
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(1234)
                with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                    result = trainer.objective.step(batch, "generator")
            trainer.objective.reset()
            return float(result.loss.detach().float()), {k: float(v) for k, v in result.stats.items()}

        tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        try:
            fp32, fp32_terms = step_loss(None)
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
        bf16, bf16_terms = step_loss(torch.bfloat16)
        codec.load_state_dict(state)
        rel = abs(bf16 - fp32) / max(abs(fp32), 1e-12)
        # the logged loss term that moved most (in absolute value: a term near zero has a meaningless relative
        # change), to know where to look when the totals differ
        terms = {k: abs(bf16_terms[k] - v) for k, v in fp32_terms.items() if k in bf16_terms and k.startswith("loss/")}
        worst = max(terms, key=terms.get) if terms else None
        out = {"fp32_loss": fp32, "bf16_loss": bf16, "rel_diff": rel, "rtol": LOSS_RTOL,
               "finite": math.isfinite(fp32) and math.isfinite(bf16),
               "equal_within_rtol": math.isfinite(rel) and rel <= LOSS_RTOL,
               "most_moved_term": (f"{worst} {fp32_terms[worst]:.4g} -> {bf16_terms[worst]:.4g}" if worst
                                         else None),
               "fp32_terms": fp32_terms, "bf16_terms": bf16_terms}
        out.update(count_syncs(trainer, batch, device))
    finally:
        trainer.close()
        del trainer
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


def count_syncs(trainer, batch: dict, device: torch.device) -> dict:
    """Synchronising CUDA calls in one training step (after one warm-up step: k-means init and similar first-step
    work may sync once), with their source lines."""
    if device.type != "cuda":
        return {"sync_count": None, "sync_sites": "not measured (CPU)"}
    trainer.amp_dtype = torch.bfloat16
    trainer._record(trainer.train_step([batch]))
    trainer._log_buffer.clear()
    sync(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            trainer._record(trainer.train_step([batch]))
        finally:
            torch.cuda.set_sync_debug_mode("default")
    trainer._log_buffer.clear()
    hits = [w for w in caught if "synchroniz" in str(w.message)]
    sites: dict[str, int] = {}
    for w in hits:
        where = f"{Path(w.filename).name}:{w.lineno}"
        sites[where] = sites.get(where, 0) + 1
    return {"sync_count": len(hits), "sync_sites": ", ".join(f"{k} x{v}" for k, v in sorted(sites.items())) or "none"}


def section_train(args, cfg: dict, deadline: float, emit: Callable[[dict], None]) -> dict:
    device = torch.device(args.device)
    results: dict[str, Any] = {}
    work = args.work_dir / "train"
    work.mkdir(parents=True, exist_ok=True)
    run_steps = cfg["train_steps"]
    corpus = synthetic_corpus(work / "corpus", *cfg["corpus"])
    for name, path in recipe_list(args.small):
        left = deadline - time.monotonic()
        if left < 5:
            results[name] = {"status": "skipped", "error": "section budget spent"}
            emit(results)
            continue
        entry: dict[str, Any] = {"recipe": str(path.relative_to(REPO)), "status": "error"}
        results[name] = entry
        try:
            escapes = offline_overrides(path)
            overrides = train_overrides(cfg, run_steps, corpus) + escapes
            if args.small and name not in TINY_RECIPES:  # a full-size recipe without a tiny twin, at toy widths
                overrides += small_widths(path)
            entry["escapes"] = escapes or "none"
            run_dir = work / name
            if run_dir.exists():
                shutil.rmtree(run_dir)
            log(f"[train] {name}: {path.name}, {run_steps} steps bf16 on {device}"
                + (f"; escapes: {' '.join(escapes)}" if escapes else ""))
            entry.update(run_training(name, path, overrides, run_dir, args.device, args.dry_run, left))
            summary = json.loads((run_dir / "summary.json").read_text())
            rate, loss, logged = steady_rate(run_dir, cfg["train_warmup"])
            recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text())
            per_step = recipe["data"]["batch_size"] * recipe["train"]["grad_accum"]
            entry.update({
                "batch": per_step, "segment_s": recipe["data"]["segment_seconds"], "steps": summary["step"],
                "steps_per_s": rate, "samples_per_s": rate * per_step if rate else None,
                "steps_per_s_incl_warmup": summary.get("steps_per_second"),
                "peak_gpu_mib": summary.get("peak_gpu_memory_mib"), "last_loss": loss,
                "loss_finite": loss is not None and math.isfinite(loss)})
            for sub in ("checkpoints", "tensorboard"):  # GBs at full size; the figures are in the logs
                shutil.rmtree(run_dir / sub, ignore_errors=True)
            log(f"[train] {name}: {rate or float('nan'):.3f} steps/s steady, peak "
                f"{entry['peak_gpu_mib'] or float('nan'):.0f} MiB, last loss {loss}")
            entry.update(precision_and_sync(path, overrides, device, work))
            log(f"[train] {name}: fp32 loss {entry['fp32_loss']:.6g}, bf16 {entry['bf16_loss']:.6g} "
                f"(rel {entry['rel_diff']:.2e}; most moved term {entry['most_moved_term']}); syncs in a step: "
                f"{entry['sync_count']} ({entry['sync_sites']})")
            ok = entry["loss_finite"] and entry["finite"] and entry["equal_within_rtol"]
            entry["status"] = "ok" if ok else "failed"
            if not ok:
                entry["error"] = ("a loss is not finite" if not (entry["loss_finite"] and entry["finite"]) else
                                  f"bf16 loss differs from fp32 by {entry['rel_diff']:.3g} > rtol {LOSS_RTOL}")
        except Exception as exc:  # noqa: BLE001 - recorded, the next recipe runs
            entry["error"] = _error(exc)
            log(f"[train] {name}: ERROR {entry['error'].splitlines()[0]}")
        emit(results)
    return results


def small_widths(path: Path) -> list[str]:
    """Toy widths for a full-size recipe that has no tiny twin (the dry run of sacodec_small_16k): the same
    settings as recipes/sacodec_tiny.yaml where its keys exist."""
    from codecfw.core.config import load_recipe_data

    tiny = load_recipe_data(REPO / "recipes" / "sacodec_tiny.yaml")
    data = load_recipe_data(path)
    out = []
    for slot in ("semantic", "acoustic", "decoder"):
        if (data.get(slot) or {}).get("kind") == (tiny.get(slot) or {}).get("kind"):
            for key, value in tiny[slot].items():
                if key != "kind":
                    out.append(f"{slot}.{key}={json.dumps(value)}")
    if [d.get("kind") for d in data.get("discriminators", [])] == [d["kind"] for d in tiny["discriminators"]]:
        out.append(f"discriminators={json.dumps(tiny['discriminators'])}")
    return out


# ---------------------------------------------------------------------------------------------------------------
# decode (SemantiCodec)
# ---------------------------------------------------------------------------------------------------------------


def unet_step(dec, batch: int, device: torch.device, repeats: int) -> tuple[float, float]:
    """(seconds, GFLOP) of one guided UNet call on ``batch`` windows (2 x batch rows: both guidance branches), with
    the context keys/values precomputed as sampling does, under the decoder's precision."""
    from semanticodec_speed import counted_gflops

    z = torch.randn(2 * batch, *dec.latent_shape, device=device).contiguous(memory_format=torch.channels_last)
    ctx = torch.randn(2 * batch, dec.window_tokens, dec.unet.config.cross_attention_dim, device=device)
    t = torch.full((2 * batch,), 500, device=device)
    with torch.no_grad(), dec._autocast(dec.cfg.precision):
        kv = {"context_kv": dec.unet.context_kv(ctx)}
        fn = lambda: dec.unet(z, t, encoder_hidden_states=ctx, cross_attention_kwargs=kv)  # noqa: E731
        gflop = counted_gflops(fn)
        fn()
        best = math.inf
        for _ in range(max(2, repeats)):
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            best = min(best, time.perf_counter() - start)
    return best, gflop


def section_decode(args, cfg: dict, deadline: float, emit: Callable[[dict], None]) -> dict:
    from semanticodec_speed import SAMPLE_RATE, TableSlot, codecfw_decoder, import_reference, reference_codec

    device = torch.device(args.device)
    seconds, small = cfg["decode_seconds"], args.small
    torch.manual_seed(0)
    sem = TableSlot("semantic", torch.randn(4096, 768).to(device), 50.0)
    ac = TableSlot("acoustic", torch.randn(8192, 768).to(device), 50.0)
    t = int(round(seconds * 50))
    tokens = {"semantic": torch.randint(0, 4096, (1, t)), "acoustic": torch.randint(0, 8192, (1, t))}
    num_samples = int(t / 8 * 16 * 0.01 * SAMPLE_RATE)  # the reference's trim
    over = {}
    if cfg["decode_window"]:
        over = dict(window_seconds=cfg["decode_window"][0], overlap_seconds=cfg["decode_window"][1])
    results: dict[str, Any] = {"audio_s": seconds, "architecture": "reduced" if small else "full size (75M UNet)"}
    ref = None
    ref_steps = next(n for sampler, n in cfg["decode_steps"] if sampler == "ddim")  # equal steps: DDIM 50 at full size
    if args.reference_path:
        try:
            main_mod = import_reference(args.reference_path)
            ref = reference_codec(main_mod, small, 100, ref_steps, sem.table.cpu(), ac.table.cpu(), device=device)
            dec = codecfw_decoder(small, 1, 50, sem, ac, ref.decoder.state_dict(), **over)
        except Exception as exc:  # noqa: BLE001
            results["reference"] = {"error": _error(exc)}
            ref, dec = None, codecfw_decoder(small, 1, 50, sem, ac, **over)
    else:
        results["reference"] = {"error": "no --reference-path (a SemantiCodec-inference checkout): not timed"}
        dec = codecfw_decoder(small, 1, 50, sem, ac, **over)
    dec = dec.to(device)
    tokens = {k: v.to(device) for k, v in tokens.items()}
    windows = len(dec.window_starts(t))
    results["windows"] = windows
    results["window_batch"] = dec.cfg.window_batch_size
    log(f"[decode] {seconds:g} s ({windows} windows), {results['architecture']} decoder on {device}")

    def timed_decode(sampler: str, steps: int) -> float:
        fn = lambda: dec.decode_tokens(tokens, sem, ac, num_samples, sampler=sampler, steps=steps)  # noqa: E731
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        return time.perf_counter() - start

    with torch.no_grad():
        timed_decode("ddim", 1)  # warm-up: cuDNN plans, allocator
        rows = {}
        for sampler, steps in cfg["decode_steps"]:
            if time.monotonic() > deadline:
                rows[f"{sampler} {steps}"] = {"error": "section budget spent"}
                continue
            s = timed_decode(sampler, steps)
            rows[f"{sampler} {steps}"] = {"seconds": s, "rtf": s / seconds}
            log(f"[decode] codecfw {sampler} {steps} steps CFG {dec.cfg.guidance_scale:g}: {s:.2f} s, "
                f"RTF {s / seconds:.4f}")
            emit({**results, "codecfw": rows})
        results["codecfw"] = rows
        if ref is not None:
            ref_tokens = torch.stack([tokens["semantic"], tokens["acoustic"]], -1)
            devnull = open(os.devnull, "w")
            stdout, stderr = sys.stdout, sys.stderr
            sys.stdout = sys.stderr = devnull  # the reference prints progress bars
            try:
                sync(device)
                start = time.perf_counter()
                ref.decode(ref_tokens)
                sync(device)
                s = time.perf_counter() - start
            finally:
                sys.stdout, sys.stderr = stdout, stderr
            ddim = rows.get(f"ddim {ref_steps}", {}).get("seconds")
            results["reference"] = {"steps": ref_steps, "seconds": s, "rtf": s / seconds,
                                    "speedup_codecfw_equal_steps": s / ddim if ddim else None}
            log(f"[decode] reference SemantiCodec.decode DDIM {ref_steps} CFG 2: {s:.2f} s, RTF {s / seconds:.4f}")
        emit(results)
        batch = min(dec.cfg.window_batch_size, windows)
        step_s, gflop = unet_step(dec, batch, device, cfg["repeats"])
        peak, source = bf16_peak(device)
        gemm = measured_bf16_gemm_tflops(device)
        achieved = gflop / step_s / 1e3
        results["unet_step"] = {"batch_rows": 2 * batch, "seconds": step_s, "gflop": gflop,
                                "tflops": achieved, "peak_bf16_tflops": peak, "peak_source": source,
                                "share_of_peak": achieved / peak if peak else None,
                                "measured_bf16_gemm_tflops": gemm, "share_of_measured_gemm": achieved / gemm,
                                "precision": dec.cfg.precision}
        share = f" = {100 * achieved / peak:.1f} % of {peak:g} TFLOP/s" if peak else ""
        log(f"[decode] guided UNet step ({2 * batch} rows): {step_s * 1e3:.2f} ms, {gflop:.0f} GFLOP, "
            f"{achieved:.3g} TFLOP/s{share} ({source}); measured bf16 GEMM {gemm:.3g} TFLOP/s")
        emit(results)
        results["encode"] = encode_rtf(args, cfg, device)
        log(f"[decode] encode {cfg['encode_seconds']:g} s: {results['encode']['seconds']:.2f} s, "
            f"RTF {results['encode']['rtf']:.4f}")
    return results


def encode_rtf(args, cfg: dict, device: torch.device) -> dict:
    """Codec.encode of the SemantiCodec recipe (full size, random frozen parts; tiny with --small)."""
    from codecfw.core.codec import build_codec
    from codecfw.core.config import load_recipe

    path = REPO / "recipes" / ("semanticodec_tiny.yaml" if args.small else "semanticodec.yaml")
    codec = build_codec(load_recipe(path, offline_overrides(path))).to(device).eval()
    seconds = cfg["encode_seconds"]
    torch.manual_seed(3)
    wav = (0.1 * torch.randn(1, 1, int(seconds * 16000))).to(device)
    with torch.no_grad():
        codec.encode(wav)  # warm-up
        best = math.inf
        for _ in range(cfg["repeats"]):
            sync(device)
            start = time.perf_counter()
            tokens = codec.encode(wav)
            sync(device)
            best = min(best, time.perf_counter() - start)
    return {"recipe": path.name, "audio_s": seconds, "seconds": best, "rtf": best / seconds,
            "tokens": {k: list(v.shape) for k, v in tokens.items()}}


# ---------------------------------------------------------------------------------------------------------------
# xcodec, kmeans, cuda tests
# ---------------------------------------------------------------------------------------------------------------


def section_xcodec(args, cfg: dict, deadline: float, emit: Callable[[dict], None]) -> dict:
    from xcodec_speed import build_models, measure

    models = build_models(args.small)
    results = {}
    for batch in cfg["xcodec_batches"]:
        if time.monotonic() > deadline:
            results[f"batch {batch}"] = {"error": "section budget spent"}
            continue
        r = measure(args.small, cfg["xcodec_seconds"], batch, cfg["repeats"], args.device, models=models)
        results[f"batch {batch}"] = r
        log(f"[xcodec] batch {batch} x {cfg['xcodec_seconds']:g} s: codes identical {r['codes_identical']}; "
            + "; ".join(f"{k} RTF {v['codecfw']:.4f} vs {v['transformers']:.4f}" for k, v in r["rtf"].items()))
        emit(results)
    return results


def section_kmeans(args, cfg: dict, deadline: float, emit: Callable[[dict], None]) -> dict:
    import kmeans as kmeans_bench

    k = cfg["kmeans"]
    threads = os.cpu_count() or 1
    ns = argparse.Namespace(rows=k["rows"], dim=k["dim"], clusters=k["clusters"], iters=k["iters"], mb_epochs=1,
                            mb_batch=4096, device=args.device, threads=threads, reference=None, sk_equal_work=False,
                            faiss_gpu=False)
    extra = []
    try:
        import faiss

        if args.device == "cuda" and hasattr(faiss, "StandardGpuResources"):
            extra.append(("faiss Kmeans (GPU)", lambda x: kmeans_bench.run_faiss(x, k["clusters"], ns, gpu=True)))
    except ImportError:
        pass
    log(f"[kmeans] {k['rows']} x {k['dim']} -> {k['clusters']}, {k['iters']} Lloyd passes; codecfw on "
        f"{args.device}, faiss CPU with {threads} threads" + (", faiss GPU" if extra else " (no faiss GPU in the wheel)"))
    t = time.perf_counter()
    x = kmeans_bench.make_data(k["rows"], k["dim"], k["clusters"])
    results: dict[str, Any] = {"data_s": time.perf_counter() - t, **k, "faiss_threads": threads,
                               "faiss_gpu": bool(extra)}
    torch.manual_seed(0)

    def named(runs: dict) -> dict:
        return {("faiss Kmeans (CPU)" if n == "faiss Kmeans" else n): r for n, r in runs.items()}

    runs = kmeans_bench.compare(x, ns, {"sklearn", "minibatch"}, extra,
                                on_result=lambda so_far: emit({**results, "methods": named(so_far)}))
    renamed = named(runs)
    if "faiss Kmeans (CPU)" not in renamed:
        renamed["faiss Kmeans (CPU)"] = {"error": "faiss is not installed"}
    results["methods"] = renamed
    base = renamed.get("codecfw lloyd")
    for name, r in renamed.items():
        if base and name != "codecfw lloyd" and "seconds" in r:
            r["time_ratio_codecfw_over"] = base["seconds"] / r["seconds"]
            r["inertia_ratio_codecfw_over"] = base["inertia_per_row"] / r["inertia_per_row"]
    emit(results)
    return results


def section_cuda_tests(args, cfg: dict, deadline: float, emit: Callable[[dict], None]) -> dict:
    """``pytest -m cuda`` in a child process (on a CPU: every test skipped, which the dry run checks)."""
    junit = args.work_dir / "cuda_tests.xml"
    target = ["tests/test_cuda.py"] if args.dry_run else ["tests"]
    cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", "-rfEs",
           "--continue-on-collection-errors", f"--junitxml={junit}", *target]
    timeout = max(10.0, deadline - time.monotonic())
    logfile = args.work_dir / "cuda_tests.log"
    rc, output = run_group(cmd, timeout, capture=True)
    output = output or ""
    logfile.write_text(output)
    results: dict[str, Any] = {"command": " ".join(cmd[1:]), "returncode": rc}
    if junit.is_file():
        import xml.etree.ElementTree as ET

        root = ET.parse(junit).getroot()
        suites = [root] if root.tag == "testsuite" else list(root)
        counts = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
        counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
        results.update(counts)
        failed = []
        for case in root.iter("testcase"):
            if case.find("failure") is not None or case.find("error") is not None:
                failed.append(f"{case.get('classname')}::{case.get('name')}")
        results["failed_tests"] = failed or "none"
    tail = "\n".join(output.splitlines()[-15:])
    log("[cuda_tests] " + tail.replace("\n", "\n[cuda_tests] "))
    if rc not in (0, 5) and not results.get("failures") and not results.get("errors"):
        raise RuntimeError(f"pytest ended with {rc}:\n{tail}")
    return results


SECTION_FUNCS = {"train": section_train, "decode": section_decode, "xcodec": section_xcodec,
                 "kmeans": section_kmeans, "cuda_tests": section_cuda_tests}


# ---------------------------------------------------------------------------------------------------------------
# Orchestration: sections in child processes with budgets; results written after each
# ---------------------------------------------------------------------------------------------------------------


def _error(exc: BaseException) -> str:
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else ""
    return f"{type(exc).__name__}: {str(exc).strip()[:1500]}{where}"


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def environment(args) -> dict:
    device = torch.device(args.device)
    meta = {"date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
            "mode": "dry-run" if args.dry_run else ("small" if args.small else "full"), "device": args.device,
            "torch": torch.__version__, "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "budget_s": args.budget_s}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        meta.update(gpu=torch.cuda.get_device_name(device), gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                    nccl=_nccl_version(), gpus=torch.cuda.device_count())
    try:
        meta["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                        text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        meta["commit"] = None
    try:
        import faiss

        meta["faiss"] = f"{faiss.__version__}{' (GPU)' if hasattr(faiss, 'StandardGpuResources') else ' (CPU)'}"
    except ImportError:
        meta["faiss"] = None
    return meta


def _nccl_version() -> str | None:
    try:
        v = torch.cuda.nccl.version()
    except Exception:  # noqa: BLE001 - a build without NCCL
        return None
    return ".".join(map(str, v)) if isinstance(v, tuple) else str(v)


def run_section_here(name: str, args, budget: float, partial_path: Path | None = None) -> dict:
    """Run one section in this process; the dict it returns (and every partial result) is the section's entry."""
    cfg = settings(args)
    start = time.monotonic()
    entry: dict[str, Any] = {"status": "running", "budget_s": round(budget, 1)}

    def emit(results: dict) -> None:
        entry["results"] = results
        if partial_path is not None:
            write_atomic(partial_path, json.dumps(entry, default=str))

    try:
        entry["results"] = SECTION_FUNCS[name](args, cfg, start + budget, emit)
        inner = entry["results"]
        bad = [k for k, v in inner.items() if isinstance(v, dict) and v.get("status") in ("error", "failed")]
        entry["status"] = "failed" if bad else "ok"
        if bad:
            entry["error"] = f"{', '.join(bad)}: see their entries"
    except Exception as exc:  # noqa: BLE001 - recorded; the other sections run
        entry["status"] = "error"
        entry["error"] = _error(exc)
        log(f"[{name}] ERROR {entry['error']}")
        log(traceback.format_exc())
    entry["seconds"] = round(time.monotonic() - start, 1)
    if partial_path is not None:
        write_atomic(partial_path, json.dumps(entry, default=str))
    return entry


def run_section_child(name: str, args, budget: float) -> dict:
    """The section in a child process of its own (new session: an overrun kills it and every process it started)."""
    partial = args.work_dir / f"section-{name}.json"
    partial.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), str(args.outdir), "--section-child", name,
           "--device", args.device, "--work-dir", str(args.work_dir), "--budget-s", str(budget)]
    cmd += ["--small"] if args.small else []
    cmd += ["--reference-path", args.reference_path] if args.reference_path else []
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=REPO, start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    status = None
    try:
        proc.wait(timeout=budget + 30)  # the section stops itself at its budget; 30 s for start-up and writing
    except subprocess.TimeoutExpired:
        status = "timeout"
    finally:  # also when this process is told to stop (SIGTERM from `timeout`): no section outlives the check
        _terminate(proc, grace=15.0)  # the section stops the process groups it started, then exits
    entry = json.loads(partial.read_text()) if partial.is_file() else {"results": {}}
    entry["seconds"] = round(time.monotonic() - start, 1)
    entry["budget_s"] = round(budget, 1)
    if status == "timeout":
        entry["status"] = "timeout"
        entry["error"] = f"overran its budget ({budget:.0f} s + 30 s) and was killed; partial results kept"
    elif proc.returncode != 0 and entry.get("status") in (None, "running"):
        entry["status"] = "error"
        entry["error"] = f"the section's process died (exit {proc.returncode}); partial results kept"
    return entry


def _stop(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("outdir", type=Path, help="gpu_check.json and gpu_check.md are written here")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--small", action="store_true", help="tiny recipes and reduced sizes (a CPU rehearsal)")
    p.add_argument("--dry-run", action="store_true", help="--small at the least sizes, sections in this process")
    p.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--budget-s", type=float, default=480.0, help="wall-clock budget of all sections together")
    p.add_argument("--reference-path", default=None, help="a haoheliu/SemantiCodec-inference checkout")
    p.add_argument("--work-dir", type=Path, default=None, help="run directories and logs (default OUTDIR/work)")
    p.add_argument("--section-child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.small = args.small or args.dry_run
    args.outdir.mkdir(parents=True, exist_ok=True)
    args.work_dir = (args.work_dir or args.outdir / "work").resolve()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    if args.reference_path and not Path(args.reference_path, "semanticodec", "main.py").is_file():
        log(f"--reference-path {args.reference_path}: no semanticodec/main.py there; the reference is not timed")
        args.reference_path = None
    # SIGTERM (an outer `timeout`, or the parent stopping an overrunning section) unwinds like Ctrl-C: the process
    # groups started below are killed on the way out
    signal.signal(signal.SIGTERM, _stop)
    if args.section_child:
        run_section_here(args.section_child, args, args.budget_s, args.work_dir / f"section-{args.section_child}.json")
        return 0

    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in only if s not in SECTIONS]
    if unknown:
        p.error(f"--only: unknown section(s) {', '.join(unknown)}; known: {', '.join(SECTIONS)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: torch sees no CUDA device (use --device cpu --small for a rehearsal)")
    report: dict[str, Any] = {"meta": environment(args), "sections": {}}
    log(f"gpu_check: {report['meta']['mode']} on {report['meta'].get('gpu', args.device)}, sections "
        f"{', '.join(only)}, budget {args.budget_s:.0f} s -> {args.outdir}")
    start = time.monotonic()
    for name in only:
        # the time left, shared among the sections still to run: what earlier sections left unused goes to the later
        # ones, and an overrun shrinks them (never below 20 s: a section always gets its chance to report)
        left = args.budget_s - (time.monotonic() - start)
        remaining_share = sum(BUDGET_SHARES[s] for s in only[only.index(name):])
        budget = max(20.0, left * BUDGET_SHARES[name] / remaining_share)
        log(f"\n== {name} (budget {budget:.0f} s) ==")
        if args.dry_run:
            entry = run_section_here(name, args, budget)
        else:
            entry = run_section_child(name, args, budget)
        report["sections"][name] = entry
        report["meta"]["wall_s"] = round(time.monotonic() - start, 1)
        write_report(args.outdir, report)
        log(f"== {name}: {entry['status']} in {entry['seconds']:.0f} s"
            + (f" ({entry['error'].splitlines()[0]})" if entry.get("error") else ""))
    if not args.dry_run:
        pack_logs(args.work_dir, args.outdir / "gpu_check_logs.tar.gz")
    log("\n" + markdown(report))
    return 0


def pack_logs(work: Path, target: Path) -> None:
    """The small files of the work directory (logs, metrics, summaries, recipes) in one archive beside the report."""
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    with tarfile.open(tmp, "w:gz") as tar:
        for path in sorted(work.rglob("*")):
            if path.is_file() and path.stat().st_size < 4 * 2**20 and path.suffix in (".log", ".json", ".jsonl",
                                                                                       ".yaml", ".xml"):
                tar.add(path, arcname=str(path.relative_to(work)))
    os.replace(tmp, target)


# ---------------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------------


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.{digits}g}"
    return str(v)


def write_report(outdir: Path, report: dict) -> None:
    write_atomic(outdir / "gpu_check.json", json.dumps(report, indent=2, default=str))
    write_atomic(outdir / "gpu_check.md", markdown(report))


def markdown(report: dict) -> str:
    m = report["meta"]
    lines = [f"# GPU check, {m['date_utc']} UTC ({m['mode']})", "",
             f"device {m.get('gpu', m['device'])}" + (f" ({m.get('gpu_memory_gib')} GiB, CUDA {m.get('cuda')}, "
                                                     f"cuDNN {m.get('cudnn')}, NCCL {m.get('nccl')})"
                                                     if m.get("gpu") else "")
             + f"; torch {m['torch']}, faiss {m.get('faiss')}; commit {m.get('commit')}; {m.get('cpu_count')} CPUs",
             f"command: `{m['command']}`; wall {m.get('wall_s')} s of budget {m['budget_s']:.0f} s", "",
             "| section | status | seconds | budget s | error |", "| --- | --- | --- | --- | --- |"]
    for name, e in report["sections"].items():
        err = (e.get("error") or "").splitlines()[0][:160] if e.get("error") else ""
        lines.append(f"| {name} | {e['status']} | {_fmt(e.get('seconds'))} | {_fmt(e.get('budget_s'))} | {err} |")
    for name, e in report["sections"].items():
        r = e.get("results") or {}
        lines += ["", f"## {name}", ""]
        if e.get("error"):
            lines += [f"**{e['status']}**: `{e['error'].splitlines()[0][:300]}`", ""]
        lines += SECTION_TABLES[name](r) if r else ["no results"]
    return "\n".join(lines) + "\n"


def _train_table(r: dict) -> list[str]:
    out = ["| recipe | status | batch x s | steps/s | samples/s | peak GPU MiB | last loss | fp32 loss | bf16 loss "
           "| rel diff | syncs/step | escapes / error |", "| " + " | ".join(["---"] * 12) + " |"]
    for name, x in r.items():
        note = x.get("error") or x.get("escapes")
        note = " ".join(note) if isinstance(note, list) else str(note or "")
        out.append(f"| {name} | {x.get('status')} | {_fmt(x.get('batch'))} x {_fmt(x.get('segment_s'))} | "
                   f"{_fmt(x.get('steps_per_s'))} | {_fmt(x.get('samples_per_s'))} | {_fmt(x.get('peak_gpu_mib'))} | "
                   f"{_fmt(x.get('last_loss'))} | {_fmt(x.get('fp32_loss'), 6)} | {_fmt(x.get('bf16_loss'), 6)} | "
                   f"{_fmt(x.get('rel_diff'), 2)} | {_fmt(x.get('sync_count'))} | "
                   f"{note.splitlines()[0][:200] if note else ''} |")
    moved = [f"{n}: {x['most_moved_term']}" for n, x in r.items() if x.get("most_moved_term")]
    sites = [f"{n}: {x['sync_sites']}" for n, x in r.items() if x.get("sync_count")]
    out += ["", f"Loss check: one step, same batch and weights, fp32 (TF32 off) vs bf16 autocast, rtol {LOSS_RTOL}. "
            "steps/s exclude the warm-up steps; peak GPU memory is torch.cuda.max_memory_allocated of the training "
            "process. Full-size recipes run with random frozen parts (escapes listed)."]
    if moved:
        out += ["", "Loss term that moved most, fp32 -> bf16: " + "; ".join(moved)]
    if sites:
        out += ["", "Synchronising calls in one step: " + "; ".join(sites)]
    return out


def _decode_table(r: dict) -> list[str]:
    out = [f"{_fmt(r.get('audio_s'))} s of tokens, {r.get('windows')} windows (batch {r.get('window_batch')}), "
           f"{r.get('architecture')}; RTF = compute s / audio s", "",
           "| pipeline | sampler | seconds | RTF |", "| --- | --- | --- | --- |"]
    for key, x in (r.get("codecfw") or {}).items():
        out.append(f"| codecfw | {key} (CFG 2) | {_fmt(x.get('seconds'))} | {_fmt(x.get('rtf'))} |")
    ref = r.get("reference") or {}
    if "seconds" in ref:
        out.append(f"| reference SemantiCodec.decode | ddim {ref['steps']} (CFG 2) | {_fmt(ref['seconds'])} | "
                   f"{_fmt(ref['rtf'])} |")
        out += ["", f"speed-up of codecfw over the reference at DDIM {ref['steps']}: "
                f"{_fmt(ref.get('speedup_codecfw_equal_steps'))}x"]
    elif ref.get("error"):
        out += ["", f"reference: {ref['error'].splitlines()[0][:200]}"]
    u = r.get("unet_step")
    if u:
        out += ["", f"guided UNet step ({u['batch_rows']} rows, {u['precision']}): {u['seconds'] * 1e3:.2f} ms, "
                f"{u['gflop']:.0f} GFLOP, {_fmt(u['tflops'], 3)} TFLOP/s = "
                f"{_fmt(100 * u['share_of_peak'] if u.get('share_of_peak') else None, 3)} % of "
                f"{_fmt(u['peak_bf16_tflops'])} TFLOP/s ({u['peak_source']}); measured bf16 GEMM "
                f"{u['measured_bf16_gemm_tflops']:.1f} TFLOP/s ({100 * u['share_of_measured_gemm']:.1f} % of it)"]
    e = r.get("encode")
    if e:
        out += ["", f"encode ({e['recipe']}, {_fmt(e['audio_s'])} s): {_fmt(e['seconds'])} s, RTF {_fmt(e['rtf'])}"]
    return out


def _xcodec_table(r: dict) -> list[str]:
    out = ["| batch | codes identical | operation | codecfw RTF | transformers RTF | ratio |",
           "| --- | --- | --- | --- | --- | --- |"]
    for key, x in r.items():
        if "rtf" not in x:
            out.append(f"| {key} | – | {x.get('error', '')} | | | |")
            continue
        for op, v in x["rtf"].items():
            out.append(f"| {x['batch']} x {_fmt(x['seconds'])} s | {_fmt(x['codes_identical'])} | {op} | "
                       f"{_fmt(v['codecfw'])} | {_fmt(v['transformers'])} | {_fmt(v['ratio'], 3)} |")
    return out


def _kmeans_table(r: dict) -> list[str]:
    out = [f"{r.get('rows')} x {r.get('dim')} -> {r.get('clusters')}, {r.get('iters')} Lloyd passes; faiss CPU "
           f"{r.get('faiss_threads')} threads; faiss GPU in the wheel: {_fmt(r.get('faiss_gpu'))}", "",
           "| method | seconds | inertia/row | dead | time codecfw/this | inertia codecfw/this |",
           "| --- | --- | --- | --- | --- | --- |"]
    for name, x in (r.get("methods") or {}).items():
        if "seconds" not in x:
            out.append(f"| {name} | {x.get('error', '')} | | | | |")
            continue
        out.append(f"| {name} | {_fmt(x['seconds'])} | {_fmt(x['inertia_per_row'], 6)} | {x['dead']} | "
                   f"{_fmt(x.get('time_ratio_codecfw_over'), 3)} | {_fmt(x.get('inertia_ratio_codecfw_over'), 4)} |")
    return out


def _cuda_tests_table(r: dict) -> list[str]:
    return ["| tests | passed | failed | errors | skipped | failing |", "| --- | --- | --- | --- | --- | --- |",
            f"| {_fmt(r.get('tests'))} | {_fmt(r.get('passed'))} | {_fmt(r.get('failures'))} | "
            f"{_fmt(r.get('errors'))} | {_fmt(r.get('skipped'))} | {r.get('failed_tests', '')} |",
            "", f"`{r.get('command')}` (exit {r.get('returncode')})"]


SECTION_TABLES = {"train": _train_table, "decode": _decode_table, "xcodec": _xcodec_table, "kmeans": _kmeans_table,
                  "cuda_tests": _cuda_tests_table}


if __name__ == "__main__":
    sys.exit(main())
