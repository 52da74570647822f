"""Instruction embeddings for the global dedup step: a sentence-transformers model per actor.

Reads `instruction`. Writes `embedding` (list<float32>, L2-normalised, so squared L2 distance is
2 - 2 cos, the reference's dedup metric) and `embedding_model`. No row is dropped.
"""

from __future__ import annotations


class Embedder:
    """Ray Data actor: the embedding model loaded once; `__call__` adds the embedding columns."""

    def __init__(self, path: str, model_name: str, batch_size: int, max_seq_length: int | None):
        import torch
        from sentence_transformers import SentenceTransformer

        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = SentenceTransformer(path, device=device, local_files_only=True)
        if max_seq_length:
            self.model.max_seq_length = max_seq_length
        self.model_name = model_name
        self.batch_size = batch_size

    def embed(self, texts: list[str]):
        return self.model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        ).astype("float32")

    def __call__(self, batch):
        from .tag import add_columns

        vectors = self.embed(batch.column("instruction").to_pylist())
        columns = {
            "embedding": list(vectors),
            "embedding_model": [self.model_name] * len(vectors),
        }
        return add_columns(batch, columns)
