"""``streamproc alerts tail`` and ``alerts forward`` read the same topics, from the same flags,
environment and config file (a flag beats its variable, which beats the file), with the same
Kafka security settings. The commands' Kafka work is replaced by a recorder: what is checked
is what they were asked to read."""

from __future__ import annotations

import pytest

import streamproc.forward
import streamproc.tail
from streamproc.cli import main
from streamproc.forward import Counts

COMMANDS = {
    "tail": ["alerts", "tail"],
    "forward": ["alerts", "forward", "--webhook", "http://127.0.0.1:1/hook"],
}


@pytest.fixture
def asked(monkeypatch):
    """What the command asked of Kafka: bootstrap, topics, client options."""
    seen: dict = {}

    async def fake_tail(bootstrap, topics, from_beginning=False, as_json=False, on_event=None, stop=None, options=None):
        seen.update(bootstrap=bootstrap, topics=list(topics), options=options or {})

    async def fake_forward(bootstrap, webhook, topics, group_id, from_beginning=False, max_retries=8, timeout=10.0,
                           options=None, partitions=4, **_):
        seen.update(bootstrap=bootstrap, topics=list(topics), options=options or {})
        return Counts()

    monkeypatch.setattr(streamproc.tail, "tail", fake_tail)
    monkeypatch.setattr(streamproc.forward, "forward", fake_forward)
    for name in ("STREAMPROC_BOOTSTRAP", "STREAMPROC_CONFIG", "STREAMPROC_TOPIC_ALERTS", "STREAMPROC_TOPIC_RETRAIN",
                 "STREAMPROC_KAFKA_SECURITY_PROTOCOL", "STREAMPROC_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    return seen


@pytest.mark.parametrize("command", COMMANDS)
def test_topic_names_from_the_environment(command, asked, monkeypatch):
    monkeypatch.setenv("STREAMPROC_TOPIC_ALERTS", "team-alerts")
    monkeypatch.setenv("STREAMPROC_TOPIC_RETRAIN", "team-retrain")
    assert main(COMMANDS[command] + ["--bootstrap", "k:9092"]) == 0
    assert asked["topics"] == ["team-alerts", "team-retrain"]


@pytest.mark.parametrize("command", COMMANDS)
def test_topics_bootstrap_and_security_from_the_config_file_flags_and_variables_first(command, asked, monkeypatch,
                                                                                       tmp_path):
    cfg = tmp_path / "streamproc.yaml"
    cfg.write_text("worker:\n  bootstrap: fromfile:9092\n"
                   "  topics: {alerts: file-alerts, retrain: file-retrain}\n"
                   "  kafka: {security_protocol: SASL_PLAINTEXT, sasl_mechanism: PLAIN, sasl_username: u,"
                   " sasl_password: p}\n")
    assert main(COMMANDS[command] + ["--config", str(cfg)]) == 0
    assert asked["bootstrap"] == "fromfile:9092"
    assert asked["topics"] == ["file-alerts", "file-retrain"]
    assert asked["options"]["security_protocol"] == "SASL_PLAINTEXT" and asked["options"]["sasl_plain_username"] == "u"
    monkeypatch.setenv("STREAMPROC_TOPIC_ALERTS", "env-alerts")
    assert main(COMMANDS[command] + ["--config", str(cfg), "--retrain-topic", "flag-retrain"]) == 0
    assert asked["topics"] == ["env-alerts", "flag-retrain"]
    assert main(COMMANDS[command] + ["--config", str(cfg), "--alerts-topic", "flag-alerts"]) == 0
    assert asked["topics"] == ["flag-alerts", "file-retrain"]


@pytest.mark.parametrize("command", COMMANDS)
def test_default_topics_and_a_missing_bootstrap(command, asked, capsys):
    assert main(COMMANDS[command] + ["--bootstrap", "k:9092"]) == 0
    assert asked == {"bootstrap": "k:9092", "topics": ["drift-alerts", "retrain-requests"], "options": {}}
    assert main(COMMANDS[command]) == 2
    assert capsys.readouterr().err == "streamproc: error: --bootstrap (or STREAMPROC_BOOTSTRAP) is required\n"


@pytest.mark.parametrize("argv, command", [(["alerts", "tail", "--bogus"], "alerts tail"),
                                           (["demo", "--bogus"], "demo"), (["worker", "--bogus"], "worker")])
def test_an_unknown_flag_is_reported_with_its_subcommands_usage(argv, command, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and f"streamproc {command}: error: unrecognized arguments: --bogus" in err
    assert err.startswith(f"usage: streamproc {command} ")


@pytest.mark.parametrize("argv", [["alerts", "forward", "--bootstrap", "k:9092", "--webhook", "http://h/x", "--timeout", "0"],
                                  ["status", "--timeout", "-1"], ["status", "--timeout", "nan"]])
def test_a_timeout_must_be_a_positive_number_of_seconds(argv, capsys):
    # 0 or less would leave the HTTP client waiting for ever on a webhook or worker that hangs.
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and "--timeout: must be a positive number of seconds" in capsys.readouterr().err
