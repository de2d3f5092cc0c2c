"""Log lines outside a request: a timestamp first, dashes for the request's fields;
records written by a thread of their own, which a stalled stream never lets block."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator

import pytest

from gateway.logs import (
    _stop_writer,
    configure,
    dropped_records,
    make_handler,
    request_fields,
    write_directly,
)


def _line(log_format: str) -> str:
    stream = io.StringIO()
    handler = make_handler("json" if log_format == "json" else "text", stream)
    record = logging.LogRecord("polygraph", logging.INFO, __file__, 1, "ready", None, None)
    handler.handle(record)
    return stream.getvalue().strip()


def test_text_lines_start_with_a_timestamp() -> None:
    date, time_of_day, level, rest = _line("text").split(" ", 3)
    assert len(date) == 10 and date[4] == "-" and time_of_day[2] == ":"
    assert (level, rest) == ("INFO", "polygraph [-]: ready")


def test_json_records_carry_every_field() -> None:
    record = json.loads(_line("json"))
    assert record["level"] == "INFO" and record["logger"] == "polygraph"
    assert record["message"] == "ready" and record["time"][:2] == "20"
    assert {record[k] for k in ("request_id", "trace_id", "principal_id", "operation")} == {"-"}


class _StalledStream(io.StringIO):
    """A stream whose writes wait until released, like a pipe nobody reads."""

    def __init__(self) -> None:
        super().__init__()
        self.writing = threading.Event()
        self.released = threading.Event()

    def write(self, text: str) -> int:
        self.writing.set()
        assert self.released.wait(60), "the test never released the stream"
        return super().write(text)


@pytest.fixture
def restored_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        _stop_writer()
        root.handlers[:] = handlers
        root.setLevel(level)


def test_a_stalled_stream_never_blocks_the_caller(restored_logging: None) -> None:
    stream = _StalledStream()
    configure("info", "text", stream=stream, max_queued=5)
    log = logging.getLogger("polygraph.test")
    log.info("record 0")
    assert stream.writing.wait(60)
    # The writer thread is stuck in `write` with record 0: these return at once, the
    # first five queued, the rest dropped.
    with request_fields({"type": "http", "headers": []}, "req-1"):
        for n in range(1, 20):
            log.info("record %d", n)
    assert dropped_records() == 14
    stream.released.set()
    _stop_writer()  # writes what is queued
    lines = stream.getvalue().splitlines()
    assert [line.rsplit(" ", 2)[-2:] for line in lines] == [["record", str(n)] for n in range(6)]
    # The request's fields were taken on the caller's thread, not the writer's.
    assert "[req-1]" in lines[1] and "[-]" in lines[0]


def test_a_queued_exception_keeps_its_traceback_apart(restored_logging: None) -> None:
    stream = io.StringIO()
    configure("info", "json", stream=stream)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("polygraph.test").exception("failed %s", "here")
    _stop_writer()
    record = json.loads(stream.getvalue())
    assert record["message"] == "failed here"
    assert "ValueError: boom" in record["exc_info"]


def test_written_directly_once_asked_with_nothing_left_queued(restored_logging: None) -> None:
    # What a server does as it shuts down: the process may end right after, past exit
    # hooks, so nothing may stay in the queue.
    stream = _StalledStream()
    configure("info", "text", stream=stream)
    log = logging.getLogger("polygraph.test")
    log.info("queued")
    assert stream.writing.wait(60)
    stream.released.set()
    write_directly()
    with request_fields({"type": "http", "headers": []}, "req-2"):
        log.info("direct")
    lines = stream.getvalue().splitlines()
    assert [line.rsplit(" ", 1)[-1] for line in lines] == ["queued", "direct"]
    assert "[req-2]" in lines[1]
