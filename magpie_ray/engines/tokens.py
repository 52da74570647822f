"""Tokenizers: loading one alone (for checks before a model loads) and using one from threads.

Prompts are rendered text that carries its own special tokens, so they are encoded with
`add_special_tokens=False`; a base model's plain document gets the tokenizer's own BOS. A Rust
tokenizer raises "Already borrowed" when two threads use it at once, so every use here (and any
caller's, through `TOKENIZER_LOCK`) is serialised.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence


def load_tokenizer(model_path: str, trust_remote_code: bool = False):
    """The generator's tokenizer alone (seconds), for template checks before the model loads."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)


TOKENIZER_LOCK = threading.Lock()


def encode(tokenizer, text: str) -> list[int]:
    """Token ids of an already-rendered prompt: the template carries its own special tokens."""
    with TOKENIZER_LOCK:
        return list(tokenizer.encode(text, add_special_tokens=False))


def encode_document(tokenizer, text: str) -> list[int]:
    """Token ids of plain text for a base model: the tokenizer adds its own BOS, if any."""
    with TOKENIZER_LOCK:
        return list(tokenizer.encode(text, add_special_tokens=True))


def decode(tokenizer, ids: Sequence[int]) -> str:
    with TOKENIZER_LOCK:
        return tokenizer.decode(list(ids), skip_special_tokens=True)


def chat_prompt_ids(tokenizer, messages: list[dict[str, str]], **template_kwargs) -> list[int]:
    """Token ids of `messages` rendered by the tokenizer's chat template, ready for a reply;
    `template_kwargs` are extra template variables (e.g. Qwen3's `enable_thinking`)."""
    with TOKENIZER_LOCK:
        text = tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, **template_kwargs
        )
    return encode(tokenizer, text)
