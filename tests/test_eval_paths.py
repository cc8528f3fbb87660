"""``codecfw eval`` measures what users ship: a codec runs through ``AudioTokenizer`` encode → ``.cfwt`` token file
on disk → decode with its chunk policy (the same result as ``codecfw encode`` + ``codecfw decode``), and any
external codec given as a shell command lands in the same table."""

from __future__ import annotations

import json
import shlex
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from codecfw.core.evaluation.anchors import CommandSystem
from codecfw.core.config import validate_recipe
from codecfw.core.evaluation.evaluate import evaluate, load_clips, load_system
from codecfw.core.metric import build_metrics, load_metric_configs

from .toy_codec import TOY_RECIPE

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "eval"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def speech_corpus(tmp_path) -> Path:
    speech, sr = sf.read(FIXTURES / "speech_kal.flac", dtype="float32")
    sf.write(tmp_path / "speech.flac", speech, sr)
    (tmp_path / "manifest.jsonl").write_text(json.dumps({"path": "speech.flac", "domain": "speech"}) + "\n")
    return tmp_path / "manifest.jsonl"


@pytest.fixture
def toy_checkpoint(eval_registry, tmp_path) -> Path:
    from codecfw.core.checkpoint import save_checkpoint
    from codecfw.core.codec import build_codec

    torch.manual_seed(0)
    recipe = validate_recipe(TOY_RECIPE, eval_registry)
    codec = build_codec(recipe, eval_registry)
    return save_checkpoint(tmp_path / "run", 3, {"model": codec}, {"recipe": recipe.model_dump(mode="json")}, {})


def test_eval_reconstruction_equals_codecfw_encode_then_decode(eval_registry, speech_corpus, toy_checkpoint,
                                                               tmp_path, monkeypatch):
    from codecfw.core.cli import main
    from codecfw.core.tokenizer.tokens import TokenFile

    monkeypatch.setattr("codecfw.core.registry._REGISTRY", eval_registry)
    clip = speech_corpus.parent / "speech.flac"
    tokens, decoded = tmp_path / "speech.cfwt", tmp_path / "decoded.wav"
    # what a user ships: 0.5 s windows, so the 2.7 s clip is encoded and decoded in chunks
    assert main(["encode", str(clip), "-o", str(tokens), "-c", str(toy_checkpoint), "--chunk-seconds", "0.5",
                 "--device", "cpu", "-q"]) == 0
    assert main(["decode", str(tokens), "-o", str(decoded), "-c", str(toy_checkpoint), "--chunk-seconds", "0.5",
                 "--format", "wav", "--subtype", "FLOAT", "--device", "cpu", "-q"]) == 0
    shipped, _ = sf.read(decoded, dtype="float32")

    saved: list[Path] = []
    original_save = TokenFile.save
    monkeypatch.setattr(TokenFile, "save", lambda self, path: saved.append(Path(path)) or original_save(self, path))
    system = load_system(str(toy_checkpoint), eval_registry, chunk_seconds=0.5)
    assert system.tokenizer.policy.window < 2.7 * 16000  # chunked for real
    metrics = build_metrics(load_metric_configs(["l1", "bitrate"], eval_registry), eval_registry)
    result = evaluate([system], load_clips(speech_corpus), metrics, tmp_path / "out", progress=False,
                      report_clips=["speech"])
    assert len(saved) == 1 and saved[0].suffix == ".cfwt"  # the tokens went through a token file
    evaluated = result.examples["speech"]["toy"].numpy()
    assert evaluated.shape == shipped.shape
    np.testing.assert_allclose(evaluated, shipped, atol=1e-6)
    shipped_tokens = TokenFile.load(tokens)
    assert result.rows[0]["token_rate_measured"] == pytest.approx(
        sum(len(v) for v in shipped_tokens.tokens.values()) / shipped_tokens.duration)
    route = result.settings["systems"]["toy"]["tokenizer"]
    assert route["chunked"] and route["chunk_policy"]["window"] == system.tokenizer.policy.window
    assert route["token_payload_bytes_total"] == shipped_tokens.payload_bytes()
    assert 0 < route["token_file_bytes_total"] - route["token_payload_bytes_total"] < tokens.stat().st_size  # header


def _py(code: str) -> str:
    return f"{shlex.quote(sys.executable)} -c {shlex.quote(code)}"


def test_external_command_in_the_same_table(eval_registry, speech_corpus, tmp_path, monkeypatch):
    from codecfw.core.cli import main

    monkeypatch.setattr("codecfw.core.registry._REGISTRY", eval_registry)
    copy = "import shutil, sys; shutil.copy(sys.argv[1], sys.argv[2])"
    lossless = f"{_py(copy)} {{in}} {{bits}} && {_py(copy)} {{bits}} {{out}}"
    # a lossy "codec": keep every other sample as 8-bit PCM at half the rate, then back (a python one-liner each way)
    enc = ("import sys, soundfile as sf; x, r = sf.read(sys.argv[1]); "
           "sf.write(sys.argv[2], x[::2], r // 2, format='WAV', subtype='PCM_U8')")
    dec = "import sys, soundfile as sf; x, r = sf.read(sys.argv[1]); sf.write(sys.argv[2], x, r, format='WAV')"
    lossy = f"{_py(enc)} {{in}} {{bits}} && {_py(dec)} {{bits}} {{out}}"
    out = tmp_path / "out"
    code = main(["eval", "identity", "--data", str(speech_corpus), "-o", str(out), "--no-progress",
                 "--metrics", "l1", "si_sdr", "bitrate", "--command", lossless, "--command-name", "copy",
                 "--command", lossy, "--command-name", "halfrate-u8"])
    assert code == 0
    saved = json.loads((out / "results.json").read_text())
    rows = {r["system"]: r for r in saved["summary"] if r["domain"] == "all"}
    assert set(rows) == {"identity", "copy", "halfrate-u8"}
    assert rows["copy"]["l1"] < 2e-5 and rows["copy"]["si_sdr"] > 80  # 16-bit PCM round trip only
    assert rows["halfrate-u8"]["l1"] > 100 * rows["copy"]["l1"] and rows["halfrate-u8"]["si_sdr"] < 40
    seconds = rows["copy"]["seconds"]
    wav_bytes = lambda samples, width: 44 + samples * width  # noqa: E731 - canonical WAV header + PCM
    n = round(seconds * 16000)
    assert rows["copy"]["bitrate_kbps_measured"] == pytest.approx(wav_bytes(n, 2) * 8 / seconds / 1000, rel=1e-3)
    assert rows["halfrate-u8"]["bitrate_kbps_measured"] == pytest.approx(64.0, rel=0.01)  # 8 kHz x 8 bit
    assert saved["systems"]["copy"]["command"] == lossless and saved["systems"]["copy"]["kind"] == "command"


def test_external_command_with_sox(eval_registry, speech_corpus, tmp_path):
    if shutil.which("sox") is None:
        pytest.skip("sox not on PATH")
    system = CommandSystem("sox {in} -t wav -r 8000 {bits} && sox -t wav {bits} -r {rate} {out}", "sox-8k")
    metrics = build_metrics(load_metric_configs(["l1", "bitrate"], eval_registry), eval_registry)
    result = evaluate([system], load_clips(speech_corpus), metrics, progress=False)
    row = result.overall("sox-8k")
    assert 0 < row["l1"] < 0.01 and row["bitrate_kbps_measured"] == pytest.approx(128.0, rel=0.01)


def test_bad_commands(eval_registry, speech_corpus, tmp_path, monkeypatch):
    from codecfw.core.cli import main

    with pytest.raises(ValueError, match=r"missing \{out\}"):
        CommandSystem("cp {in} {bits}")
    with pytest.raises(ValueError, match=r"unknown placeholder\(s\) \{input\}"):
        CommandSystem("cp {input} {out}")
    monkeypatch.setattr("codecfw.core.registry._REGISTRY", eval_registry)
    assert main(["eval", "--data", str(speech_corpus), "-o", str(tmp_path / "o"), "--command", "cp {in} x"]) == 2
    failing = CommandSystem("echo broken >&2; exit 3 # {in} {out}", "broken")
    metrics = build_metrics(load_metric_configs(["l1"], eval_registry), eval_registry)
    result = evaluate([failing], load_clips(speech_corpus), metrics, progress=False)
    error = result.errors["broken"]["process"]
    assert error["count"] == 1 and "exited 3" in error["error"] and "broken" in error["error"]
