"""The local model (real weights) and the OpenAI-compatible provider (against a
small HTTP server this test starts on 127.0.0.1)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import numpy as np
import pytest

from stores import InvalidInput
from stores.embeddings import (
    EmbedderOptions,
    EmbeddingUnavailable,
    LocalEmbedder,
    OpenAIEmbedder,
    check_vector,
)


@pytest.fixture(scope="module")
def local() -> LocalEmbedder:
    return LocalEmbedder(EmbedderOptions(batch_size=4))


def _cosine(a: list[float], b: list[float]) -> float:
    return float(np.dot(a, b))


async def test_local_vectors_are_unit_length_and_384_wide(local: LocalEmbedder) -> None:
    vectors = await local.embed(["one sentence", "and another, somewhat longer, sentence"])
    assert [len(v) for v in vectors] == [384, 384]
    assert all(abs(float(np.linalg.norm(v)) - 1) < 1e-5 for v in vectors)
    assert await local.embed([]) == []


async def test_similar_sentences_are_closer_than_unrelated_ones(local: LocalEmbedder) -> None:
    food, bread, film, cat = await local.embed(
        [
            "A man is eating food.",
            "A man is eating a piece of bread.",
            "The new movie is awesome.",
            "A cat sleeps on the windowsill.",
        ]
    )
    # sentence-transformers gives 0.755 for the first pair with the float model.
    assert 0.70 < _cosine(food, bread) < 0.80
    assert _cosine(food, bread) > _cosine(food, film) + 0.5
    assert _cosine(food, bread) > _cosine(food, cat) + 0.4


async def test_batching_does_not_change_the_vectors(local: LocalEmbedder) -> None:
    texts = [f"sentence number {i} about topic {i % 3}" for i in range(10)]
    together = await local.embed(texts)
    alone = [(await local.embed([text]))[0] for text in texts[:3]]
    for a, b in zip(alone, together[:3], strict=True):
        assert _cosine(a, b) > 0.999


async def test_a_closed_embedder_refuses() -> None:
    embedder = LocalEmbedder()
    await embedder.aclose()
    with pytest.raises(EmbeddingUnavailable):
        await embedder.embed(["x"])


def test_client_vectors_are_checked() -> None:
    assert check_vector([1, 0, 0], 3, field="vector") == [1.0, 0.0, 0.0]
    with pytest.raises(InvalidInput, match="expected 384, got 2"):
        check_vector([1.0, 2.0], 384, field="vector")
    with pytest.raises(InvalidInput, match="finite"):
        check_vector([float("nan"), 1.0], 2, field="vector")


class _FakeServer(BaseHTTPRequestHandler):
    """`/v1/embeddings` that answers from a script: a list of (status, held) per call;
    a held call is never answered (its client has given up by the time the test ends)."""

    script: ClassVar[list[tuple[int, bool]]] = []
    released: ClassVar[threading.Event] = threading.Event()
    requests: ClassVar[list[dict[str, Any]]] = []
    dimension: ClassVar[int] = 8

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        type(self).requests.append(
            {"path": self.path, "body": body, "auth": self.headers.get("authorization")}
        )
        status, held = type(self).script.pop(0) if type(self).script else (200, False)
        if held:
            type(self).released.wait()
            return
        if status != 200:
            payload = b'{"error": "try again"}'
        else:
            data = [
                {"index": i, "embedding": [float(len(text))] + [1.0] * (self.dimension - 1)}
                for i, text in enumerate(body["input"])
            ]
            data.reverse()  # servers may answer out of order; `index` says which is which
            payload = json.dumps({"data": data, "model": body["model"]}).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        if status == 429:
            self.send_header("retry-after", "0")
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def fake_server() -> Iterator[str]:
    _FakeServer.script = []
    _FakeServer.requests = []
    _FakeServer.released = threading.Event()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        _FakeServer.released.set()
        server.shutdown()
        server.server_close()
        thread.join()


def _options(url: str, **overrides: Any) -> EmbedderOptions:
    values: dict[str, Any] = {
        "provider": "openai",
        "model": "fake-embedder",
        "dimension": 8,
        "base_url": url,
        "api_key": "secret",
        "batch_size": 3,
        # Nothing here is slow but a held answer: a timeout no busy machine misses.
        "timeout": 5.0,
        "max_retries": 2,
        "backoff": 0.01,
    }
    values.update(overrides)
    return EmbedderOptions(**values)


async def test_openai_provider_batches_and_keeps_order(fake_server: str) -> None:
    embedder = OpenAIEmbedder(_options(fake_server))
    try:
        texts = ["a", "bb", "ccc", "dddd", "eeeee", "ffffff", "g"]
        vectors = await embedder.embed(texts)
    finally:
        await embedder.aclose()
    assert [len(r["body"]["input"]) for r in _FakeServer.requests] == [3, 3, 1]
    assert all(r["path"] == "/v1/embeddings" for r in _FakeServer.requests)
    assert _FakeServer.requests[0]["auth"] == "Bearer secret"
    assert _FakeServer.requests[0]["body"]["model"] == "fake-embedder"
    # The first component carries the text's length; vectors come back normalised.
    lengths = [v[0] / v[1] for v in vectors]
    assert [round(x) for x in lengths] == [len(t) for t in texts]
    assert all(abs(float(np.linalg.norm(v)) - 1) < 1e-9 for v in vectors)


async def test_openai_provider_retries_server_errors(fake_server: str) -> None:
    _FakeServer.script = [(503, False), (429, False)]
    embedder = OpenAIEmbedder(_options(fake_server))
    try:
        vectors = await embedder.embed(["retry me"])
    finally:
        await embedder.aclose()
    assert len(vectors) == 1
    assert len(_FakeServer.requests) == 3


async def test_openai_provider_gives_up_after_its_retries(fake_server: str) -> None:
    _FakeServer.script = [(503, False)] * 5
    embedder = OpenAIEmbedder(_options(fake_server, max_retries=2))
    try:
        with pytest.raises(EmbeddingUnavailable, match="failed 3 times"):
            await embedder.embed(["never"])
    finally:
        await embedder.aclose()
    assert len(_FakeServer.requests) == 3


async def test_openai_provider_times_out_and_retries(fake_server: str) -> None:
    # The first answer never comes while the test runs; the timeout is one a local
    # answer meets on a busy machine, so only the held request can miss it.
    _FakeServer.script = [(200, True)]
    embedder = OpenAIEmbedder(_options(fake_server, timeout=2.0, max_retries=1))
    try:
        vectors = await embedder.embed(["slow, then fast"])
    finally:
        await embedder.aclose()
    assert len(vectors) == 1
    assert len(_FakeServer.requests) == 2
    assert not _FakeServer.released.is_set()


async def test_openai_provider_does_not_retry_a_refusal(fake_server: str) -> None:
    _FakeServer.script = [(400, False)]
    embedder = OpenAIEmbedder(_options(fake_server))
    try:
        with pytest.raises(EmbeddingUnavailable, match="refused: HTTP 400"):
            await embedder.embed(["bad"])
    finally:
        await embedder.aclose()
    assert len(_FakeServer.requests) == 1


async def test_openai_provider_checks_the_dimension(fake_server: str) -> None:
    embedder = OpenAIEmbedder(_options(fake_server, dimension=16))
    try:
        with pytest.raises(EmbeddingUnavailable, match="returned 8 dimensions"):
            await embedder.embed(["x"])
    finally:
        await embedder.aclose()


async def test_an_unreachable_server_is_unavailable() -> None:
    embedder = OpenAIEmbedder(_options("http://127.0.0.1:9/v1", max_retries=1))
    try:
        with pytest.raises(EmbeddingUnavailable, match="failed 2 times"):
            await embedder.embed(["x"])
    finally:
        await embedder.aclose()
