"""The environment the tests run in is the one requirements/lock.txt names, and the guard CI runs before the tests
reports a broken one clearly."""

import importlib.metadata as metadata
import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("check_environment", REPO / "scripts" / "check_environment.py")
check_environment = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_environment)


@pytest.mark.parametrize("name", ["torch", "torchaudio"])
def test_installed_torch_and_torchaudio_are_the_locked_pair(name):
    pins = check_environment.locked_versions()
    assert name in pins, f"requirements/lock.txt names no {name}"
    assert metadata.version(name) == pins[name], (
        f"{name} {metadata.version(name)} is installed but the lock names {pins[name]}: "
        f"reinstall with pip install -c requirements/lock.txt")


def test_every_pyproject_dependency_is_locked():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = check_environment.locked_versions()
    requirements = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements += [r for r in extra if not r.startswith("codecfw")]
    missing = []
    for requirement in requirements:
        name = requirement.split(";")[0]
        for sep in "<>=!~[ ":
            name = name.split(sep)[0]
        if name.lower().replace("_", "-") not in pins:
            missing.append(name)
    assert not missing, f"pyproject.toml requires {missing} but requirements/lock.txt pins none of them: " \
                        f"run python3 scripts/lock.py"


def test_the_guard_names_a_mismatched_pair(monkeypatch, tmp_path):
    lock = tmp_path / "lock.txt"
    lock.write_text("# a lock from another day\ntorch==2.11.0\ntorchaudio==2.11.0\n")
    monkeypatch.setattr(check_environment, "LOCK", lock)
    problems = check_environment.check_pair()
    if metadata.version("torch") != "2.11.0":
        assert any("torch " in p and "names torch==2.11.0" in p for p in problems)
    assert all("pip install -c requirements/lock.txt" in p for p in problems)


def test_the_guard_reports_a_torchaudio_that_cannot_load(monkeypatch):
    # What torchaudio 2.11.1 does with torch 2.11.0: the native library fails to load on import.
    class Unloadable:
        def __getattr__(self, name):
            raise OSError("Could not load this library: libtorchaudio.so: undefined symbol")

    monkeypatch.setitem(sys.modules, "torchaudio", Unloadable())
    monkeypatch.setitem(sys.modules, "torchaudio.compliance.kaldi", Unloadable())
    problems = check_environment.check_torchaudio()
    assert len(problems) == 1 and "torchaudio cannot be used" in problems[0] and "undefined symbol" in problems[0]


def test_every_codecfw_module_imports():
    assert check_environment.check_modules() == []
