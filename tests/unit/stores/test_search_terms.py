"""How a search text splits into the terms keyword search weighs one by one."""

from __future__ import annotations

from stores.search.terms import MAX_TERMS, QueryTerms, split_terms


def test_words_and_quoted_phrases_are_terms() -> None:
    assert split_terms('retry "exponential backoff" policy') == QueryTerms(
        ("retry", '"exponential backoff"', "policy"), ()
    )


def test_a_minus_excludes_a_word_or_a_phrase() -> None:
    assert split_terms('backoff -sourdough -"sales report" --bread') == QueryTerms(
        ("backoff",), ("sourdough", '"sales report"', "bread")
    )


def test_or_lone_minus_and_empty_quotes_are_dropped_and_repeats_kept_once() -> None:
    assert split_terms('Retry or retry OR "" -  "unclosed phrase') == QueryTerms(
        ("Retry", '"unclosed phrase"'), ()
    )


def test_a_long_text_weighs_its_first_terms() -> None:
    words = [f"word{i}" for i in range(MAX_TERMS + 10)]
    assert split_terms(" ".join(words)).included == tuple(words[:MAX_TERMS])
