"""The agent's memory in Chroma: mandates and findings, recalled by meaning."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from services.shared import embedding_model

logger = logging.getLogger(__name__)

COLLECTION = "agent-memory"


@dataclass(frozen=True)
class Recollection:
    """A remembered document and how far it is from the query (smaller is nearer)."""

    memory_id: str
    text: str
    distance: float
    metadata: dict[str, Any]


class AgentMemory:
    """A Chroma collection embedded with the baked MiniLM model, opened lazily."""

    def __init__(self, chroma_url: str, model_dir: Path) -> None:
        self._url = chroma_url
        self._embed = embedding_model.embedding_function(model_dir)
        self._collection: Any = None
        self._lock = threading.Lock()

    def remember(
        self, memory_id: str, text: str, **metadata: str | int | float
    ) -> None:
        """Store ``text`` under ``memory_id``, replacing any earlier version."""
        self._open().upsert(
            ids=[memory_id], documents=[text], metadatas=[metadata or None]
        )

    def recall(self, query: str, *, limit: int = 3) -> list[Recollection]:
        """Return the ``limit`` memories nearest in meaning to ``query``."""
        answer = self._open().query(query_texts=[query], n_results=limit)
        return [
            Recollection(memory_id, text or "", float(distance), dict(meta or {}))
            for memory_id, text, distance, meta in zip(
                answer["ids"][0],
                answer["documents"][0],
                answer["distances"][0],
                answer["metadatas"][0],
                strict=True,
            )
        ]

    def _open(self) -> Any:
        with self._lock:
            if self._collection is None:
                self._collection = self._client().get_or_create_collection(
                    COLLECTION,
                    embedding_function=self._embed,
                )
            return self._collection

    def _client(self) -> Any:
        import chromadb
        from chromadb.config import Settings as ChromaSettings

        parsed = urlparse(self._url)
        return chromadb.HttpClient(
            host=parsed.hostname or "localhost",
            port=parsed.port or (443 if parsed.scheme == "https" else 8000),
            ssl=parsed.scheme == "https",
            settings=ChromaSettings(anonymized_telemetry=False),
        )
