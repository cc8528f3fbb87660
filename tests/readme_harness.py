"""Runs a Markdown file's examples, so the README cannot drift from what codecfw does.

Every fenced ``bash`` and ``python`` block is executed, in order, in one scratch folder laid out like a fresh clone
(``recipes/``, ``data/``, ``tests/`` and ``scripts/`` linked from the repository, ``.venv`` pointing at the running
interpreter's environment), so later blocks see what earlier ones wrote (a trained run, token files). A ``text``
block preceded by an ``output-of`` directive is compared with the output of that command.

Directives are HTML comments (invisible on GitHub) on the lines right before a block (several may stack)::

    <!-- readme-test: skip: REASON -->              not run (the set-up itself, the test command, a GPU/network example)
    <!-- readme-test: append: KEY=VALUE ... -->     words appended to each ``codecfw train`` line (smaller step
                                                    counts; the README says where it is shortened)
    <!-- readme-test: sub: OLD => NEW; ... -->      text substitutions in the block before it runs
    <!-- readme-test: output-of: COMMAND -->       the ``text`` block below is COMMAND's output (compared line by line,
                                                    trailing spaces and the trailing "..." of an elided line ignored)

A bash block runs line by line under ``bash -e`` with ``.venv/bin`` first on PATH (an activated environment); a
line continues with a trailing backslash.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LINKED = ("recipes", "data", "tests", "scripts", "requirements")
_DIRECTIVE = re.compile(r"<!--\s*readme-test:\s*(skip|append|sub|output-of)\s*:\s*(.*?)\s*-->")
_FENCE = re.compile(r"^```(\w*)\s*$")
_EXTENDS = ("codecfw train", "core.cli train")


@dataclasses.dataclass
class Block:
    language: str
    text: str
    line: int  # 1-based line of the opening fence
    directives: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    def directive(self, kind: str) -> str | None:
        return next((value for name, value in self.directives if name == kind), None)


class ReadmeFailure(AssertionError):
    pass


def parse(markdown: str) -> list[Block]:
    """The fenced blocks of ``markdown`` with the directives right before each (blank lines allowed between)."""
    blocks, lines, i = [], markdown.splitlines(), 0
    pending: list[tuple[str, str]] = []
    while i < len(lines):
        directive = _DIRECTIVE.search(lines[i])
        fence = _FENCE.match(lines[i])
        if directive:
            pending.append((directive.group(1), directive.group(2)))
        elif fence:
            start, body = i, []
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            blocks.append(Block(fence.group(1), "\n".join(body) + "\n", start + 1, pending))
            pending = []
        elif lines[i].strip():
            pending = []
        i += 1
    return blocks


def prepare(folder: Path) -> Path:
    """A scratch folder shaped like a fresh clone whose `.venv` is the running environment."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in LINKED:
        if (REPO / name).exists() and not (folder / name).exists():
            (folder / name).symlink_to(REPO / name)
    venv = folder / ".venv"
    if not venv.exists():
        venv.symlink_to(Path(sys.prefix))
    return folder


def commands(block: Block) -> list[str]:
    """The block's shell commands (continuation lines joined, comments and blank lines dropped), with the
    directives' substitutions made and extra words appended to training commands."""
    text = block.text
    for pair in filter(None, (block.directive("sub") or "").split(";")):
        old, new = (part.strip() for part in pair.split("=>"))
        if old not in text:
            raise ValueError(f"README line {block.line}: the substitution {old!r} matches nothing in its block")
        text = text.replace(old, new)
    joined, current = [], ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        text = _strip_comment(current).strip()
        if text:
            joined.append(text)
        current = ""
    extra = block.directive("append")
    if extra:
        joined = [f"{cmd} {extra}" if any(k in cmd for k in _EXTENDS) else cmd for cmd in joined]
    return joined


def _strip_comment(line: str) -> str:
    """Drop a trailing ``# comment`` outside quotes."""
    quote, out = None, []
    for index, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1].isspace()):
            break
        out.append(char)
    return "".join(out)


def _environment(folder: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{folder / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.pop("PYTHONPATH", None)
    env.setdefault("OMP_NUM_THREADS", "1")
    env["CODECFW_NO_PROGRESS"] = "1"
    return env


def run_block(block: Block, folder: Path, timeout: float = 600) -> str:
    """Run one block in ``folder``; raise ReadmeFailure naming the README line and the command on failure."""
    if block.language in ("bash", "sh", "shell"):
        outputs = []
        for command in commands(block):
            outputs.append(_run(["bash", "-e", "-c", command], folder, block, command, timeout))
        return "".join(outputs)
    if block.language == "python":
        return _run([str(folder / ".venv" / "bin" / "python"), "-c", block.text], folder, block, "python block",
                    timeout)
    raise ValueError(f"README line {block.line}: cannot run a {block.language!r} block")


def _run(argv: list[str], folder: Path, block: Block, what: str, timeout: float) -> str:
    try:
        done = subprocess.run(argv, cwd=folder, env=_environment(folder), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as error:
        raise ReadmeFailure(f"README line {block.line}: `{what}` ran past {timeout:.0f} s") from error
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-3000:]
        raise ReadmeFailure(f"README line {block.line}: `{what}` exited {done.returncode}:\n{tail}")
    return done.stdout + done.stderr


def check_output(block: Block, folder: Path) -> None:
    """An ``output-of`` block must match its command's output line by line (a line ending in ``...`` in the
    README matches any line that starts with the text before it)."""
    command = block.directive("output-of")
    try:
        done = subprocess.run(["bash", "-c", command], cwd=folder, env=_environment(folder), capture_output=True,
                              text=True, timeout=300)
    except subprocess.TimeoutExpired as error:
        raise ReadmeFailure(f"README line {block.line}: `{command}` ran past 300 s") from error
    actual = [line.rstrip() for line in (done.stdout + done.stderr).splitlines()]
    expected = [line.rstrip() for line in block.text.splitlines()]
    if expected and expected[0].startswith("$ "):
        expected = expected[1:]
    mismatch = _first_mismatch(expected, actual)
    if mismatch is not None:
        raise ReadmeFailure(f"README line {block.line}: the output shown for `{command}` differs from what it "
                            f"prints at line {mismatch + 1}:\n  README: {expected[mismatch] if mismatch < len(expected) else '(nothing)'}"
                            f"\n  actual: {actual[mismatch] if mismatch < len(actual) else '(nothing)'}\n"
                            + "\n".join(actual))


def _first_mismatch(expected: list[str], actual: list[str]) -> int | None:
    if len(expected) != len(actual):
        return min(len(expected), len(actual))
    for index, (want, got) in enumerate(zip(expected, actual)):
        if want.endswith("...") and got.startswith(want[:-3]):
            continue
        if want != got:
            return index
    return None


def run_readme(markdown: str, folder: Path, timeout: float = 600) -> list[Block]:
    """Run every example of ``markdown`` in ``folder`` in order; return the blocks that ran."""
    prepare(folder)
    ran = []
    for block in parse(markdown):
        if block.directive("skip") is not None:
            continue
        if block.directive("output-of") is not None:
            check_output(block, folder)
        elif block.language in ("bash", "sh", "shell", "python"):
            run_block(block, folder, timeout)
        else:
            continue
        ran.append(block)
    return ran
