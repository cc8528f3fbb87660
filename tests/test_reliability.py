"""Reliability: the sixteen attacks of issue 17 (and the start/stop frictions of issue 13), one regression test each.

Every test reproduces an attack and asserts what codecfw promises instead (docs/reliability.md): a clear message that
names the file or key, the documented exit status (2 = the input or the command line is wrong, nothing was done;
1 = some inputs failed or the run stopped, the others are done), and nothing lost or left half-written.
"""

from __future__ import annotations

import errno
import json
import math
import os
import signal
import stat
import struct
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from codecfw.core import registry as registry_module
from codecfw.core.checkpoint import save_checkpoint
from codecfw.core.cli import main
from codecfw.core.codec import build_codec
from codecfw.core.config import RecipeError, load_recipe, validate_recipe
from codecfw.core.tokenizer.tokens import TokenFile, TokenFileCorrupt
from codecfw.core.training.trainer import Trainer
from codecfw.core.types import TokenStream

from .toy_codec import TOY_RECIPE
from .training_support import make_corpus, read_metrics, toy_recipe, training_registry

REPO = Path(__file__).resolve().parent.parent
SR = 16000

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture
def registry():
    """The toy codec and the toy training plugins as the process-wide registry (what the CLI uses)."""
    old = registry_module._REGISTRY
    reg = training_registry()
    registry_module.set_registry(reg)
    yield reg
    registry_module.set_registry(old)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"), corrupt=False)


def tone(path: Path, seconds: float = 0.5, sr: int = SR) -> Path:
    t = np.arange(int(sr * seconds)) / sr
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), sr)
    return path


def save_toy(run: Path, registry, step: int = 7, transform=None) -> Path:
    torch.manual_seed(0)
    recipe = validate_recipe(TOY_RECIPE, registry)
    codec = build_codec(recipe, registry)
    if transform is not None:
        with torch.no_grad():
            for p in codec.parameters():
                p.copy_(transform(p))
    return save_checkpoint(run, step, {"model": codec}, {"recipe": recipe.model_dump(mode="json")}, {})


def trainer(data: dict, run_dir: Path, **kwargs) -> Trainer:
    reg = training_registry()
    return Trainer(validate_recipe(data, reg), registry=reg, run_dir=run_dir, device="cpu", progress=False,
                   **kwargs).setup()


def rewrite_header(data: bytes, mutate) -> bytes:
    """A token file whose JSON header went through ``mutate`` (bytes → bytes), checksum recomputed: the file is
    internally consistent, only its header lies."""
    magic, version, reserved, header_len = struct.unpack_from("<8sHHI", data)
    header = data[16:16 + header_len]
    payload = data[16 + header_len:-4]
    header = mutate(header)
    body = struct.pack("<8sHHI", magic, version, reserved, len(header)) + header + payload
    return body + struct.pack("<I", zlib.crc32(body))


def set_key(**changes):
    def mutate(header: bytes) -> bytes:
        head = json.loads(header)
        for key, value in changes.items():
            if key in ("frame_rate", "codebook_size", "length"):
                head["streams"][0][key] = value
            else:
                head[key] = value
        return json.dumps(head).encode()
    return mutate


def small_token_file() -> TokenFile:
    return TokenFile(codec="toy", config_hash="0123456789ab", sample_rate=SR, num_samples=SR,
                     streams=(TokenStream("s", 50.0, 16),), tokens={"s": np.arange(50) % 16})


def no_temp_files(folder: Path) -> list[str]:
    """Leftovers of interrupted writes: hidden temp files/folders anywhere below ``folder``."""
    return [str(p) for p in folder.rglob("*") if ".tmp" in p.name or p.name.startswith((".tmp-", ".old-"))]


def run_python(code: str, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CODECFW_DISABLE_PLUGIN_AUTOLOAD": "1"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, env=env, **kwargs)


# ---------------------------------------------------------------------------------------------------------------
# 1. folders: a bounded, cycle-safe walk for every folder source
# ---------------------------------------------------------------------------------------------------------------


def test_01_symlink_loops_in_a_data_folder_list_each_file_once(tmp_path):
    from codecfw.core.commands._io import Report, expand_inputs
    from codecfw.core.data.dataset import list_audio_files

    d = tmp_path / "d"
    tone(d / "sub" / "a.wav")
    (d / "sub" / "up").symlink_to("..")
    assert [Path(e.path).name for e in list_audio_files(d)] == ["a.wav"]  # today: 41 times
    jobs = expand_inputs([str(d)], (".wav",), Report("encoded"))
    assert [j.source.name for j in jobs] == ["a.wav"]
    (d / "self").symlink_to(".")  # two loops: exponential without a cycle check
    started = time.perf_counter()
    assert len(list_audio_files(d)) == 1 and len(expand_inputs([str(d)], (".wav",), Report("x"))) == 1
    assert [j.rel for j in expand_inputs([str(d / "**" / "*.wav")], (".wav",), Report("x"))] == [Path("sub/a.wav")]
    assert time.perf_counter() - started < 5
    # a linked folder that is not a loop is still followed
    tone(tmp_path / "elsewhere" / "b.wav")
    (d / "linked").symlink_to(tmp_path / "elsewhere")
    assert sorted(Path(e.path).name for e in list_audio_files(d)) == ["a.wav", "b.wav"]


# ---------------------------------------------------------------------------------------------------------------
# 2. a run directory is used by one training at a time
# ---------------------------------------------------------------------------------------------------------------


def test_02_second_training_on_a_run_directory_is_refused_and_touches_nothing(corpus, tmp_path, registry, capsys):
    from codecfw.core.checkpoint import RunDirectoryInUse

    run = tmp_path / "run"
    first = trainer(toy_recipe(corpus, steps=2), run)
    in_progress = run / "checkpoints" / ".tmp-step-00000002-999"
    in_progress.mkdir(parents=True)
    with pytest.raises(RunDirectoryInUse, match=rf"{run}.*in use by PID {os.getpid()}"):
        trainer(toy_recipe(corpus, steps=2), run)
    assert in_progress.is_dir()  # the second start-up removed nothing of the first's
    recipe_file = tmp_path / "toy.yaml"
    recipe_file.write_text(yaml.safe_dump(toy_recipe(corpus, steps=2)))
    code = main(["train", str(recipe_file), "--run-dir", str(run), "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and f"in use by PID {os.getpid()}" in err and "Traceback" not in err
    first.train()
    first.close()  # the lock goes with the trainer
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["split"] == "train"] == [1, 2]
    trainer(toy_recipe(corpus, steps=3), run).close()  # free again


# ---------------------------------------------------------------------------------------------------------------
# 3. token headers are checked against limits before anything is allocated
# ---------------------------------------------------------------------------------------------------------------


def test_03_a_token_header_claiming_1e15_samples_is_refused_before_allocation(tmp_path):
    path = tmp_path / "bomb.cfwt"
    path.write_bytes(rewrite_header(small_token_file().to_bytes(), set_key(num_samples=10 ** 15)))
    assert path.stat().st_size < 1024
    with pytest.raises(TokenFileCorrupt, match=rf"{path}.*num_samples"):
        TokenFile.load(path)


# ---------------------------------------------------------------------------------------------------------------
# 4. non-finite losses: a recipe policy; non-finite audio is never written
# ---------------------------------------------------------------------------------------------------------------


def _poison_from(t: Trainer, step: int) -> None:
    """From optimizer step ``step`` on, every objective loss is NaN (what train.lr=1000 does after a step or two)."""
    original = t.objective.step

    def step_fn(batch, turn):
        result = original(batch, turn)
        if t.step + 1 >= step:
            result.loss = result.loss * float("nan")
        return result

    t.objective.step = step_fn


def test_04_nonfinite_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(corpus, tmp_path):
    from codecfw.core.training.trainer import NonFiniteLossError

    run = tmp_path / "stop"
    t = trainer(toy_recipe(corpus, steps=8, checkpoint_every=2, valid_every=100, nonfinite="stop"), run)
    _poison_from(t, 3)
    with pytest.raises(NonFiniteLossError, match=r"step 3.*train\.nonfinite") as info:
        t.train()
    t.close()
    assert "step-00000002" in str(info.value)  # where the last good weights are
    names = sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.startswith("step-"))
    assert names == ["step-00000002"]
    from safetensors.torch import load_file
    assert all(torch.isfinite(v).all() for v in load_file(str(run / "checkpoints/step-00000002/model.safetensors"))
               .values() if v.is_floating_point())

    run = tmp_path / "skip"
    t = trainer(toy_recipe(corpus, steps=6, checkpoint_every=6, valid_every=6, nonfinite="skip"), run)
    _poison_from(t, 3)
    t.train()  # validation at step 6 runs on finite weights, clips are written
    t.close()
    assert all(torch.isfinite(p).all() for p in t.codec.parameters())
    rows = read_metrics(run)
    skipped = [rows[s]["nonfinite/skipped"] for s in range(1, 7)]
    assert skipped[:2] == [0, 0] and all(n > 0 for n in skipped[2:]), skipped


def test_04_decode_of_nonfinite_output_fails_that_file_only(tmp_path, registry, capsys):
    good = save_toy(tmp_path / "good", registry)
    nan = save_toy(tmp_path / "nan", registry, transform=lambda p: p * float("nan"))
    tone(tmp_path / "in" / "a.wav")
    assert main(["encode", str(tmp_path / "in"), "-o", str(tmp_path / "tok"), "-c", str(good), "-q"]) == 0
    capsys.readouterr()
    code = main(["decode", str(tmp_path / "tok"), "-o", str(tmp_path / "out"), "-c", str(nan), "-q"])
    err = capsys.readouterr().err
    assert code == 1 and "a.cfwt" in err and ("NaN" in err or "non-finite" in err)
    assert not list((tmp_path / "out").rglob("*")) if (tmp_path / "out").exists() else True


# ---------------------------------------------------------------------------------------------------------------
# 5, 6. metrics.jsonl: a torn last line does not block resume; no step is logged twice
# ---------------------------------------------------------------------------------------------------------------


def test_05_torn_last_metrics_line_does_not_block_resume(corpus, tmp_path):
    run = tmp_path / "run"
    t = trainer(toy_recipe(corpus, steps=4, checkpoint_every=4, valid_every=100), run)
    t.train()
    t.close()
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"split": "train", "step": 5, "loss/gen')  # killed mid-line
    t = trainer(toy_recipe(corpus, steps=6, checkpoint_every=4, valid_every=100), run)
    t.train()
    t.close()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["split"] == "train"] == [1, 2, 3, 4, 5, 6]


def test_06_restart_after_a_crash_before_the_first_checkpoint_logs_each_step_once(corpus, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(json.dumps({"split": "train", "step": s, "loss/generator_total": 1.0})
                                               + "\n" for s in (1, 2, 3)))  # a session killed at step 3
    t = trainer(toy_recipe(corpus, steps=4, checkpoint_every=4, valid_every=100), run)
    t.train()
    t.close()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["split"] == "train"] == [1, 2, 3, 4]


# ---------------------------------------------------------------------------------------------------------------
# 7. a third-party plugin cannot replace a built-in kind
# ---------------------------------------------------------------------------------------------------------------


class _FakeEntryPoint:
    def __init__(self, name: str, module, dist: str, version: str = "1.0") -> None:
        import types

        self.name, self.value, self._module = name, f"{dist}.plugin", module
        self.dist = types.SimpleNamespace(name=dist, version=version)

    def load(self):
        return self._module


def _foreign_plugin(kind: str):
    import types
    from typing import Literal

    from codecfw import hookimpl
    from codecfw.core.config import PluginConfig

    from pydantic import create_model

    cfg = create_model("ForeignConfig", __base__=PluginConfig, kind=(Literal[kind], kind))
    module = types.ModuleType("foreign_plugin")

    @hookimpl
    def register_acoustic_quantizers(register):
        register(kind, cfg, lambda c, ctx: "foreign")

    module.register_acoustic_quantizers = register_acoustic_quantizers
    return module


@pytest.mark.parametrize("attack", ["same kind", "same entry-point name"])
def test_07_a_foreign_plugin_cannot_replace_a_builtin_kind(monkeypatch, attack):
    from codecfw.core.registry import Registry

    from . import toy_codec

    foreign = _foreign_plugin("toy_vq" if attack == "same kind" else "foreign_vq")
    eps = [_FakeEntryPoint("toy_codec", toy_codec, "codecfw", "0.1.0"),
           _FakeEntryPoint("toy_codec" if attack == "same entry-point name" else "evil", foreign, "aaa-evil")]
    monkeypatch.setattr(registry_module.md, "entry_points", lambda group: list(reversed(eps)))
    for key in ("CODECFW_DISABLE_PLUGIN_AUTOLOAD", "CODECFW_LOAD_PLUGINS", "CODECFW_DISABLE_PLUGINS"):
        monkeypatch.delenv(key, raising=False)
    registry = Registry(strict=False)
    registry.load_entry_points()
    assert registry.get("acoustic", "toy_vq").distribution == "codecfw"  # the built-in stays
    assert registry.plugins["toy_codec"].status == "ok" and registry.plugins["toy_codec"].distribution == "codecfw"
    failed = registry.failures()
    assert [p.distribution for p in failed] == ["aaa-evil"]
    assert "codecfw" in failed[0].error and "aaa-evil" in failed[0].error
    assert "foreign_vq" not in registry.kinds("acoustic")


# ---------------------------------------------------------------------------------------------------------------
# 8. YAML alias bombs
# ---------------------------------------------------------------------------------------------------------------

_BOMB = "\n".join(["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
                  + [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)])


def test_08_yaml_alias_bombs_are_refused_quickly_with_a_short_message(tmp_path):
    recipe = tmp_path / "bomb.yaml"
    recipe.write_text("name: bomb\n" + _BOMB + "\n")
    limit = "import resource; resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))\n"
    override = "description={" + _BOMB.replace("\n", ", ") + "}"
    for args in ([str(recipe)], [str(REPO / "recipes" / "xcodec_tiny.yaml"), override]):
        started = time.perf_counter()
        result = run_python(limit + f"from codecfw.core.cli import main; raise SystemExit(main(['validate', *{args!r}]))",
                            timeout=60)
        assert time.perf_counter() - started < 60
        assert result.returncode == 2, result.stderr[-2000:]
        assert len(result.stderr) < 4000 and "alias" in result.stderr.lower()


# ---------------------------------------------------------------------------------------------------------------
# 9 (+ issue 13). resume applies changed optimiser settings; train.steps=N continues the same run
# ---------------------------------------------------------------------------------------------------------------


def test_09_changed_optimiser_settings_are_applied_on_resume_and_recorded(corpus, tmp_path, monkeypatch, caplog):
    from codecfw.core.training.trainer import default_run_dir

    monkeypatch.chdir(tmp_path)
    caplog.set_level("INFO")
    reg = training_registry()
    first = validate_recipe(toy_recipe(corpus, steps=4, checkpoint_every=4, valid_every=100, lr=5e-4), reg)
    more = validate_recipe(toy_recipe(corpus, steps=6, checkpoint_every=4, valid_every=100, lr=2e-3), reg)
    assert default_run_dir(first) == default_run_dir(more)  # the run's identity is not its length or its lr
    other = validate_recipe(toy_recipe(corpus, steps=4, seed=99), reg)
    assert default_run_dir(first) != default_run_dir(other)
    t = Trainer(first, registry=reg, device="cpu", progress=False).setup()
    t.train()
    t.close()
    t = Trainer(more, registry=reg, device="cpu", progress=False).setup()
    assert t.step == 4 and t.run_dir == default_run_dir(first)
    assert "train.lr" in caplog.text and "0.0005 -> 0.002" in caplog.text
    assert t.optimizers["generator"].param_groups[0]["lr"] == pytest.approx(2e-3)
    assert t.optimizers["discriminator"].param_groups[0]["lr"] == pytest.approx(2e-3)  # discriminator_lr: lr
    t.train()
    t.close()
    rows = read_metrics(t.run_dir)
    assert rows[4]["lr/generator"] == pytest.approx(5e-4) and rows[5]["lr/generator"] == pytest.approx(2e-3)
    meta = json.loads((t.run_dir / "checkpoints" / "step-00000006" / "meta.json").read_text())
    assert meta["recipe"]["train"]["lr"] == 2e-3


# ---------------------------------------------------------------------------------------------------------------
# 10. disk full during a checkpoint
# ---------------------------------------------------------------------------------------------------------------


def test_10_a_full_disk_during_a_checkpoint_names_the_file_and_leaves_no_temp_files(corpus, tmp_path, monkeypatch):
    from codecfw.core import checkpoint as ckpt

    # a real short write: RLIMIT_FSIZE makes the kernel refuse the write as a full disk would
    run = tmp_path / "fsize"
    result = run_python(f"""
        import resource, signal, torch
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (32768, 32768))
        from codecfw.core.checkpoint import save_checkpoint
        try:
            save_checkpoint({str(run)!r}, 1, {{"model": torch.nn.Linear(256, 256)}}, {{}}, {{}})
        except OSError as exc:
            print("OSError", exc)
    """)
    assert result.stdout.startswith("OSError"), result.stdout + result.stderr[-2000:]
    assert "step-00000001" in result.stdout and "File too large" in result.stdout
    assert "basic_ios" not in result.stdout and "unexpected pos" not in result.stdout
    assert not no_temp_files(run)

    # ENOSPC in the middle of a training's checkpoint: the message says so, the previous checkpoint stays
    run = tmp_path / "enospc"
    t = trainer(toy_recipe(corpus, steps=4, checkpoint_every=2, valid_every=100), run)
    real = ckpt.save_weights

    def full(value, path, metadata=None):
        if t.step >= 4 and path.name == "discriminator.safetensors":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(value, path, metadata)

    monkeypatch.setattr(ckpt, "save_weights", full)
    with pytest.raises(OSError, match=r"(?i)no space left on device.*step-00000004|step-00000004.*no space left"):
        t.train()
    t.close()
    assert sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.startswith("step-")) == ["step-00000002"]
    assert not no_temp_files(run)


# ---------------------------------------------------------------------------------------------------------------
# 11. odd token headers fail that file, with the key named
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mutate, key", [
    (set_key(sample_rate=0), "sample_rate"),
    (set_key(sample_rate=-16000), "sample_rate"),
    (set_key(num_samples=0), "num_samples"),
    (set_key(num_samples=-5), "num_samples"),
    (set_key(frame_rate=-50.0), "frame_rate"),
    (set_key(codebook_size=0), "codebook_size"),
    (lambda h: h[:-1] + b',"metadata":' + b"[" * 100000 + b"]" * 100000 + b"}", "nested"),
])
def test_11_odd_token_headers_are_refused_naming_the_key(tmp_path, mutate, key):
    path = tmp_path / "odd.cfwt"
    path.write_bytes(rewrite_header(small_token_file().to_bytes(), mutate))
    with pytest.raises(TokenFileCorrupt, match=rf"{path}.*{key}"):
        TokenFile.load(path)


def test_11_decode_and_export_skip_an_odd_file_and_do_the_others(tmp_path, registry, capsys):
    ckpt = save_toy(tmp_path / "run", registry)
    tone(tmp_path / "in" / "a.wav")
    assert main(["encode", str(tmp_path / "in"), "-o", str(tmp_path / "tok"), "-c", str(ckpt), "-q"]) == 0
    good = (tmp_path / "tok" / "a.cfwt").read_bytes()
    for name, mutate in (("zero_rate", set_key(sample_rate=0)), ("empty", set_key(num_samples=0)),
                         ("deep", lambda h: h[:-1] + b',"x":' + b"[" * 100000 + b"]" * 100000 + b"}")):
        (tmp_path / "tok" / f"{name}.cfwt").write_bytes(rewrite_header(good, mutate))
    capsys.readouterr()
    assert main(["decode", str(tmp_path / "tok"), "-o", str(tmp_path / "out"), "-c", str(ckpt), "-q"]) == 1
    err = capsys.readouterr().err
    assert all(f"{n}.cfwt" in err for n in ("zero_rate", "empty", "deep"))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.flac"]
    assert main(["export", str(tmp_path / "tok"), "-o", str(tmp_path / "npy")]) == 1
    assert sorted(p.name for p in (tmp_path / "npy").iterdir()) == ["a.npy"]


# ---------------------------------------------------------------------------------------------------------------
# 12. errors name the file and what was expected, with the documented exit status
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["truncated", "empty", "int8"])
def test_12_damaged_or_foreign_weights_are_a_usage_error_naming_the_file(tmp_path, registry, capsys, damage):
    from safetensors.torch import load_file, save_file

    ckpt = save_toy(tmp_path / "run", registry)
    weights = ckpt / "model.safetensors"
    if damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "empty":
        weights.write_bytes(b"")
    else:
        save_file({k: v.to(torch.int8) for k, v in load_file(str(weights)).items()}, str(weights))
    wav = tone(tmp_path / "a.wav")
    code = main(["encode", str(wav), "-o", str(tmp_path / "a.cfwt"), "-c", str(ckpt), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and str(weights) in err and "Traceback" not in err
    if damage == "int8":
        assert "int8" in err and "float32" in err


def test_12_init_from_a_file_that_is_not_safetensors_is_a_usage_error(corpus, tmp_path, registry, capsys):
    recipe = tmp_path / "toy.yaml"
    recipe.write_text(yaml.safe_dump(toy_recipe(corpus, steps=1)))
    bogus = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(3)}, bogus)
    code = main(["train", str(recipe), "--run-dir", str(tmp_path / "r"), "--init-from", str(bogus), "--device", "cpu",
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and str(bogus) in err and "safetensors" in err


class Payload:  # a class torch.load(weights_only=True) must refuse
    pass


def test_12_a_pickled_state_pt_is_refused_naming_the_file(corpus, tmp_path, registry, capsys):
    run = tmp_path / "run"
    trainer(toy_recipe(corpus, steps=2, checkpoint_every=2, valid_every=100), run).train()
    state = run / "checkpoints" / "step-00000002" / "state.pt"
    torch.save({"step": 2, "payload": Payload()}, state)
    recipe = tmp_path / "toy.yaml"
    recipe.write_text(yaml.safe_dump(toy_recipe(corpus, steps=4, checkpoint_every=2, valid_every=100)))
    code = main(["train", str(recipe), "--run-dir", str(run), "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and str(state) in err and "weights_only=False" not in err and "Traceback" not in err


def test_12_a_pickled_official_checkpoint_is_refused_with_exit_2(tmp_path, capsys):
    from codecfw.core.checkpoint import read_state_dict as read_state

    ckpt = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "payload": Payload()}, ckpt)
    with pytest.raises(ValueError, match=str(ckpt)):
        read_state(ckpt)
    code = main(["import", "xcodec", str(ckpt), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and str(ckpt) in err and "Traceback" not in err


def test_12_garbage_meta_or_best_json_falls_back_to_a_readable_checkpoint(corpus, tmp_path, caplog):
    from codecfw.core.checkpoint import latest_checkpoint, resolve_run_checkpoint

    run = tmp_path / "run"
    trainer(toy_recipe(corpus, steps=4, checkpoint_every=2, valid_every=100, keep_last=3), run).train()
    (run / "checkpoints" / "step-00000004" / "meta.json").write_text("\x00garbage{")
    assert latest_checkpoint(run).name == "step-00000002"
    assert "step-00000004" in caplog.text and "meta.json" in caplog.text
    t = trainer(toy_recipe(corpus, steps=4, checkpoint_every=2, valid_every=100, keep_last=3), run)
    assert t.step == 2
    t.close()
    (run / "checkpoints" / "best.json").write_text("not json")
    caplog.clear()
    assert resolve_run_checkpoint(run).name == "step-00000002"
    assert "best.json" in caplog.text


def test_12_an_absurd_codebook_size_fails_validate_naming_the_key(capsys):
    code = main(["validate", str(REPO / "recipes" / "xcodec_tiny.yaml"), "acoustic.codebook_size=1000000000000"])
    err = capsys.readouterr().err
    assert code == 2 and "acoustic.codebook_size" in err


def test_12_a_pickled_feature_shard_is_refused_naming_it(tmp_path):
    from codecfw.core.clustering.feature_store import FeatureStore, FeatureWriter

    writer = FeatureWriter(tmp_path / "store", dim=4)
    writer.add(np.zeros((3, 4), np.float32))
    writer.close()
    shard = tmp_path / "store" / "shard_000000.npy"
    np.save(shard, np.array([Payload()] * 3, dtype=object).reshape(3, 1), allow_pickle=True)
    with pytest.raises(ValueError, match=str(shard)):
        FeatureStore(tmp_path / "store")


def test_12_binary_recipes_and_manifests_name_the_file(tmp_path, capsys):
    from codecfw.core.data.dataset import ManifestError, read_manifest

    recipe = tmp_path / "binary.yaml"
    recipe.write_bytes(b"\xff\xfe\x00\x01\x89PNG\x00" * 10)
    assert main(["validate", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert str(recipe) in err and "UTF-8" in err and "Traceback" not in err
    manifest = tmp_path / "binary.jsonl"
    manifest.write_bytes(b"\xff\xfe\x00\x01" * 10)
    with pytest.raises(ManifestError, match=rf"{manifest}.*UTF-8"):
        read_manifest(manifest)


def test_12_unreadable_fifo_and_folder_inputs_say_what_they_are(tmp_path, registry, capsys):
    from codecfw.core.data.audio import AudioError, audio_info, probe_audio_file

    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    assert probe_audio_file(str(fifo))["error"] == "unreadable"
    assert "not a regular file" in probe_audio_file(str(fifo))["detail"]
    folder = tmp_path / "folder.wav"
    folder.mkdir()
    assert "not a regular file" in probe_audio_file(str(folder))["detail"]
    with pytest.raises(AudioError, match="not a regular file"):
        audio_info(fifo)  # must not block on opening the FIFO
    if os.geteuid() != 0:  # root reads anything
        locked = tone(tmp_path / "locked.wav")
        locked.chmod(0)
        assert "Permission denied" in probe_audio_file(str(locked))["detail"]
        ckpt = save_toy(tmp_path / "run", registry)
        assert main(["encode", str(locked), "-o", str(tmp_path / "t.cfwt"), "-c", str(ckpt), "-q"]) == 1
        err = capsys.readouterr().err
        assert "Permission denied" in err and str(locked) in err and "System error" not in err


# ---------------------------------------------------------------------------------------------------------------
# 13, 14. recipes: includes stay in the recipe's folder or the shipped recipes; names are not paths
# ---------------------------------------------------------------------------------------------------------------


def test_13_include_outside_the_recipe_folder_is_refused_without_echoing_it(tmp_path):
    secret = tmp_path / "secret.yaml"
    secret.write_text("root: topsecret-hash\ndaemon: another-secret\n")
    (tmp_path / "project" / "recipes").mkdir(parents=True)
    for include in (str(secret), "../../secret.yaml"):
        recipe = tmp_path / "project" / "recipes" / "r.yaml"
        recipe.write_text(f"include: {include}\nname: r\n")
        with pytest.raises(RecipeError) as info:
            load_recipe(recipe)
        assert [e.split(":")[0] for e in info.value.errors] == ["include"], info.value.errors
        assert "outside" in info.value.errors[0]
        assert "topsecret" not in str(info.value) and "daemon" not in str(info.value)
    # shipped ablations include the shipped base: still fine; so does a file next to the recipe
    from codecfw.core.config import load_recipe_data
    assert load_recipe_data(REPO / "recipes" / "ablations" / "sacodec_ema_vq.yaml")["acoustic"]["kind"]
    (tmp_path / "project" / "base.yaml").write_text("name: base\n")
    (tmp_path / "project" / "recipes" / "r.yaml").write_text("include: ../base.yaml\n")
    assert load_recipe_data(tmp_path / "project" / "recipes" / "r.yaml")["name"] == "base"


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", "/abs", "x" * 300])
def test_14_a_recipe_name_must_not_be_a_path(name, capsys):
    from codecfw.core.registry import Registry
    from codecfw.core.training.trainer import default_run_dir

    from . import toy_codec
    reg = Registry(strict=True)
    reg.register_module(toy_codec, name="toy_codec", distribution="codecfw-tests")
    with pytest.raises(RecipeError, match=r"name:"):
        validate_recipe({**TOY_RECIPE, "name": name}, reg)
    assert default_run_dir(validate_recipe({**TOY_RECIPE, "name": "ok-name_1.2"}, reg)).parent == Path("runs")


# ---------------------------------------------------------------------------------------------------------------
# 15. outputs honour the umask
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_15_outputs_honour_the_umask(tmp_path, registry, umask):
    from codecfw.core.data.audio import write_audio
    from codecfw.core.data.stream import AudioSink
    from codecfw.core.atomic import write_json
    from codecfw.core.tokenizer.tokens import export_tokens

    old = os.umask(umask)
    try:
        tf = small_token_file()
        outputs = [tf.save(tmp_path / "t.cfwt"), export_tokens(tf, tmp_path / "t.npy"),
                   export_tokens(tf, tmp_path / "t.pt")]
        write_audio(tmp_path / "a.flac", torch.zeros(1, 100), SR)
        with AudioSink(tmp_path / "b.wav", SR) as sink:
            sink.write(torch.zeros(100))
        write_json(tmp_path / "s.json", {"a": 1})
        ckpt = save_toy(tmp_path / "run", registry)
        outputs += [tmp_path / "a.flac", tmp_path / "b.wav", tmp_path / "s.json", *ckpt.iterdir()]
    finally:
        os.umask(old)
    modes = {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in outputs}
    assert set(modes.values()) == {oct(0o666 & ~umask)}, modes


# ---------------------------------------------------------------------------------------------------------------
# 16. file names that are not UTF-8
# ---------------------------------------------------------------------------------------------------------------


def test_16_audio_with_a_non_utf8_file_name_is_encoded_and_trained_on(tmp_path, registry, capsys):
    from codecfw.core.data.dataset import AudioDataset

    folder = tmp_path / "in"
    name = os.fsdecode(b"caf\xe9.wav")  # latin-1 é: not UTF-8, kept as a surrogate escape
    tone(folder / "plain.wav")
    try:
        os.rename(folder / "plain.wav", folder / name)
    except OSError:
        pytest.skip("this file system refuses non-UTF-8 names")
    ckpt = save_toy(tmp_path / "run", registry)
    assert main(["encode", str(folder), "-o", str(tmp_path / "tok"), "-c", str(ckpt), "-q"]) == 0
    assert os.listdir(os.fsencode(tmp_path / "tok")) == [b"caf\xe9.cfwt"]
    tf = TokenFile.load(tmp_path / "tok" / os.fsdecode(b"caf\xe9.cfwt"))
    assert main(["decode", str(tmp_path / "tok"), "-o", str(tmp_path / "out"), "-c", str(ckpt), "-q"]) == 0
    assert tf.num_samples == SR // 2
    dataset = AudioDataset(folder, SR, 0.1)
    assert len(dataset) == 1 and dataset[0]["waveform"].shape == (1, 1600)


# ---------------------------------------------------------------------------------------------------------------
# issue 13: starting and stopping a training
# ---------------------------------------------------------------------------------------------------------------


def test_13_train_without_data_is_a_one_line_error_and_leaves_no_run_folder(tmp_path, registry, capsys,
                                                                            monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "toy.yaml"
    data = toy_recipe(tmp_path, steps=1)
    data["data"].pop("train")
    recipe.write_text(yaml.safe_dump(data))
    code = main(["train", str(recipe), "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "data.train" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()
    data["data"]["train"] = str(tmp_path / "missing")  # any failed start: no stray folder
    recipe.write_text(yaml.safe_dump(data))
    assert main(["train", str(recipe), "--device", "cpu", "--no-progress"]) == 2
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


def test_13_init_from_the_documented_best_path(corpus, tmp_path):
    run = tmp_path / "first"
    first = trainer(toy_recipe(corpus, steps=4, valid_every=2, checkpoint_every=100), run)
    first.train()
    first.close()
    best = json.loads((run / "checkpoints" / "best.json").read_text())["checkpoint"]
    second = trainer(toy_recipe(corpus, steps=2), tmp_path / "second", init_from=run / "checkpoints" / "best")
    from safetensors.torch import load_file
    saved = load_file(str(run / "checkpoints" / best / "model.safetensors"))
    for k, v in second.codec.state_dict().items():
        if k in saved:
            assert torch.equal(saved[k], v), k
    second.close()


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_13_ctrl_c_or_sigterm_saves_a_checkpoint_before_exiting(corpus, tmp_path, sig, code):
    recipe = tmp_path / "toy.yaml"
    recipe.write_text(yaml.safe_dump(toy_recipe(corpus, steps=100000, checkpoint_every=100000, valid_every=100000,
                                                log_every=1)))
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "codecfw.core.cli", "train", str(recipe), "--run-dir", str(run), "--device", "cpu",
           "--no-progress", "--plugin", "codecfw.tests.toy_codec", "--plugin", "codecfw.tests.toy_training"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CODECFW_DISABLE_PLUGIN_AUTOLOAD": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            metrics = run / "metrics.jsonl"
            if metrics.is_file() and len(metrics.read_text().splitlines()) >= 3:
                break
            time.sleep(0.2)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err[-3000:]
    saved = sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.startswith("step-"))
    assert len(saved) == 1 and int(saved[0].split("-")[1]) >= 3
    assert "checkpoint" in err and saved[0] in err
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == int(saved[0].split("-")[1])  # every step up to the checkpoint is logged
