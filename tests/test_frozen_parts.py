"""Frozen pretrained parts (issue 13): `codecfw train` and `codecfw cluster` refuse to start while a frozen part that
needs pretrained weights is random, name each part and where its weights come from, and start when the recipe opts
in (`allow_random_frozen`), when the weights are given, or when a checkpoint holds them (resume, --init-from)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from codecfw.core.checkpoint import save_checkpoint
from codecfw.core.cli import main
from codecfw.core.codec import RandomFrozenParts, build_codec, check_pretrained_parts
from codecfw.core.commands.train import check_fresh_run
from codecfw.core.config import load_recipe
from codecfw.core.types import FrozenPart

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes"
DEMO = ROOT / "data" / "demo" / "train.jsonl"
REFUSE = "allow_random_frozen=false"  # the tiny recipes opt in; these tests take the opt-in away again


def _train(tmp_path: Path, recipe: str, *overrides: str) -> int:
    return main(["train", str(RECIPES / recipe), *overrides, "train.steps=1", "--run-dir", str(tmp_path / "run"),
                 "--no-progress"])


def test_train_refuses_random_frozen_parts_naming_each_and_its_source(tmp_path, capsys):
    assert _train(tmp_path, "semanticodec_tiny.yaml", REFUSE) == 2
    err = capsys.readouterr().err
    lines = [line.strip() for line in err.splitlines() if line.startswith("  ")]
    assert [line.split(":")[0] for line in lines] == ["semantic.audiomae", "semantic.codebooks", "decoder.vae",
                                                      "decoder.vocoder"]
    assert "AudioMAE encoder" in lines[0] and "semantic.audiomae_weights" in lines[0] and "encoder.ckpt" in lines[0]
    assert "codecfw cluster" in lines[1] and "decoder.weights" in lines[2] and "decoder.ckpt" in lines[3]
    assert "codecfw import semanticodec" in lines[0] and "allow_random_frozen: true" in err
    assert not (tmp_path / "run").exists()  # refused before anything was created


def test_train_per_part_opt_in_refuses_only_the_rest(tmp_path, capsys):
    assert _train(tmp_path, "semanticodec_tiny.yaml", "allow_random_frozen=[semantic.audiomae, decoder.vae]") == 2
    lines = [line.strip() for line in capsys.readouterr().err.splitlines() if line.startswith("  ")]
    assert [line.split(":")[0] for line in lines] == ["semantic.codebooks", "decoder.vocoder"]
    assert _train(tmp_path, "semanticodec_tiny.yaml", "allow_random_frozen=[semantic.audiomea]") == 2
    assert "semantic.audiomea names no frozen pretrained part" in capsys.readouterr().err  # a typo opts in nothing


@pytest.mark.parametrize("recipe, parts", [("xcodec_tiny.yaml", ["semantic.teacher"]),
                                           ("sacodec_tiny.yaml", ["semantic.codebook", "semantic.teacher"])])
def test_random_teachers_and_anchor_codebooks_are_frozen_parts(tmp_path, capsys, recipe, parts):
    assert _train(tmp_path, recipe, REFUSE) == 2
    lines = [line.strip() for line in capsys.readouterr().err.splitlines() if line.startswith("  ")]
    assert [line.split(":")[0] for line in lines] == parts
    assert "teacher_config" in lines[-1]  # what made the teacher random, and what to do instead


def test_loaded_weights_and_checkpoints_never_trigger_the_refusal(tmp_path):
    recipe = load_recipe(RECIPES / "semanticodec_tiny.yaml", [REFUSE])
    torch.manual_seed(0)
    codec = build_codec(recipe)
    # AudioMAE weights given as a local file: that part counts as loaded.
    weights = tmp_path / "audiomae.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in codec.semantic.audiomae.state_dict().items()}, str(weights))
    loaded = load_recipe(RECIPES / "semanticodec_tiny.yaml", [REFUSE, f"semantic.audiomae_weights={weights}"])
    parts = {p.key: p.loaded for p in build_codec(loaded).pretrained_parts()}
    assert parts == {"semantic.audiomae": True, "semantic.codebooks": False, "decoder.vae": False,
                     "decoder.vocoder": False}
    with pytest.raises(RandomFrozenParts) as refused:
        check_fresh_run(loaded, None, tmp_path / "fresh", None, "train")
    assert [p.key for p in refused.value.parts] == ["semantic.codebooks", "decoder.vae", "decoder.vocoder"]
    # --init-from, or a run directory holding a checkpoint (resume): the checkpoint holds the frozen weights.
    check_fresh_run(recipe, None, tmp_path / "fresh", tmp_path / "some-checkpoint", "train")
    run = tmp_path / "resumed"
    save_checkpoint(run, 1, {"model": codec}, {"recipe": recipe.model_dump(mode="json")}, {})
    check_fresh_run(recipe, None, run, None, "train")
    assert not (tmp_path / "fresh").exists()


def test_opt_in_is_no_part_of_the_codec_identity():
    plain = load_recipe(RECIPES / "semanticodec_tiny.yaml", [REFUSE])
    opted = load_recipe(RECIPES / "semanticodec_tiny.yaml")
    assert opted.allow_random_frozen is True and plain.allow_random_frozen is False
    assert plain.config_hash() == opted.config_hash()  # token files and runs do not depend on the permission
    assert "allow_random_frozen" not in opted.model_dump()


def test_check_pretrained_parts_rules():
    parts = [FrozenPart("semantic.a", "part a", False, "get a"), FrozenPart("decoder.b", "part b", True, "get b")]
    check_pretrained_parts(parts, True, "x")
    check_pretrained_parts(parts, ["semantic.a"], "x")
    with pytest.raises(RandomFrozenParts, match=r"random:\n  semantic.a: part a; get a\nGive"):
        check_pretrained_parts(parts, False, "x")
    check_pretrained_parts(parts[:1], ["semantic.a", "decoder.z"], "x", slots=("semantic",))  # other slots: unchecked


def test_cluster_refuses_a_random_feature_extractor_but_not_a_missing_codebook(tmp_path, capsys):
    base = ["cluster", str(RECIPES / "semanticodec_tiny.yaml"), "--data", str(DEMO), "--out", str(tmp_path / "o"),
            "--sizes", "4", "--no-progress"]
    assert main(base[:2] + [REFUSE] + base[2:]) == 2
    err = capsys.readouterr().err
    lines = [line.strip() for line in err.splitlines() if line.startswith("  ")]
    assert [line.split(":")[0] for line in lines] == ["semantic.audiomae"]  # the codebooks are what it makes
    assert "codecfw cluster" in err and not (tmp_path / "o" / "kmeans_4.safetensors").exists()
    assert main(base[:2] + ["allow_random_frozen=[semantic.audiomae]"] + base[2:]) == 0
    assert (tmp_path / "o" / "kmeans_4.safetensors").is_file()


def test_validate_build_notes_random_frozen_parts(capsys):
    assert main(["validate", "--build", str(RECIPES / "semanticodec_tiny.yaml"), REFUSE]) == 0  # valid all the same
    err = capsys.readouterr().err
    assert "note: frozen parts that need pretrained weights are random: semantic.audiomae, semantic.codebooks, " \
           "decoder.vae, decoder.vocoder" in err
    assert main(["validate", "--build", str(RECIPES / "semanticodec_tiny.yaml")]) == 0
    assert "note:" not in capsys.readouterr().err  # the tiny recipe opts in
