"""Embedders: text -> unit vectors, for the vector half of recall.

- :class:`WordLlamaEmbedder` (the default): wordllama's 256-dimension model,
  whose weights ship in its wheel; numpy only, CPU, no download. It is
  imported and loaded on first use, so an agent that has not recalled yet
  (and the CLI) never pays for it.
- :class:`GatewayEmbedder`: ``memory.embedding_model`` names a provider model,
  called through the model gateway's ``/v1/embeddings`` (or, outside Den,
  ``model.base_url``) with the agent's token.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Mapping, Sequence
from typing import Protocol

from den.api.contract import GATEWAY_TOKEN_ENV, GATEWAY_URL_ENV, provider_key_name
from den.runtime.memory.chunks import EMBED_CHARS

DEFAULT_MODEL = "wordllama"
#: wordllama pads a batch to its longest text: a few at a time keeps the token matrix small.
WORDLLAMA_BATCH = 4
_UNEMBEDDABLE = re.compile("[\x00\ud800-\udfff]")


class EmbedError(Exception):
    """The embedder could not answer; recall falls back to keywords."""


class Embedder(Protocol):
    name: str

    def dimension(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> list[list[float]]: ...


def bounded(texts: Sequence[str]) -> list[str]:
    """Each text cut to :data:`EMBED_CHARS` characters (memories are chunked to fit already;
    this guards the embedder against anything else, e.g. an old store's long memories), with
    NULs and lone surrogates (from a model's reply, say) as spaces: no provider refuses it."""
    return [_UNEMBEDDABLE.sub(" ", text[:EMBED_CHARS]) for text in texts]


def unit(vector: Sequence[float]) -> list[float]:
    length = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [float(x) / length for x in vector]


class WordLlamaEmbedder:
    name = DEFAULT_MODEL

    def __init__(self) -> None:
        self._model = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def _load(self):
        with self._lock:
            if self._model is None:
                from pathlib import Path

                import wordllama

                # wordllama's own disable_download looks in a folder its wheel does not ship:
                # point it at the wheel's weights.
                self._model = wordllama.WordLlama.load(cache_dir=Path(wordllama.__file__).parent,
                                                       disable_download=True)
        return self._model

    def dimension(self) -> int:
        return 256

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        try:
            vectors = self._load().embed(bounded(texts), norm=True, batch_size=WORDLLAMA_BATCH)
        except Exception as exc:
            raise EmbedError(f"wordllama failed: {exc}") from exc
        return [[float(x) for x in row] for row in vectors]


class GatewayEmbedder:
    """A provider's embedding model through the OpenAI ``/v1/embeddings`` protocol."""

    def __init__(self, model: str, base_url: str, token: str | None) -> None:
        self.name = model
        self.base_url = base_url.rstrip("/")
        self.token = token
        self._dimension: int | None = None

    @classmethod
    def from_env(cls, model: str, fallback_base_url: str | None, provider: str,
                 environ: Mapping[str, str]) -> GatewayEmbedder:
        if environ.get(GATEWAY_URL_ENV):
            return cls(model, environ[GATEWAY_URL_ENV], environ.get(GATEWAY_TOKEN_ENV))
        return cls(model, fallback_base_url or "", environ.get(provider_key_name(provider)))

    def dimension(self) -> int:
        if self._dimension is None:
            self._dimension = len(self.embed(["dimension probe"])[0])
        return self._dimension

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        if not self.base_url:
            raise EmbedError("no model gateway and no model.base_url to ask for embeddings")
        import httpx

        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            response = httpx.post(f"{self.base_url}/embeddings", headers=headers, timeout=60, trust_env=False,
                                  json={"model": self.name, "input": bounded(texts), "encoding_format": "float"})
        except httpx.HTTPError as exc:
            raise EmbedError(f"cannot reach {self.base_url}: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise EmbedError(f"{self.base_url}/embeddings answered {response.status_code}: {response.text[:200]}")
        try:
            data = sorted(response.json()["data"], key=lambda d: d["index"])
            vectors = [unit(d["embedding"]) for d in data]
        except (ValueError, KeyError, TypeError):
            raise EmbedError("the embeddings reply is not an OpenAI embeddings list") from None
        if len(vectors) != len(texts):
            raise EmbedError(f"asked for {len(texts)} embeddings, got {len(vectors)}")
        self._dimension = len(vectors[0])
        return vectors
