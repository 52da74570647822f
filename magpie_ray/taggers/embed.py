"""Instruction embeddings for the global dedup step: a sentence-transformers model per actor.

Reads `instruction`. Writes `embedding` (list<float32>, L2-normalised, so squared L2 distance is
2 - 2 cos, the reference's dedup metric) and `embedding_model`. No row is dropped.
"""

from __future__ import annotations

import pyarrow as pa

from ..columns import set_columns
from ..config import EmbedderConfig
from ..engines.embedder import load_embedder
from .spec import Tagger

COLUMNS = {"embedding": pa.list_(pa.float32()), "embedding_model": pa.string()}


class Embedder:
    """Ray Data actor: the embedding model loaded once; `__call__` adds the embedding columns."""

    def __init__(self, config: EmbedderConfig, seed: int = 0):
        self.model = load_embedder(config.path, config.start_timeout_s, config.max_seq_length)
        self.model_name = config.name
        self.batch_size = config.encode_batch_size

    def embed(self, texts: list[str]):
        return self.model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        ).astype("float32")

    def __call__(self, batch):
        vectors = self.embed(batch.column("instruction").to_pylist())
        values = {
            "embedding": list(vectors),
            "embedding_model": [self.model_name] * len(vectors),
        }
        return set_columns(batch, values, COLUMNS)


TAGGER = Tagger(name="embedder", columns=COLUMNS, actor=Embedder, model_column="embedding_model")
