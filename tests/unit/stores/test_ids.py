"""Ids parsed from text are interchangeable with the standard library's."""

from __future__ import annotations

import uuid

import pytest

from stores.ids import parse_id


def test_a_parsed_id_equals_and_hashes_as_the_standard_one() -> None:
    standard = uuid.uuid4()
    for text in (str(standard), standard.hex, str(standard).upper()):
        parsed = parse_id(text)
        assert isinstance(parsed, uuid.UUID)
        assert parsed == standard and standard == parsed
        assert {standard: "found"}[parsed] == "found"
        assert {parsed: "found"}[standard] == "found"
        assert str(parsed) == str(standard)


@pytest.mark.parametrize("text", ["", "not-an-id", "{" + str(uuid.UUID(int=1)) + "}"])
def test_anything_but_the_hex_forms_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_id(text)
