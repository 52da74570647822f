"""The embedding model: sentence-transformers, loaded from a local folder on the GPU when there
is one, within its `start_timeout_s` (a failure is one line naming the config key)."""

from __future__ import annotations


def load_embedder(
    path: str, start_timeout_s: float, max_seq_length: int | None = None, key: str = "embedder"
):
    """A `SentenceTransformer` for `path` (never fetched from a hub)."""
    import torch
    from sentence_transformers import SentenceTransformer

    from . import start_model

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = start_model(
        key,
        "sentence-transformers",
        path,
        lambda: SentenceTransformer(path, device=device, local_files_only=True),
        start_timeout_s,
    )
    if max_seq_length:
        model.max_seq_length = max_seq_length
    return model
