"""The import arrows of docs/architecture.md, checked statically (``ast``, nothing is imported).

- ``core/`` never imports ``codecfw.plugins``: plugins depend on the core, never the other way round.
- A slot folder (``plugins/semantic``, ``plugins/acoustic``, ...) never imports another slot folder nor the
  whole-codec converters of ``plugins/pretrained``; layers two slots share live in the neutral ``plugins/nn``, which
  imports no plugin folder at all.
- No import cycle among codecfw's modules, counting imports inside functions (a cycle hidden that way still ties
  two modules together).
- Inside ``plugins/`` every codecfw import is absolute (``from codecfw.core.types import ...``), the style the
  README shows third-party plugins.
- codecfw's own code uses the new module paths, not the old ones kept importable by ``codecfw._moved``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SLOTS = ("semantic", "acoustic", "decoder", "discriminator", "loss", "metric")
SOURCE_DIRS = ("core", "plugins")


def module_name(path: Path) -> str:
    parts = ["codecfw", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_files() -> list[Path]:
    files = [ROOT / "__init__.py", ROOT / "_moved.py"]
    for folder in SOURCE_DIRS:
        files += sorted(p for p in (ROOT / folder).rglob("*.py") if "build" not in p.parts)
    return files


MODULES = {module_name(p): p for p in source_files()}


def imports(path: Path) -> list[tuple[int, str, bool]]:
    """(line, imported codecfw module, written relative?) for every import statement in ``path``, at any depth.
    ``from package import name`` counts as an import of ``package.name`` when that is a module."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name, False) for a in node.names if a.name.split(".")[0] == "codecfw"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "codecfw":
                continue
            subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES]
            found += [(node.lineno, t, bool(node.level)) for t in (subs or [target])]
    return found


def graph() -> dict[str, set[str]]:
    return {name: {t for _, t, _ in imports(path) if t in MODULES and t != name} for name, path in MODULES.items()}


def test_core_never_imports_plugins():
    bad = [f"{p.relative_to(ROOT)}:{line} imports {target}" for p in source_files()
           if p.relative_to(ROOT).parts[0] == "core"
           for line, target, _ in imports(p) if target.startswith("codecfw.plugins")]
    assert not bad, "core/ must not depend on plugins:\n" + "\n".join(bad)


def plugin_folder(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[1] == "plugins" else None


def test_slot_folders_import_no_other_plugin_folder():
    bad = []
    for p in source_files():
        own = plugin_folder(module_name(p))
        if own not in (*SLOTS, "nn"):
            continue  # plugins/pretrained assembles whole codecs from the slots
        for line, target, _ in imports(p):
            other = plugin_folder(target)
            if other is not None and other != own and (own == "nn" or other != "nn"):
                bad.append(f"{p.relative_to(ROOT)}:{line} imports {target}")
    assert not bad, "slot folders import only core and plugins/nn (nn imports no plugin folder):\n" + "\n".join(bad)


def strongly_connected(g: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iteratively: the components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out = []
    for root in sorted(g):
        if root in index:
            continue
        work = [(root, iter(sorted(g[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(g[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def test_no_import_cycles():
    cycles = strongly_connected(graph())
    assert not cycles, "modules that import each other (directly or through others):\n" + "\n".join(
        " <-> ".join(c) for c in cycles)


def test_the_cycle_check_can_fail():
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []


def test_plugins_use_absolute_imports():
    bad = [f"{p.relative_to(ROOT)}:{line} imports {target} relatively" for p in source_files()
           if p.relative_to(ROOT).parts[0] == "plugins" for line, target, relative in imports(p) if relative]
    assert not bad, "write `from codecfw.plugins... import ...` inside plugins/:\n" + "\n".join(bad)


@pytest.mark.parametrize("folder", ["core", "plugins", "tests", "benchmarks", "scripts"])
def test_codecfw_uses_the_new_module_paths(folder):
    from codecfw._moved import MOVED

    files = [p for p in (ROOT / folder).rglob("*.py") if "build" not in p.parts and "plugin_packages" not in p.parts]
    bad = [f"{p.relative_to(ROOT)}:{line} imports {target}" for p in files for line, target, _ in imports(p)
           if target in MOVED]
    assert not bad, "use the new module paths:\n" + "\n".join(bad)


def test_old_module_paths_still_import():
    import importlib

    from codecfw._moved import MOVED

    for old, new in MOVED.items():
        assert importlib.import_module(old) is importlib.import_module(new)


def test_the_map_in_docs_matches_the_folders():
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = text.split("### Map", 1)[1].split("```")[1]
    core_files = [p.name for p in (ROOT / "core").rglob("*.py")
                  if p.name != "__init__.py" and "commands" not in p.parts and "build" not in p.parts]
    folders = [f"{p.name}/" for base in ("core", "plugins") for p in (ROOT / base).iterdir()
               if p.is_dir() and (p / "__init__.py").is_file()]
    plugin_files = [p.name for p in (ROOT / "plugins" / "nn").glob("*.py")] + \
        [p.name for p in (ROOT / "plugins" / "pretrained").glob("*.py")]
    missing = [n for n in core_files + folders + plugin_files if n != "__init__.py" and n not in block]
    assert not missing, f"docs/architecture.md's map does not mention {missing}"
    import re

    existing = {p.name for p in ROOT.glob("*.py")} | {p.name for base in ("core", "plugins")
                                                      for p in (ROOT / base).rglob("*.py")}
    stale = [n for n in re.findall(r"\b\w+\.py\b", block) if n not in existing]
    assert not stale, f"docs/architecture.md's map names files that do not exist: {stale}"
