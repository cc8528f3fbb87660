"""The README is executed: its shell commands and Python snippets run as a new user would run them, and the outputs
it shows are compared with what codecfw prints. How blocks are chosen and shortened: tests/readme_harness.py."""

from pathlib import Path

import pytest

from .readme_harness import REPO, ReadmeFailure, parse, run_readme

README = (REPO / "README.md").read_text()


def test_every_readme_example_runs_as_written(tmp_path):
    ran = run_readme(README, tmp_path)
    executed = "".join(block.text for block in ran)
    # The README's promises that must be exercised, not skipped: the main job, encode → decode, and Python use.
    for promise in ("codecfw train recipes/xcodec_tiny.yaml", "codecfw encode", "codecfw decode",
                    "codecfw.load("):
        assert promise in executed, f"the README example with {promise!r} was skipped"
    assert any(block.directive("output-of") for block in ran), \
        "no README output is checked against the command that prints it"


def test_every_skipped_readme_block_says_why():
    for block in parse(README):
        reason = block.directive("skip")
        if reason is not None:
            assert len(reason.split()) >= 2, f"README line {block.line}: a skip needs a reason"


def test_a_readme_example_that_no_longer_works_fails(tmp_path):
    broken = "Train:\n\n```bash\ncodecfw validate recipes/xcodec_tiny.yaml acoustic.codebook_size=big\n```\n"
    with pytest.raises(ReadmeFailure, match=r"README line 3: `codecfw validate .*` exited 2"):
        run_readme(broken, tmp_path)


def test_a_readme_output_that_drifted_fails(tmp_path):
    shown = [b for b in parse(README) if b.directive("output-of")]
    assert shown, "the README shows no command output to check"
    block = shown[0]
    lines = block.text.splitlines()
    # One character of the last output line changed, as an edit that drifted would change it.
    lines[-1] = lines[-1].replace("dac", "dax")
    drifted = f"<!-- readme-test: output-of: {block.directive('output-of')} -->\n```text\n" + "\n".join(lines) + "\n```\n"
    with pytest.raises(ReadmeFailure, match="differs from what it prints"):
        run_readme(drifted, tmp_path)


def test_readme_set_up_command_uses_the_lock():
    setup = [b for b in parse(README) if "pip install" in b.text]
    assert setup and all("-c requirements/lock.txt" in b.text for b in setup), \
        "the README's set-up command must install the locked environment"
    ci = (REPO / ".ci" / "run").read_text()
    assert "-c requirements/lock.txt" in ci and "python -m pytest" in ci
    test_command = next(line.strip() for b in parse(README) for line in b.text.splitlines()
                        if "-m pytest" in line and "slow" not in line)
    assert test_command.split("#")[0].strip() in ci, "CI must run exactly the README's test command"
