"""configure_logging: JSON lines off a terminal, console on one, one chain for all loggers."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import structlog
from pydantic import SecretBytes, SecretStr
from structlog.testing import capture_logs

from tstoraged.observe.logging import MASK, configure_logging, parse_level, redact_secrets


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeTerminal(io.StringIO):
    """A text stream that claims to be a TTY, as stdout is in an interactive shell."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    structlog.reset_defaults()


def json_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_non_tty_stream_gets_one_json_object_per_line_with_the_shared_fields() -> None:
    out = io.StringIO()
    configure_logging("info", stream=out)

    structlog.get_logger("tstoraged.test").bind(source="line-3").info("started", files=2)

    (line,) = json_lines(out)
    assert line["event"] == "started"
    assert line["source"] == "line-3"
    assert line["files"] == 2
    assert line["level"] == "info"
    assert line["logger"] == "tstoraged.test"
    stamp = datetime.fromisoformat(str(line["timestamp"]))
    assert stamp.utcoffset() is not None
    assert stamp.utcoffset().total_seconds() == 0  # type: ignore[union-attr]


def test_stdlib_records_of_libraries_go_through_the_same_chain() -> None:
    out = io.StringIO()
    configure_logging("info", stream=out)

    logging.getLogger("pymodbus.client").warning("device %s not responding", "meter-1")

    (line,) = json_lines(out)
    assert line["event"] == "device meter-1 not responding"
    assert line["level"] == "warning"
    assert line["logger"] == "pymodbus.client"
    assert "timestamp" in line


def test_terminal_gets_the_console_renderer_and_json_can_be_forced() -> None:
    console = FakeTerminal()
    configure_logging("info", stream=console)
    structlog.get_logger("t").info("hello", source="s1")
    text = console.getvalue()
    assert "hello" in text
    assert "source" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.splitlines()[0])

    forced = FakeTerminal()
    configure_logging("info", fmt="json", stream=forced)
    structlog.get_logger("t").info("hello", source="s1")
    assert json_lines(forced)[0]["event"] == "hello"


def test_console_format_on_a_pipe_has_no_color_codes() -> None:
    out = io.StringIO()
    configure_logging("info", fmt="console", stream=out)
    structlog.get_logger("t").warning("careful")
    assert "careful" in out.getvalue()
    assert "\x1b[" not in out.getvalue()


def test_reconfiguring_changes_the_level_of_loggers_bound_before_and_adds_no_handler() -> None:
    out = io.StringIO()
    configure_logging("info", stream=out)
    log = structlog.get_logger("t").bind(source="s1")  # bound before the "reload"
    log.debug("hidden")

    configure_logging("debug", stream=out)
    log.debug("shown")
    log.info("once")

    events = [line["event"] for line in json_lines(out)]
    assert events == ["shown", "once"]


def test_exceptions_are_rendered_as_a_traceback_string_in_json() -> None:
    out = io.StringIO()
    configure_logging("info", stream=out)
    try:
        raise ValueError("bad register")
    except ValueError:
        structlog.get_logger("t").exception("poll failed", source="meter")

    (line,) = json_lines(out)
    assert line["level"] == "error"
    assert "Traceback" in str(line["exception"])
    assert "ValueError: bad register" in str(line["exception"])


def test_secret_values_are_masked_in_the_real_output() -> None:
    out = io.StringIO()
    configure_logging("info", stream=out)
    structlog.get_logger("t").info(
        "effective config",
        tstorage={"host": "db", "password": SecretStr("hunter2")},
        key=SecretBytes(b"\x01\x02"),
        password="plain-but-sensitive",
    )
    logging.getLogger("lib").warning("token %s", SecretStr("abc123"))

    text = out.getvalue()
    assert "hunter2" not in text
    assert "plain-but-sensitive" not in text
    assert "abc123" not in text
    first = json_lines(out)[0]
    assert first["tstorage"] == {"host": "db", "password": MASK}
    assert first["key"] == MASK
    assert first["password"] == MASK


def test_redact_secrets_leaves_ordinary_values_untouched() -> None:
    nested = {"host": "db", "ports": [1, 2]}
    event = {"event": "x", "source": "s", "cfg": nested, "items": (SecretStr("s"), 3)}
    out = redact_secrets(None, "info", event)
    assert out["cfg"] is nested
    assert out["items"] == (MASK, 3)
    assert out["source"] == "s"


def test_capture_logs_sees_events_with_their_bound_source() -> None:
    configure_logging("info", stream=io.StringIO())
    with capture_logs() as captured:
        structlog.get_logger("t").bind(source="mqtt-1").warning("broker unreachable")
    assert captured == [{"source": "mqtt-1", "event": "broker unreachable", "log_level": "warning"}]


@pytest.mark.parametrize(("name", "number"), [("debug", 10), ("INFO", 20), ("warning", 30)])
def test_level_names_are_parsed_case_insensitively(name: str, number: int) -> None:
    assert parse_level(name) == number


def test_unknown_level_and_format_are_refused_with_the_expected_values() -> None:
    with pytest.raises(ValueError, match="expected one of debug, info"):
        configure_logging("verbose", stream=io.StringIO())
    with pytest.raises(ValueError, match="expected auto, json or console"):
        configure_logging("info", fmt="xml", stream=io.StringIO())  # type: ignore[arg-type]


def test_real_output_reports_suppressed_repeats_of_our_and_library_errors() -> None:
    clock = FakeClock()
    out = io.StringIO()
    configure_logging("info", stream=out, rate_limit_window=60, clock=clock)
    log = structlog.get_logger("t").bind(source="mqtt-1")
    library = logging.getLogger("paho.mqtt")

    for _ in range(4):
        log.error("connect failed", reason="refused")
        library.error("socket error %s", "ECONNREFUSED")
    clock.now += 61
    log.error("connect failed", reason="refused")
    library.error("socket error %s", "ECONNREFUSED")

    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    ours = [line for line in lines if line["logger"] == "t"]
    theirs = [line for line in lines if line["logger"] == "paho.mqtt"]
    assert [line.get("suppressed") for line in ours] == [None, 3]
    assert [line.get("suppressed") for line in theirs] == [None, 3]


def test_console_tracebacks_do_not_show_local_variables() -> None:
    console = FakeTerminal()
    configure_logging("info", stream=console)
    api_password = "hun" + "ter2"  # noqa: F841 (a local; the source shows only the parts)
    try:
        raise RuntimeError("upload failed")
    except RuntimeError:
        structlog.get_logger("t").exception("write failed")
    text = console.getvalue()
    assert "RuntimeError" in text
    assert "hunter2" not in text


def test_lines_to_the_journal_stream_carry_their_syslog_priority(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with (tmp_path / "journal").open("w") as journal, (tmp_path / "pipe").open("w") as pipe:
        status = os.fstat(journal.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{status.st_dev}:{status.st_ino}")
        configure_logging("debug", stream=journal)
        log = structlog.get_logger("t")
        log.debug("d")
        log.info("i")
        log.warning("w")
        log.error("e")
        logging.getLogger("lib").critical("c")
        configure_logging("info", stream=pipe)  # not the journal: plain JSON lines
        log.info("plain")
    lines = (tmp_path / "journal").read_text().splitlines()
    assert [line[:4] for line in lines] == ["<7>{", "<6>{", "<4>{", "<3>{", "<2>{"]
    assert json.loads(lines[2][3:])["event"] == "w"
    assert json.loads((tmp_path / "pipe").read_text())["event"] == "plain"
