"""Commands the module docstrings tell the reader to run are commands ``streamproc`` takes."""

from __future__ import annotations

import re
import shlex

import pytest

import streamproc.events
from streamproc.cli import build_parser


@pytest.mark.parametrize("module", [streamproc.events])
def test_the_commands_a_docstring_names_parse(module):
    # streamproc.events named ``streamproc schemas --write``, which is refused (no such flag).
    commands = re.findall(r"``(streamproc [^`]+)``", module.__doc__)
    assert commands
    for command in commands:
        try:
            build_parser().parse_args(shlex.split(command)[1:])
        except SystemExit:
            pytest.fail(f"{module.__name__} names {command!r}, which streamproc refuses")
