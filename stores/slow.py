"""Store calls slower than a threshold are logged at WARNING (`polygraph.slow`) with the
store, the duration and the statement. Statements are parameterised, so their text
holds no values; it is cut to its first 120 characters, on one line."""

from __future__ import annotations

import logging

logger = logging.getLogger("polygraph.slow")

_SHOWN_CHARS = 120


def observe(store: str, seconds: float, statement: str, *, threshold_s: float) -> None:
    if seconds < threshold_s:
        return
    text = " ".join(statement.split())
    if len(text) > _SHOWN_CHARS:
        text = text[: _SHOWN_CHARS - 3] + "..."
    logger.warning("slow %s call: %.0f ms: %s", store, seconds * 1000, text)
