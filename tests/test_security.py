"""Kafka TLS/SASL settings: validated at start, passed to the clients, secrets kept out of reprs."""

from __future__ import annotations

import ssl

import pytest

from streamproc.config import ConfigError, load_config
from streamproc.kafka import client_options


def test_plaintext_by_default_adds_nothing():
    assert client_options(load_config(None, environ={}).worker.kafka) == {}


def test_sasl_ssl_from_environment(tmp_path):
    env = {"STREAMPROC_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "STREAMPROC_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
           "STREAMPROC_KAFKA_SASL_USERNAME": "monitor", "STREAMPROC_KAFKA_SASL_PASSWORD": "s3cret"}
    security = load_config(None, environ=env).worker.kafka
    opts = client_options(security)
    assert opts["security_protocol"] == "SASL_SSL"
    assert (opts["sasl_mechanism"], opts["sasl_plain_username"], opts["sasl_plain_password"]) == ("SCRAM-SHA-512", "monitor", "s3cret")
    assert isinstance(opts["ssl_context"], ssl.SSLContext) and opts["ssl_context"].check_hostname
    assert "s3cret" not in repr(security) and "s3cret" not in str(load_config(None, environ=env))


def test_ssl_with_client_certificate_files(tmp_path):
    # The CA file is checked to exist at start and then really loaded by the ssl module:
    # a file that is not a certificate fails there.
    ca = tmp_path / "ca.pem"
    ca.write_text("not a certificate\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"worker:\n  kafka:\n    security_protocol: SSL\n    ssl_cafile: {ca}\n    ssl_check_hostname: false\n")
    security = load_config(cfg, environ={}).worker.kafka
    with pytest.raises(ssl.SSLError):  # the file is read by the real ssl module
        client_options(security)


@pytest.mark.parametrize("text,field", [
    ("worker:\n  kafka:\n    security_protocol: SASL_PLAINTEXT\n", "needs sasl_mechanism, sasl_username, sasl_password"),
    ("worker:\n  kafka:\n    security_protocol: TLS\n", "worker.kafka.security_protocol"),
    ("worker:\n  kafka:\n    security_protocol: SSL\n    ssl_cafile: /nonexistent/ca.pem\n", "ssl_cafile: no such file"),
    ("worker:\n  kafka: 3\n", "worker.kafka: must be a mapping"),
])
def test_bad_security_settings_fail_naming_the_field(tmp_path, text, field):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_config(cfg, environ={})


def test_repeated_library_errors_are_throttled():
    import logging

    from streamproc.app import ThrottleRepeats

    throttle = ThrottleRepeats(seconds=60)
    def record(msg, *args, level=logging.ERROR):
        return logging.LogRecord("aiokafka.conn", level, __file__, 1, msg, args, None)
    assert throttle.filter(record("Unable connect to node with id %s: %s", 111, "refused"))
    assert not throttle.filter(record("Unable connect to node with id %s: %s", 111, "refused again"))
    assert throttle.filter(record("Failed fetch messages from %s", 111))  # another message
    assert throttle.filter(record("debug detail %s", 1, level=logging.INFO))  # below warning: never throttled


@pytest.mark.integration
def test_a_login_the_broker_does_not_support_is_said_not_taken_for_an_unreachable_broker(bootstrap, capsys, monkeypatch):
    """The client raises "Unable to bootstrap" whatever went wrong; the reason is in its log,
    which the command's one line says."""
    from streamproc.broker import free_port
    from streamproc.cli import main

    for name, value in (("SECURITY_PROTOCOL", "SASL_PLAINTEXT"), ("SASL_MECHANISM", "PLAIN"),
                        ("SASL_USERNAME", "u"), ("SASL_PASSWORD", "p")):
        monkeypatch.setenv(f"STREAMPROC_KAFKA_{name}", value)
    assert main(["worker", "--bootstrap", bootstrap, "--metrics-port", str(free_port())]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cannot reach Kafka at {bootstrap}" in err and "UnsupportedSaslMechanismError" in err, err
