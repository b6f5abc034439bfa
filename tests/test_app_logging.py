"""The worker's log lines: ``app.LogFormatter`` writes what mode's formatter writes, cheaper."""

from __future__ import annotations

import io
import logging
import logging.config
import sys

import faust
import mode.utils.logging as mode_logging
import pytest

from streamproc.app import LogFormatter, faust_worker, logging_config
from streamproc.config import load_config


@pytest.fixture
def root_logging(monkeypatch):
    """mode's setup replaces the root logger's handlers: put them back afterwards. And
    ``dictConfig`` closes every handler that exists (pytest's own among them): not here."""
    monkeypatch.setattr(logging.config, "_clearExistingHandlers", lambda: None)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _records() -> list[logging.LogRecord]:
    def record(level, msg, args, exc_info=None, data=None):
        r = logging.LogRecord("streamproc.worker", level, __file__, 1, msg, args, exc_info)
        r.created, r.msecs, r.process = 1_700_000_000.25, 250.0, 4242
        if data is not None:
            r.data = data
        return r

    try:
        raise ValueError("boom")
    except ValueError:
        exc = sys.exc_info()
    return [
        record(logging.WARNING, "alert %s %s/%s %s %s %s=%.4f", ("a1", "m", "v1", "data_drift", "psi", "x0", 0.25)),
        record(logging.INFO, "dead-lettered %s[%d]@%d (%s)", ("predictions", 0, 17, "invalid event")),
        record(logging.ERROR, "failed: %s", ("x",), exc_info=exc),
        record(logging.WARNING, "with extra data", (), data={"model": "m"}),
    ]


def _formatter(entry: dict, stream) -> logging.Formatter:
    """The formatter a logging config's entry makes (as ``dictConfig`` makes it, without
    configuring anything), writing for ``stream`` (colorlog colors a terminal only)."""
    return logging.config.DictConfigurator({}).configure_formatter({**entry, "stream": stream})


def _lines(formatter: logging.Formatter) -> list[str]:
    return [formatter.format(r) for r in _records()]


def test_without_colors_the_lines_are_mode_s_own(monkeypatch):
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    theirs = _formatter(mode_logging.DEFAULT_FORMATTERS["colored"], io.StringIO())  # not a terminal
    ours = _formatter(logging_config()["formatters"]["colored"], io.StringIO())
    assert type(theirs) is mode_logging.ExtensionFormatter and type(ours) is LogFormatter
    assert ours._blanks is not None  # the cheap path runs
    lines = _lines(ours)
    assert lines == _lines(theirs)
    assert lines[0].endswith(",250] [4242] [WARNING] alert a1 m/v1 data_drift psi x0=0.2500 ")
    assert "Traceback" in lines[2] and "ValueError: boom" in lines[2]
    assert "model='m'" in lines[3]
    assert not any("\x1b" in line for line in lines)


def test_with_colors_it_is_mode_s_formatter(monkeypatch):
    monkeypatch.setenv("FORCE_COLOR", "1")
    theirs = _formatter(mode_logging.DEFAULT_FORMATTERS["colored"], io.StringIO())
    ours = _formatter(logging_config()["formatters"]["colored"], io.StringIO())
    assert ours._blanks is None
    lines = _lines(ours)
    assert lines == _lines(theirs)
    assert any("\x1b[" in line for line in lines)  # colored, as mode colors them


@pytest.mark.parametrize("fmt,style", [
    ("%(log_color)-8s%(levelname)s %(message)s", "%"),
    ("{log_color}{levelname:>8} {message}", "{"),
    ("$log_color$levelname ${message}", "$"),
])
def test_a_format_naming_colors_in_any_style(fmt, style, monkeypatch):
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    ours = LogFormatter(stream=io.StringIO(), fmt=fmt, style=style)
    theirs = mode_logging.ExtensionFormatter(stream=io.StringIO(), fmt=fmt, style=style)
    assert _lines(ours) == _lines(theirs)


def test_the_worker_logs_through_it(root_logging, monkeypatch, capsys):
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    app = faust.App("streamproc-test-logging", broker="kafka://127.0.0.1:1")
    worker = faust_worker(app, load_config(None, environ={}))
    # Its redirection of stdout and stderr to the log would be undone whenever the worker is
    # collected, replacing later tests' captured streams: not here.
    worker.redirect_stdouts = False
    worker._setup_logging()  # what the worker does first when it starts
    formatter = logging.getLogger().handlers[0].formatter
    assert type(formatter) is LogFormatter
    if formatter._blanks is not None:  # (the worker's stdout is not a terminal)
        logging.getLogger("streamproc.worker").warning("alert %s=%.4f", "x0", 0.5)
        assert capsys.readouterr().err.endswith("[WARNING] alert x0=0.5000 \n")  # mode's handler writes to stderr
