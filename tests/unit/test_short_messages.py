"""Messages and close reasons that may quote a client, cut to their bounds."""

from __future__ import annotations

from gateway.errors import MAX_MESSAGE_CHARS, shortened
from gateway.graphql_view import close_reason


def test_a_message_within_the_bound_is_kept_whole() -> None:
    message = "x" * MAX_MESSAGE_CHARS
    assert shortened(message) == message


def test_a_long_message_keeps_its_two_ends_and_says_how_much_is_left_out() -> None:
    message = "head " + "x" * 10_000 + " tail"
    short = shortened(message)
    half = MAX_MESSAGE_CHARS // 2
    assert short == f"{message[:half]} [... 8,986 characters left out ...] {message[-half:]}"


def test_a_close_reason_fits_123_bytes_without_splitting_a_character() -> None:
    assert close_reason("Signed out: logged out") == "Signed out: logged out"
    exactly = "é" * 61 + "x"  # 123 bytes
    assert close_reason(exactly) == exactly
    cut = close_reason("é" * 100)
    # 120 bytes hold 60 two-byte characters, then the ellipsis.
    assert cut == "é" * 60 + "..."
    odd = close_reason("x" + "é" * 100)
    assert odd == "x" + "é" * 59 + "..."
    assert len(odd.encode()) == 122
