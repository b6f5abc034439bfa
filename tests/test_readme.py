"""The README's documented contract matches the code: config defaults, CLI commands, metric names."""

from __future__ import annotations

import re
from pathlib import Path

from streamproc.cli import build_parser
from streamproc.config import MonitorConfig, TopicsConfig, WorkerSettings, load_config
from streamproc.metrics import Metrics

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def config_block() -> str:
    section = README[README.index("## Configuration"):]
    return re.search(r"```yaml\n(.*?)```", section, re.S).group(1)


def test_documented_config_loads_and_its_defaults_are_the_real_defaults(tmp_path):
    path = tmp_path / "streamproc.yaml"
    path.write_text(config_block())
    config = load_config(path, environ={})
    assert config.defaults == MonitorConfig()
    assert config.worker == WorkerSettings(topics=TopicsConfig())
    fraud = config.for_model("fraud")
    assert fraud.psi.critical == 0.3 and fraud.psi.warning == 0.1
    assert fraud.window.kind == "time" and fraud.window.seconds == 600 and fraud.window.allowed_lateness == 60
    assert fraud.reference_file == tmp_path / "refs" / "fraud.json"


def test_every_metric_is_documented():
    for metric in Metrics().registry.collect():
        # prometheus_client names a counter without its _total suffix.
        exposed = metric.name + "_total" if metric.type == "counter" else metric.name
        assert f"| `{exposed}` |" in README, exposed


def test_every_cli_command_is_documented():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name in sub.choices:
        assert f"`streamproc {name}" in README, name


def test_every_cli_command_has_an_example_in_its_help():
    import argparse

    def commands(parser, path):
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            yield path, parser
        for action in subs:
            for name, child in action.choices.items():
                yield from commands(child, path + [name])

    found = list(commands(build_parser(), ["streamproc"]))
    assert len(found) >= 9
    for path, parser in found:
        epilog = parser.epilog or ""
        assert "example" in epilog and " ".join(path) in epilog, " ".join(path)
