"""Plugin discovery: isolation of broken plugins, duplicate kinds, strict mode and the environment switches."""

from __future__ import annotations

import importlib.metadata as md
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from codecfw import hookimpl
from codecfw.core import registry as registry_mod
from codecfw.core.config import PluginConfig
from codecfw.core.registry import PluginError, Registry

from . import toy_codec

PACKAGES = Path(__file__).parent / "plugin_packages"


def _plugin_module(name: str, kind: str, raise_in_hook: bool = False) -> types.ModuleType:
    module = types.ModuleType(name)
    config = type(f"{kind}Config", (PluginConfig,), {"__annotations__": {"kind": str}, "kind": kind})
    # a Literal-free config still needs `kind` defaulting to its name
    config.model_fields["kind"].default = kind
    config.model_rebuild(force=True)

    @hookimpl
    def register_acoustic_quantizers(register):
        if raise_in_hook:
            raise RuntimeError("boom in hook")
        register(kind, config, lambda cfg, ctx: None)

    module.register_acoustic_quantizers = register_acoustic_quantizers
    return module


def _fake_entry_points(monkeypatch, mapping: dict[str, str]) -> None:
    eps = [md.EntryPoint(name=n, value=v, group=registry_mod.ENTRY_POINT_GROUP) for n, v in mapping.items()]
    monkeypatch.setattr(registry_mod.md, "entry_points", lambda group: eps if group == registry_mod.ENTRY_POINT_GROUP else [])


def test_hand_registered_plugin_kinds_are_listed(toy_registry):
    info = toy_registry.plugins["toy_codec"]
    assert info.status == "ok"
    assert info.kinds["semantic"] == ["toy_semantic"] and info.kinds["acoustic"] == ["toy_vq"]
    assert "toy_decoder" in info.kinds["decoder"]
    assert toy_registry.get("acoustic", "toy_vq").distribution == "codecfw-tests"


def test_unknown_kind_lists_known_kinds(toy_registry):
    with pytest.raises(KeyError, match="known kinds: toy_vq"):
        toy_registry.get("acoustic", "nope")


def test_raising_hook_is_recorded_and_others_keep_working():
    registry = Registry(strict=False)
    registry.register_module(_plugin_module("bad", "bad_vq", raise_in_hook=True), name="bad", distribution="bad-dist")
    registry.register_module(toy_codec, name="toy", distribution="codecfw-tests")
    assert registry.plugins["bad"].status == "failed"
    assert "boom in hook" in registry.plugins["bad"].error
    assert "bad_vq" not in registry.kinds("acoustic")
    assert set(registry.kinds("acoustic")) == {"toy_vq"}


def test_duplicate_kind_names_both_distributions():
    registry = Registry(strict=False)
    registry.register_module(_plugin_module("a", "same_vq"), name="a", distribution="dist-one", version="1.0")
    registry.register_module(_plugin_module("b", "same_vq"), name="b", distribution="dist-two", version="2.0")
    error = registry.plugins["b"].error
    assert registry.plugins["b"].status == "failed"
    assert "dist-one" in error and "dist-two" in error and "same_vq" in error
    assert registry.get("acoustic", "same_vq").distribution == "dist-one"


def test_strict_mode_turns_failures_into_errors():
    registry = Registry(strict=True)
    with pytest.raises(PluginError, match="boom in hook"):
        registry.register_module(_plugin_module("bad", "bad_vq", raise_in_hook=True), name="bad")


def test_config_without_kind_literal_is_rejected():
    module = types.ModuleType("nokind")

    class NoKindConfig(PluginConfig):
        kind: str = "other"

    @hookimpl
    def register_decoders(register):
        register("mismatch", NoKindConfig)

    module.register_decoders = register_decoders
    registry = Registry(strict=False)
    registry.register_module(module, name="nokind")
    assert "needs the field kind" in registry.plugins["nokind"].error


def test_entry_point_import_failure_is_isolated(monkeypatch):
    sys.modules["codecfw_tests_good_plugin"] = toy_codec
    _fake_entry_points(monkeypatch, {"broken": "codecfw_module_that_is_missing", "good": "codecfw_tests_good_plugin"})
    monkeypatch.delenv("CODECFW_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    registry = Registry(strict=False)
    registry.load_entry_points()
    assert registry.plugins["broken"].status == "failed"
    assert "codecfw_module_that_is_missing" in registry.plugins["broken"].error
    assert registry.plugins["good"].status == "ok"
    assert "toy_vq" in registry.kinds("acoustic")
    with pytest.raises(PluginError, match="codecfw_module_that_is_missing"):
        Registry(strict=True).load_entry_points()


@pytest.mark.parametrize("env, expected", [
    ({"CODECFW_DISABLE_PLUGIN_AUTOLOAD": "1"}, {}),
    ({"CODECFW_LOAD_PLUGINS": "good"}, {"good": "ok", "other": "blocked"}),
    ({"CODECFW_DISABLE_PLUGINS": "good"}, {"good": "blocked", "other": "ok"}),
])
def test_environment_switches(monkeypatch, env, expected):
    sys.modules["codecfw_tests_good_plugin"] = toy_codec
    sys.modules["codecfw_tests_other_plugin"] = _plugin_module("other", "other_vq")
    _fake_entry_points(monkeypatch, {"good": "codecfw_tests_good_plugin", "other": "codecfw_tests_other_plugin"})
    for key in ("CODECFW_DISABLE_PLUGIN_AUTOLOAD", "CODECFW_LOAD_PLUGINS", "CODECFW_DISABLE_PLUGINS"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    registry = Registry(strict=False)
    registry.load_entry_points()
    assert {name: info.status for name, info in registry.plugins.items()} == expected
    assert ("toy_vq" in registry.kinds("acoustic")) == (expected.get("good") == "ok")


def _cli(*args: str, env_extra: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("CODECFW_")}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "codecfw.core.cli", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


def test_builtin_plugins_load_through_entry_points():
    result = _cli("plugins", "--json")
    assert result.returncode == 0, result.stderr
    plugins = json.loads(result.stdout)
    builtins = [p for p in plugins if p["distribution"] == "codecfw"]
    assert builtins, "codecfw registers its own plugins through entry points"
    failed = {p["name"]: p["error"] for p in builtins if p["status"] != "ok"}
    assert not failed, failed
    slots = {slot for p in builtins for slot in p["kinds"]}
    assert {"semantic", "acoustic", "decoder"} <= slots


@pytest.fixture(scope="module")
def third_party_site(tmp_path_factory):
    """The example and the broken plugin packages, really installed (pip) into a separate site folder."""
    site = tmp_path_factory.mktemp("site")
    for package in ("codecfw_example_fsq", "codecfw_broken_plugin"):
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                        "--target", str(site), str(PACKAGES / package)], check=True, capture_output=True, timeout=300)
    return site


def test_third_party_packages_load_and_broken_one_is_reported(third_party_site):
    result = _cli("plugins", "--json", env_extra={"PYTHONPATH": str(third_party_site)})
    assert result.returncode == 0, result.stderr
    plugins = {p["name"]: p for p in json.loads(result.stdout)}
    assert plugins["example_fsq"]["status"] == "ok"
    assert plugins["example_fsq"]["distribution"] == "codecfw-example-fsq"
    assert plugins["example_fsq"]["version"] == "0.2.0"
    assert plugins["example_fsq"]["kinds"] == {"acoustic": ["example_fsq"]}
    assert plugins["broken"]["status"] == "failed"
    assert "codecfw_dependency_that_does_not_exist" in plugins["broken"]["error"]
    others = [p for p in plugins.values() if p["distribution"] == "codecfw"]
    assert others and all(p["status"] == "ok" for p in others)
    strict = _cli("plugins", "--strict", env_extra={"PYTHONPATH": str(third_party_site)})
    assert strict.returncode == 1


def test_third_party_quantizer_validates_and_builds_in_a_recipe(third_party_site, tmp_path):
    """A recipe that uses the third-party kind next to built-in slots validates and builds."""
    recipe = tmp_path / "fsq.yaml"
    # an include stays beside the recipe (or in the shipped recipes): the base is copied next to it
    (tmp_path / "builtin_tiny.yaml").write_text((Path(__file__).parent / "fixtures" / "recipes" / "builtin_tiny.yaml")
                                                .read_text())
    recipe.write_text("include: builtin_tiny.yaml\nacoustic:\n  kind: example_fsq\n  levels: [8, 8]\n")
    env = {"PYTHONPATH": str(third_party_site), "CODECFW_DISABLE_PLUGINS": "broken"}
    result = _cli("validate", "--build", str(recipe), env_extra=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "example_fsq" in result.stdout and "1 streams" not in result.stdout
    bad = _cli("validate", str(recipe), "acoustic.levels=big", env_extra=env)
    assert bad.returncode == 2
    assert "acoustic.levels" in bad.stderr
