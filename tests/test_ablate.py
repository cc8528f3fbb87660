"""``codecfw ablate``: variant parsing, one comparison table + plots over tiny variants, a failing variant, and the
training path through the one training loop."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml

from codecfw.core.evaluation.ablate import AblationError, parse_variants, recipe_diff, run_ablation, split_overrides

from .toy_codec import TOY_RECIPE
from .training_support import make_corpus, toy_recipe


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("corpus"), n_train=4, n_valid=2, seconds=0.5, corrupt=False)


def test_variant_specs(tmp_path):
    assert split_overrides("a.b=1,c=[8,5,4],d.e=x") == ["a.b=1", "c=[8,5,4]", "d.e=x"]
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(TOY_RECIPE))
    variant = tmp_path / "wide.yaml"
    variant.write_text("include: base.yaml\nacoustic: {dim: 16}\n")
    parsed = parse_variants(str(base), [str(variant), "k64:acoustic.codebook_size=64", "semantic.hop=320"])
    assert [(v.name, v.overrides) for v in parsed] == [
        ("base", []), ("wide", []), ("k64", ["acoustic.codebook_size=64"]), ("hop=320", ["semantic.hop=320"])]
    assert parsed[1].recipe == str(variant)
    with pytest.raises(AblationError, match="unique"):
        parse_variants(str(base), ["x:a=1", "x:a=2"])
    with pytest.raises(AblationError, match="name:key=value"):
        parse_variants(str(base), ["just-a-name"])
    with pytest.raises(AblationError, match="no such recipe"):
        parse_variants(str(base), ["missing.yaml"])
    assert recipe_diff({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}, "d": [1, 2]}) == ["a.c=3", "d=[1, 2]"]


def test_ablate_two_untrained_variants_writes_table_and_plots(eval_registry, corpus, tmp_path, monkeypatch):
    from codecfw.core.cli import main

    base = tmp_path / "toy.yaml"
    base.write_text(yaml.safe_dump({**TOY_RECIPE, "data": {"valid": str(corpus / "valid")}}))
    wide = tmp_path / "wide.yaml"
    wide.write_text("include: toy.yaml\nacoustic: {dim: 16}\n")
    monkeypatch.setattr("codecfw.core.registry._REGISTRY", eval_registry)
    out = tmp_path / "out"
    code = main(["ablate", str(base), "big_codebooks:acoustic.codebook_size=64,semantic.codebook_size=256", str(wide),
                 "broken:acoustic.no_such_key=1", "-o", str(out), "--metrics", "mel", "l1", "codebook", "bitrate",
                 "--no-progress"])
    assert code == 1  # the broken row failed: the command says so, and the table keeps the rows that ran
    with open(out / "comparison.csv") as f:
        rows = {r["variant"]: r for r in csv.DictReader(f)}
    assert list(rows) == ["base", "big_codebooks", "wide", "broken"]
    # bitrate follows the streams: 100 Hz x (log2 16 + log2 32) = 0.9 kbps; 100 Hz x (8 + 6) = 1.4 kbps
    assert float(rows["base"]["bitrate_kbps"]) == pytest.approx(0.9)
    assert float(rows["big_codebooks"]["bitrate_kbps"]) == pytest.approx(1.4)
    assert float(rows["wide"]["bitrate_kbps"]) == pytest.approx(0.9) and float(rows["wide"]["token_rate"]) == 200
    assert float(rows["wide"]["params_M"]) > float(rows["base"]["params_M"])
    assert float(rows["base"]["mel"]) > 0 and rows["broken"]["mel"] == "nan"
    assert rows["big_codebooks"]["changes"] == "acoustic.codebook_size=64; semantic.codebook_size=256"
    assert rows["wide"]["changes"] == "acoustic.dim=16"
    header = (out / "comparison.md").read_text().splitlines()[0]
    assert header.startswith("| variant | changes | bitrate_kbps | token_rate | params_M | mel ↓")
    assert (out / "plots" / "comparison.png").stat().st_size > 5000
    saved = json.loads((out / "ablation.json").read_text())
    broken = next(v for v in saved["variants"] if v["name"] == "broken")
    assert "no_such_key" in broken["error"]
    assert (out / "variants" / "wide" / "eval" / "report.md").is_file()
    assert yaml.safe_load((out / "variants" / "big_codebooks" / "recipe.yaml").read_text())["acoustic"][
        "codebook_size"] == 64
    report = (out / "report.md").read_text()
    assert "![comparison](plots/comparison.png)" in report and "**failed**" in report


def test_ablate_trains_each_variant_through_the_loop(eval_registry, corpus, tmp_path):
    base = tmp_path / "toy.yaml"
    base.write_text(yaml.safe_dump(toy_recipe(corpus, steps=2, valid_every=2, checkpoint_every=2, log_every=1)))
    variants = parse_variants(str(base), ["lr:train.lr=0.01"])
    result = run_ablation(str(base), variants, tmp_path / "out", train=True, steps=2, metrics=["l1", "bitrate"],
                          registry=eval_registry, progress=False, max_seconds=0.25)
    assert [r["variant"] for r in result["rows"]] == ["base", "lr"]
    for record in result["variants"]:
        assert "error" not in record, record.get("error")
        assert record["train"]["step"] == 2
    saved = json.loads((tmp_path / "out" / "variants" / "lr" / "eval" / "results.json").read_text())
    system = saved["systems"]["lr"]
    assert system["step"] == 2 and set(system["checkpoint_hash"]) >= {"model.safetensors"}
    assert system["recipe"]["train"]["lr"] == 0.01
    assert all(r["l1"] > 0 for r in result["rows"])
