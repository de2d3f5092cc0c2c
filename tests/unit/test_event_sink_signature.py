"""The signature every event sink delivery carries, checked by the receiver's code
that README shows (so the example stays true to what the gateway sends)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from workers.event_sinks import DeliveryOptions, backoff_s, sign

README = Path(__file__).resolve().parents[2] / "README.md"
SECRET = "whsec_test-secret"
BODY = b'{"id":"42","type":"task.create"}'

Verify = Callable[[str, str, bytes], bool]


@pytest.fixture(scope="module")
def verify() -> Verify:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    (example,) = [block for block in blocks if "def verify(" in block]
    namespace: dict[str, object] = {}
    exec(re.sub(r"(?m)^  ", "", example), namespace)  # README's own code, indented in a list
    found: Verify = namespace["verify"]  # type: ignore[assignment]
    return found


def test_the_readme_receiver_accepts_what_the_gateway_signs(verify: Verify) -> None:
    assert verify(SECRET, sign(SECRET, int(time.time()), BODY), BODY)


def test_the_readme_receiver_refuses_a_changed_body_a_wrong_secret_and_a_replay(
    verify: Verify,
) -> None:
    now = int(time.time())
    assert not verify(SECRET, sign(SECRET, now, BODY), BODY + b" ")
    assert not verify(SECRET, sign("whsec_other", now, BODY), BODY)
    assert not verify(SECRET, sign(SECRET, now - 3600, BODY), BODY)


def test_backoff_doubles_up_to_its_ceiling_with_jitter_below_it() -> None:
    options = DeliveryOptions(min_backoff_s=1.0, max_backoff_s=10.0)
    for attempts, ceiling in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 10.0), (40, 10.0)):
        pauses = [backoff_s(attempts, options) for _ in range(50)]
        assert all(ceiling / 2 <= pause <= ceiling for pause in pauses)
