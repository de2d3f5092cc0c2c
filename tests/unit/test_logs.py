"""Log lines outside a request: a timestamp first, dashes for the request's fields."""

from __future__ import annotations

import io
import json
import logging

from gateway.logs import make_handler


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
