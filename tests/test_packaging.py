"""The distribution: a built wheel installs `codecfw` (and only it) with recipes and entry points."""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
                    str(ROOT)], check=True, capture_output=True, timeout=600)
    (path,) = out.glob("codecfw-*.whl")
    return path


def test_wheel_layout(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top <= {"codecfw", *(n.split("/")[0] for n in names if ".dist-info" in n)}, top
    for required in ("codecfw/__init__.py", "codecfw/core/registry.py", "codecfw/core/cli.py",
                     "codecfw/plugins/semantic/__init__.py", "codecfw/plugins/acoustic/__init__.py",
                     "codecfw/plugins/decoder/__init__.py", "codecfw/tests/toy_codec.py"):
        assert required in names, required
    assert any(n.startswith("codecfw/recipes/") and n.endswith(".yaml") for n in names)
    for shipped in ("model.safetensors", "meta.json"):  # codecfw's own trained codec ships in the wheel
        assert f"codecfw/plugins/pretrained/weights/codecfw-sacodec-small-16k/{shipped}" in names
    # every built-in plugin module named by an entry point is inside the wheel
    (ep_file,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    parser = configparser.ConfigParser()
    parser.optionxform = str
    parser.read_string(zipfile.ZipFile(wheel).read(ep_file).decode())
    assert parser["console_scripts"]["codecfw"] == "codecfw.core.cli:main"
    for name, target in parser["codecfw.plugins"].items():
        module_path = target.replace(".", "/")
        assert f"{module_path}.py" in names or f"{module_path}/__init__.py" in names, (name, target)


def test_installed_wheel_imports_and_lists_plugins(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODECFW_")}
    env["PYTHONPATH"] = str(site)
    env.update(HF_HUB_OFFLINE="1", CODECFW_CACHE=str(tmp_path / "cache"), HF_HOME=str(tmp_path / "hf"))
    code = ("import codecfw, json, torch; from codecfw.core.registry import get_registry; r = get_registry(); "
            "tok = codecfw.load('codecfw-sacodec-small-16k'); (tf,) = tok.encode(torch.zeros(1, 16000), 16000); "
            "assert tok.decode(tf)[0].shape == (1, 16000); "
            "print(codecfw.__file__); print(json.dumps(sorted(r.kinds('acoustic'))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    first, kinds = result.stdout.strip().splitlines()[-2:]
    assert first.startswith(str(site)), "the wheel's copy is imported, not the source tree"
    assert kinds != "[]"
