"""Recipe validation: every error at once with YAML paths, includes, overrides, schema."""

from __future__ import annotations

import json
import types
from typing import Literal

import pytest
import yaml
from pydantic import Field

from codecfw import hookimpl
from codecfw.core import registry as registry_mod
from codecfw.core.cli import main
from codecfw.core.config import (PluginConfig, RecipeError, apply_overrides, build_recipe_model, load_recipe,
                                 validate_recipe)

from . import toy_codec


class OtherVQConfig(PluginConfig):
    kind: Literal["other_vq"] = "other_vq"
    codebook_size: int = Field(1024, gt=0)


def _other_plugin():
    module = types.ModuleType("other")

    @hookimpl
    def register_acoustic_quantizers(register):
        register("other_vq", OtherVQConfig, lambda cfg, ctx: None)

    module.register_acoustic_quantizers = register_acoustic_quantizers
    return module


@pytest.fixture
def registry(toy_registry):
    toy_registry.register_module(_other_plugin(), name="other", distribution="other-dist")
    return toy_registry


@pytest.fixture
def cli_registry(registry):
    registry_mod.set_registry(registry)
    yield registry
    registry_mod.set_registry(None)


def write(path, data):
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def test_every_error_reported_at_once_with_yaml_paths(registry):
    data = {**toy_codec.TOY_RECIPE,
            "acoustic": {"kind": "other_vq", "codebook_size": "big"},
            "semantic": {"kind": "toy_semantic", "hop": 0, "typo": 1},
            "data": {"batch_size": "eight"},
            "train": {"lr": -1, "precision": "fp8"}}
    with pytest.raises(RecipeError) as info:
        validate_recipe(data, registry, "r.yaml")
    errors = info.value.errors
    assert "acoustic.codebook_size: expected an integer > 0, got 'big'" in errors
    assert "semantic.hop: expected an integer > 0, got 0" in errors
    assert any(e.startswith("semantic.typo: unknown key; allowed keys: ") and "codebook_size" in e for e in errors)
    assert "data.batch_size: expected an integer > 0, got 'eight'" in errors
    assert "train.lr: expected a number > 0, got -1" in errors
    assert any(e.startswith("train.precision: expected one of 'fp32', 'bf16', 'fp16'") for e in errors)
    assert len(errors) == 6


def test_unknown_kind_lists_known_kinds(registry):
    data = {**toy_codec.TOY_RECIPE, "acoustic": {"kind": "nope"}, "decoder": {"kind": "nada"}}
    with pytest.raises(RecipeError) as info:
        validate_recipe(data, registry)
    assert "acoustic.kind: unknown kind 'nope'; known kinds: other_vq, toy_vq" in info.value.errors
    assert any(e.startswith("decoder.kind: unknown kind 'nada'; known kinds: toy_decoder") for e in info.value.errors)


def test_missing_slot_and_missing_kind(registry):
    data = {"semantic": {"hop": 160}, "acoustic": {"kind": "toy_vq"}}
    with pytest.raises(RecipeError) as info:
        validate_recipe(data, registry)
    assert "decoder: required key is missing" in info.value.errors
    assert any(e.startswith("semantic.kind:") for e in info.value.errors)


def test_include_and_ablation_file(registry, tmp_path):
    base = write(tmp_path / "base.yaml", {**toy_codec.TOY_RECIPE, "acoustic": {"kind": "toy_vq", "codebook_size": 64},
                                          "train": {"steps": 100, "lr": 0.001}})
    (tmp_path / "ablations").mkdir()
    small = write(tmp_path / "ablations" / "small.yaml", "include: ../base.yaml\nacoustic:\n  codebook_size: 8\n")
    swap = write(tmp_path / "ablations" / "swap.yaml", "include: ../base.yaml\nacoustic:\n  kind: other_vq\n")
    r = load_recipe(small, registry=registry)
    assert r.acoustic.codebook_size == 8 and r.train.steps == 100 and r.train.lr == 0.001
    # changing the kind replaces the slot: the old kind's keys are not inherited
    r = load_recipe(swap, registry=registry)
    assert r.acoustic.kind == "other_vq" and r.acoustic.codebook_size == 1024
    assert load_recipe(base, registry=registry).config_hash() != load_recipe(small, registry=registry).config_hash()


def test_include_cycle_and_missing_include(registry, tmp_path):
    write(tmp_path / "a.yaml", "include: b.yaml\n")
    write(tmp_path / "b.yaml", "include: a.yaml\n")
    with pytest.raises(RecipeError, match="cycle"):
        load_recipe(tmp_path / "a.yaml", registry=registry)
    write(tmp_path / "c.yaml", "include: nowhere.yaml\n")
    with pytest.raises(RecipeError, match="nowhere.yaml"):
        load_recipe(tmp_path / "c.yaml", registry=registry)


def test_overrides(registry, tmp_path):
    path = write(tmp_path / "r.yaml", {**toy_codec.TOY_RECIPE, "losses": []})
    r = load_recipe(path, ["acoustic.kind=other_vq", "acoustic.codebook_size=128", "train.grad_clip=1.5",
                           "data.train=x.jsonl"], registry=registry)
    assert r.acoustic.kind == "other_vq" and r.acoustic.codebook_size == 128
    assert r.train.grad_clip == 1.5 and r.data.train == "x.jsonl"
    assert apply_overrides({"losses": [{"weight": 1}]}, ["losses.0.weight=2"]) == {"losses": [{"weight": 2}]}
    # swapping a kind by override drops the old kind's keys; later overrides configure the new kind
    swapped = apply_overrides({"acoustic": {"kind": "a", "only_a": 1}}, ["acoustic.kind=b", "acoustic.size=3"])
    assert swapped == {"acoustic": {"kind": "b", "size": 3}}
    with pytest.raises(RecipeError, match="expected key.sub=value"):
        apply_overrides({}, ["no_equals_sign"])
    with pytest.raises(RecipeError, match="index 3 out of range"):
        apply_overrides({"losses": []}, ["losses.3.weight=2"])


def test_cli_validate_exits_2_with_all_errors(cli_registry, tmp_path, capsys):
    good = write(tmp_path / "good.yaml", toy_codec.TOY_RECIPE)
    bad = write(tmp_path / "bad.yaml", {**toy_codec.TOY_RECIPE, "acoustic": {"kind": "toy_vq", "codebook_size": "big"},
                                        "train": {"steps": 0}})
    assert main(["validate", str(good)]) == 0
    assert main(["validate", "--build", str(good)]) == 0
    out = capsys.readouterr().out
    assert "2 streams, 200 tokens/s, 0.9 kbps" in out
    assert main(["validate", str(good), str(bad)]) == 2
    err = capsys.readouterr().err
    assert "acoustic.codebook_size: expected an integer > 1, got 'big'" in err
    assert "train.steps: expected an integer > 0, got 0" in err
    assert main(["validate", str(good), "acoustic.codebook_size=0"]) == 2
    assert "acoustic.codebook_size" in capsys.readouterr().err
    assert main(["validate", str(good), "--override", "acoustic.codebook_size=-1"]) == 2
    assert "acoustic.codebook_size: expected an integer > 1, got -1" in capsys.readouterr().err
    # overrides after an option are still overrides (argparse alone would reject them as unrecognized)
    assert main(["validate", str(good), "--build", "acoustic.codebook_size=-1"]) == 2
    assert "acoustic.codebook_size: expected an integer > 1, got -1" in capsys.readouterr().err
    assert main(["train", str(good), "--device", "cpu", "acoustic.codebook_size=-1"]) == 2
    assert "acoustic.codebook_size: expected an integer > 1, got -1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["validate", str(good), "--build", "--no-such-option"])
    assert "unrecognized arguments: --no-such-option" in capsys.readouterr().err
    assert main(["validate", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err


def test_schema_includes_every_plugin_config(cli_registry, capsys):
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    text = json.dumps(schema)
    for name in ("ToySemanticConfig", "ToyAcousticConfig", "OtherVQConfig", "ToyDecoderConfig"):
        assert name in schema["$defs"], name
    assert schema["properties"]["acoustic"]["discriminator"]["propertyName"] == "kind"
    assert "codebook_size" in text


def test_recipe_model_follows_registered_kinds(registry):
    model = build_recipe_model(registry)
    recipe = model.model_validate({**toy_codec.TOY_RECIPE, "acoustic": {"kind": "other_vq", "codebook_size": 7}})
    assert isinstance(recipe.acoustic, OtherVQConfig)
