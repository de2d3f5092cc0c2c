"""A search text split into the terms keyword search matches one by one.

`websearch_to_tsquery` on the whole text demands every word, so a question in a
person's words finds nothing. Instead each term (a word or a "quoted phrase") is
its own optional query, stemmed and stop-worded by PostgreSQL; an item matches
when it holds any of them and ranks by how many it holds. `-word` and
`-"a phrase"` exclude; `or` is dropped, as every term is optional already.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Terms a search weighs, each side; the rest of a (long, pasted) text is ignored.
MAX_TERMS = 32

_TERM = re.compile(r'(-?)(?:"([^"]*)"?|([^\s"]+))')


@dataclass(frozen=True, slots=True)
class QueryTerms:
    """Terms in web search syntax, each a word or a quoted phrase, in query order."""

    included: tuple[str, ...]
    excluded: tuple[str, ...]


def split_terms(text: str) -> QueryTerms:
    included: dict[str, str] = {}
    excluded: dict[str, str] = {}
    for match in _TERM.finditer(text):
        negated, phrase, word = match.groups()
        if phrase is not None:
            term = f'"{phrase.strip()}"' if phrase.strip() else ""
        else:
            # `--word` is still one exclusion, never a double negation.
            term = word.lstrip("-")
            if term.lower() == "or":
                continue
        if not term:
            continue
        side = excluded if negated else included
        if len(side) < MAX_TERMS:
            side.setdefault(term.lower(), term)
    return QueryTerms(tuple(included.values()), tuple(excluded.values()))
