"""``dev.sh``: what it prints before it sets anything up."""

from __future__ import annotations

import os
import subprocess
import sys

from .conftest import ROOT


def test_probing_for_a_python_prints_nothing_of_the_interpreters_that_fail(tmp_path):
    # A pyenv shim of a version that is not installed printed "pyenv: python3.13: command not
    # found" and a paragraph of advice for each candidate before the demo started.
    for name in ("python3.13", "python3.12", "python3.11"):
        shim = tmp_path / name
        shim.write_text(f"#!/bin/sh\necho 'pyenv: {name}: command not found' >&2\nexit 127\n")
        shim.chmod(0o755)
    (tmp_path / "python3").symlink_to(sys.executable)
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PYTHON", None)
    done = subprocess.run(["bash", str(ROOT / "dev.sh")], capture_output=True, text=True, env=env, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 2  # no command: the usage, after the probe
    assert done.stderr == "usage: ./dev.sh demo|test [args]\n"
