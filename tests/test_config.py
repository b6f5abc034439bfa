"""Unit tests of ``streamproc.config.load_config``: defaults, file, environment, flags, errors."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from streamproc.config import ConfigError, MonitorConfig, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "streamproc.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_defaults():
    cfg = load_config(environ={})
    w = cfg.worker
    assert w.bootstrap == "127.0.0.1:9092"
    assert w.group_id == "streamproc"
    assert w.metrics_port == 9464
    assert w.window_size is None and w.warmup_size is None
    assert w.topics.predictions == "predictions" and w.topics.alerts == "drift-alerts"
    assert cfg.models == {}
    m = cfg.for_model("anything")
    assert m == MonitorConfig()
    assert (m.window_size, m.warmup_size) == (1000, 2000)
    assert (m.psi.warning, m.psi.critical, m.psi.bins, m.psi.clear_windows) == (0.1, 0.25, 10, 3)
    assert m.retrain.cooldown_windows == 10
    assert m.cooldown_events is None


def test_empty_file_is_defaults(tmp_path):
    assert load_config(write(tmp_path, ""), environ={}) == load_config(environ={})


def test_yaml_file_with_per_model_override_merges_nested_sections(tmp_path):
    path = write(tmp_path, """
        worker:
          group_id: g1
          topics: {alerts: my-alerts}
        defaults:
          window_size: 500
          psi: {warning: 0.15, bins: 8}
          adwin: {enabled: false}
        models:
          fraud:
            ignore_features: [request_id]
            psi: {critical: 0.4}
            retrain: {cooldown_windows: 2}
    """)
    cfg = load_config(path, environ={})
    assert cfg.worker.group_id == "g1"
    assert cfg.worker.topics.alerts == "my-alerts"
    assert cfg.worker.topics.predictions == "predictions"
    fraud = cfg.for_model("fraud")
    assert fraud.window_size == 500
    assert fraud.ignore_features == ["request_id"]
    # Nested merge: the model's psi.critical, the defaults' psi.warning/bins, built-in rest.
    assert (fraud.psi.warning, fraud.psi.critical, fraud.psi.bins, fraud.psi.hysteresis) == (0.15, 0.4, 8, 0.8)
    assert fraud.retrain.cooldown_windows == 2 and fraud.retrain.enabled is True
    assert fraud.adwin.enabled is False
    other = cfg.for_model("churn")
    assert (other.psi.warning, other.psi.critical) == (0.15, 0.25)
    assert other.ignore_features == []


def test_env_var_applies_and_flag_beats_it(tmp_path):
    path = write(tmp_path, "worker: {window_size: 300, group_id: from-file}\n")
    env = {"STREAMPROC_WINDOW_SIZE": "500", "STREAMPROC_GROUP_ID": "from-env", "STREAMPROC_TOPIC_ALERTS": "env-alerts"}
    cfg = load_config(path, environ=env)
    assert cfg.worker.window_size == 500  # env beats the file
    assert cfg.worker.group_id == "from-env"
    assert cfg.worker.topics.alerts == "env-alerts"
    assert cfg.for_model("m").window_size == 500  # the worker setting reaches the monitors

    cfg = load_config(path, overrides={"window_size": 700, "group_id": None}, environ=env)
    assert cfg.worker.window_size == 700  # flag beats env
    assert cfg.worker.group_id == "from-env"  # a None flag is "not given"
    assert cfg.for_model("m").window_size == 700


def test_empty_env_var_is_ignored():
    cfg = load_config(environ={"STREAMPROC_METRICS_PORT": "", "STREAMPROC_WARMUP_SIZE": "50"})
    assert cfg.worker.metrics_port == 9464
    assert cfg.for_model("m").warmup_size == 50


def test_env_var_defaults_to_os_environ(monkeypatch):
    monkeypatch.setenv("STREAMPROC_WINDOW_SIZE", "250")
    assert load_config().worker.window_size == 250


def _error(tmp_path, text: str = None, **kw) -> str:
    args = (write(tmp_path, text),) if text is not None else ()
    kw.setdefault("environ", {})
    with pytest.raises(ConfigError) as exc:
        load_config(*args, **kw)
    return str(exc.value)


@pytest.mark.parametrize(
    "text, field",
    [
        ("defaults:\n  psi: {warning: -0.1}\n", "defaults.psi.warning"),
        ("defaults:\n  psi: {bins: 1}\n", "defaults.psi.bins"),
        ("defaults:\n  psi: {alpha: 2}\n", "defaults.psi.alpha"),
        ("defaults:\n  window_size: lots\n", "defaults.window_size"),
        ("worker:\n  metrics_port: 70000\n", "worker.metrics_port"),
        ("worker:\n  topics: {partitions: 0}\n", "worker.topics.partitions"),
        ("worker:\n  routed_message_bytes: 1000\n", "worker.routed_message_bytes"),
        ("defaults:\n  retrain: {min_critical_features: 0}\n", "defaults.retrain.min_critical_features"),
        ("worker:\n  log_level: loud\n", "worker.log_level"),
    ],
)
def test_bad_values_name_the_field(tmp_path, text, field):
    message = _error(tmp_path, text)
    assert field in message, message


def test_critical_below_warning_is_rejected(tmp_path):
    message = _error(tmp_path, "defaults:\n  psi: {warning: 0.5, critical: 0.2}\n")
    assert "defaults.psi" in message and "critical must be >= warning" in message


def test_bad_model_override_names_the_model_and_field(tmp_path):
    message = _error(tmp_path, "models:\n  fraud:\n    window_size: 3\n")
    # Reported as "models.fraud: window_size: ..." (model, then the field inside it).
    assert re.search(r"models\.fraud[.:]\s*window_size", message), message
    assert "greater than or equal to 10" in message
    message = _error(tmp_path, "models:\n  fraud:\n    psi: {critical: -1}\n")
    assert re.search(r"models\.fraud[.:]\s*psi\.critical", message), message


def test_bad_env_value_names_the_field():
    message = _error(None, environ={"STREAMPROC_METRICS_PORT": "http"})
    assert "worker.metrics_port" in message
    message = _error(None, environ={"STREAMPROC_WINDOW_SIZE": "5"})
    assert "worker.window_size" in message


def test_bad_flag_value_names_the_field():
    assert "worker.metrics_port" in _error(None, overrides={"metrics_port": -1})


@pytest.mark.parametrize(
    "text, field",
    [
        ("bogus: 1\n", "bogus"),
        ("worker:\n  windowsize: 10\n", "worker.windowsize"),
        ("defaults:\n  psi: {warnig: 0.2}\n", "defaults.psi.warnig"),
        ("worker:\n  topics: {alert: x}\n", "worker.topics.alert"),
    ],
)
def test_unknown_keys_are_rejected(tmp_path, text, field):
    message = _error(tmp_path, text)
    assert field in message and "Extra inputs are not permitted" in message


def test_unknown_key_in_a_model_override_is_rejected(tmp_path):
    message = _error(tmp_path, "models:\n  fraud:\n    window_sise: 500\n")
    assert "models.fraud" in message and "window_sise" in message


@pytest.mark.parametrize("text", ["worker: [unclosed\n", "a: b: c\n", "key: 'unterminated\n", '{"worker": {"group_id": 1'])
def test_non_yaml_is_rejected(tmp_path, text):
    message = _error(tmp_path, text)
    assert "not valid YAML" in message
    assert "streamproc.yaml" in message


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_top_level_must_be_a_mapping(tmp_path, text):
    assert "top level must be a mapping" in _error(tmp_path, text)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path / "nope.yaml", environ={})
    assert "nope.yaml" in str(exc.value)
    assert "No such file" in str(exc.value)


def test_python_tags_are_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    text = f'defaults: !!python/object/apply:os.mkdir ["{marker}"]\n'
    message = _error(tmp_path, text)
    assert "not valid YAML" in message
    assert not marker.exists()
    text = "worker: !!python/object:streamproc.config.WorkerSettings {group_id: x}\n"
    assert "not valid YAML" in _error(tmp_path, text)


def test_non_mapping_worker_section_is_a_config_error(tmp_path):
    assert "worker" in _error(tmp_path, "worker: 5\n")


def test_models_without_overrides_share_one_settings_instance_also_after_unpickling():
    import pickle

    from streamproc.engine import MonitorEngine

    cfg = load_config(None, environ={})
    cfg.models["special"] = {"window_size": 500}
    engine = MonitorEngine(cfg)
    a, b, special = engine.config_for("a"), engine.config_for("b"), engine.config_for("special")
    assert a is b and special is not a and special.window_size == 500
    # A monitor's state pickles its settings; unpickled, they are the shared instance again.
    monitor = engine.monitor(("c", "v1"))
    restored = pickle.loads(pickle.dumps(monitor))
    assert restored.cfg is a and restored.policy.cfg is a
    assert pickle.loads(pickle.dumps(special)) is special


def test_a_log_level_is_one_of_loggings_in_any_case():
    assert load_config(None, {"log_level": "debug"}, environ={}).worker.log_level == "DEBUG"
    assert load_config(None, environ={"STREAMPROC_LOG_LEVEL": "Warning"}).worker.log_level == "WARNING"
    assert [load_config(None, {"log_level": alias}, environ={}).worker.log_level for alias in ("warn", "fatal")] == \
        ["WARNING", "CRITICAL"]  # logging's aliases, accepted before the levels were checked


def test_a_command_leaves_the_kafka_clients_logging_as_it_found_it(capsys):
    """The short-lived commands keep the client's error lines for their one-line error; after
    them (tests call ``main`` many times in one process) the client logs as before."""
    import logging

    from streamproc.broker import free_port
    from streamproc.cli import main

    client = logging.getLogger("aiokafka")
    before = (list(client.handlers), client.propagate)
    for _ in range(2):
        assert main(["alerts", "tail", "--bootstrap", f"127.0.0.1:{free_port()}"]) == 1
    assert "cannot reach Kafka" in capsys.readouterr().err
    assert (list(client.handlers), client.propagate) == before


def test_a_worker_that_cannot_start_says_why_in_one_line(capsys):
    """faust reports a failure at the worker's start with a traceback of dozens of lines; the
    worker checks what it can first: the metrics port, Kafka, and the log level."""
    import socket

    from streamproc.broker import free_port
    from streamproc.cli import main

    def one_line(argv: list[str]) -> tuple[int, str]:
        code = main(["worker", *argv])
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("streamproc: error: "), err
        return code, err

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        code, err = one_line(["--bootstrap", "127.0.0.1:1", "--metrics-port", str(port)])
        assert code == 1 and f"metrics port 127.0.0.1:{port} (worker.metrics_port) cannot be used" in err
    code, err = one_line(["--bootstrap", f"127.0.0.1:{free_port()}", "--metrics-port", str(free_port())])
    assert code == 1 and "cannot reach Kafka at 127.0.0.1:" in err
    code, err = one_line(["--log-level", "loud"])
    assert code == 2 and "worker.log_level" in err and "'loud' is not a log level" in err


def test_a_partial_concept_signal_under_defaults_keeps_its_critical_effect(tmp_path):
    # The error signal's critical effect is 0.3 (the score's 0.5): a section naming only another
    # field of it, under defaults as under a model, must not bring the score's back.
    f = tmp_path / "c.yaml"
    f.write_text("defaults:\n  concept: {signal: {confirm: 50}}\nmodels:\n  fraud:\n    concept: {signal: {confirm: 40}}\n")
    config = load_config(f, environ={})
    for model in ("fraud", "other"):
        assert config.for_model(model).concept.signal.critical_effect == 0.3
    assert (config.for_model("other").concept.signal.confirm, config.for_model("fraud").concept.signal.confirm) == (50, 40)
    assert config.for_model("other").score.critical_effect == 0.5


def test_a_window_size_flag_at_odds_with_the_defaults_fails_at_start_naming_it(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("defaults:\n  window: {slide: 3}\n  window_size: 999\n")
    assert load_config(f, environ={}).for_model("m").window_size == 999
    with pytest.raises(ConfigError, match=r"^invalid configuration: defaults with worker\.window_size 1000: .*multiple of window\.slide"):
        load_config(f, overrides={"window_size": 1000}, environ={})
    with pytest.raises(ConfigError, match=r"worker\.window_size 1000"):
        load_config(f, environ={"STREAMPROC_WINDOW_SIZE": "1000"})


def test_a_reference_file_under_defaults_is_refused(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("defaults:\n  reference_file: refs/all.json\n")
    with pytest.raises(ConfigError, match=r"defaults\.reference_file: a reference is of one model version"):
        load_config(f, environ={})


@pytest.mark.parametrize("text, field, rule", [
    ("quality: {min_increase: 0.3, critical_increase: 0.1}", "defaults.quality", "critical_increase must be >= min_increase"),
    ("score: {min_effect: 0.6, critical_effect: 0.5}", "defaults.score", "critical_effect must be >= min_effect"),
    ("concept: {signal: {min_effect: 0.4}}", "defaults.concept.signal", "critical_effect must be >= min_effect"),
])
def test_a_critical_bar_below_its_warning_bar_is_rejected(tmp_path, text, field, rule):
    # Every alert would be critical (and request retraining).
    message = _error(tmp_path, "defaults:\n  " + text + "\n")
    assert field in message and rule in message


def test_a_wait_for_outcomes_shorter_than_the_future_a_prediction_may_be_dated_is_refused(tmp_path):
    # One prediction dated up to max_future_seconds ahead moves its joiner's event-time clock
    # that far: with a shorter ttl every prediction waiting for its outcome expired at once, and
    # every later one on arrival (about a third of the timely outcomes matched, in a reproduction).
    path = tmp_path / "c.yaml"
    path.write_text("models:\n  fraud:\n    concept: {ttl_seconds: 3600}\n")
    with pytest.raises(ConfigError, match=r"models\.fraud\.concept\.ttl_seconds \(3600\) is shorter than "
                                          r"worker\.max_future_seconds \(86400\)"):
        load_config(path, environ={})
    assert load_config(path, environ={"STREAMPROC_MAX_FUTURE_SECONDS": "3600"}).for_model("fraud").concept.ttl_seconds == 3600
    for fine in ("worker: {max_future_seconds: null}\nmodels:\n  fraud:\n    concept: {ttl_seconds: 3600}\n",
                 "models:\n  fraud:\n    concept: {ttl_seconds: 3600, enabled: false}\n"):
        path.write_text(fine)
        assert load_config(path, environ={}).for_model("fraud").concept.ttl_seconds == 3600
