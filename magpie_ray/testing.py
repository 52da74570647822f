"""Tiny chat models for tests and benchmarks, built offline in seconds.

`build_tiny_chat_model` trains a 2-layer Llama (hidden 64, head_dim 32 as vLLM's CPU kernels
need) on a few hundred synthetic ChatML conversations rendered with a real tokenizer's chat
template, so that, given the pre-query template, it writes a short question and ends it with the
template's end-of-turn token, and answers in kind. Outputs are nonsense-free but trivial; what
matters is that real engines run a real architecture with a real vocabulary and chat template.

With `vocab_size`, the model gets its own byte-level BPE tokenizer of that size, trained on the
same conversations, with the template tokenizer's special tokens and chat template. The
throughput bench uses it: with a 49k vocabulary a CPU decode step costs in proportion to the
sequences in it (LM head and sampling), while with 512 tokens a step's fixed cost dominates, as a
GPU's does.
"""

from __future__ import annotations

import random
from pathlib import Path

TOPICS = [
    "the moon",
    "black holes",
    "tea",
    "bread",
    "rivers",
    "volcanoes",
    "chess",
    "music",
    "bees",
    "rain",
    "glass",
    "trains",
    "maps",
    "salt",
    "clouds",
    "paper",
    "bridges",
    "ice",
    "coffee",
    "sleep",
    "forests",
    "robots",
    "stars",
    "sand",
    "soap",
    "whales",
    "money",
    "time",
]
ASKS = [
    "Can you explain {t} to me?",
    "What is special about {t}?",
    "How does {t} work?",
    "Write a short note about {t}.",
    "Why do people care about {t}?",
    "Give me three facts about {t}.",
]
ANSWERS = [
    "Sure. {T} is a topic many people enjoy. It has a long history and a simple idea at its core.",
    "{T} is interesting because it changes over time. Here is a short summary of the main points.",
    "Here are three facts: {T} is common, {t} is useful, and {t} is studied by experts.",
    "Good question. In short, {t} works by following a few simple rules that are easy to learn.",
]


REASONINGS = [
    "The user asks about {t}. A short, friendly answer with one fact is enough.",
    "They want to know about {t}. I will keep it simple and clear.",
    "This is a question about {t}. First the idea, then a small example.",
]


def synthetic_conversations(
    n: int, seed: int = 0, thinking: bool = False
) -> list[list[dict[str, str]]]:
    """Two-turn chats about a topic; with `thinking`, every answer opens with a reasoning
    between <think> and </think>, as Qwen3-style reasoning models write."""
    rng = random.Random(seed)
    convs = []
    for _ in range(n):
        t = rng.choice(TOPICS)
        ask = rng.choice(ASKS).format(t=t)
        answer = rng.choice(ANSWERS).format(t=t, T=t.capitalize())
        if thinking:
            answer = f"<think>\n{rng.choice(REASONINGS).format(t=t)}\n</think>\n\n{answer}"
        convs.append([{"role": "user", "content": ask}, {"role": "assistant", "content": answer}])
    return convs


def small_vocab_tokenizer(template_tokenizer, vocab_size: int, seed: int = 0):
    """A byte-level BPE tokenizer of `vocab_size` ids trained on the synthetic conversations,
    with `template_tokenizer`'s special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    src = template_tokenizer
    texts = [src.apply_chat_template(c, tokenize=False) for c in synthetic_conversations(400, seed)]
    specials = list(dict.fromkeys(src.all_special_tokens))
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    named = {"bos_token": src.bos_token, "eos_token": src.eos_token}
    named |= {"pad_token": src.pad_token, "unk_token": src.unk_token}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        **{k: v for k, v in named.items() if v is not None},
        additional_special_tokens=[t for t in specials if t not in named.values()],
    )
    tokenizer.chat_template = src.chat_template
    return tokenizer


def build_tiny_chat_model(
    out_dir: str | Path,
    tokenizer_dir: str | Path,
    *,
    steps: int = 300,
    seed: int = 0,
    num_layers: int = 2,
    vocab_size: int | None = None,
    thinking: bool = False,
) -> Path:
    """Train and save a tiny chat model with the tokenizer of `tokenizer_dir` (or, with
    `vocab_size`, a small one of its own built from it); with `thinking`, it reasons between
    <think> markers before each answer (tokenizers whose chat template knows them: Qwen3);
    idempotent."""
    out_dir = Path(out_dir)
    if (out_dir / "config.json").is_file():
        return out_dir
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from .assets import save_model_folder

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    if vocab_size is not None:
        tokenizer = small_vocab_tokenizer(tokenizer, vocab_size, seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=num_layers,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    stream: list[int] = []
    for conv in synthetic_conversations(400, seed, thinking):
        text = tokenizer.apply_chat_template(conv, tokenize=False)
        stream.extend(tokenizer.encode(text, add_special_tokens=False))
    # Output rows of tokens the corpus never uses are zeroed (logit exactly 0), so the full
    # softmax equals one over the used ids plus a single column holding their log-count: exact
    # training at a fiftieth of the cost of a 49k-way softmax.
    used = torch.tensor(sorted(set(stream)), dtype=torch.long)
    position = torch.full((len(tokenizer),), -1, dtype=torch.long)
    position[used] = torch.arange(len(used))
    head = model.get_output_embeddings()
    with torch.no_grad():
        unused = torch.ones(len(tokenizer), dtype=torch.bool)
        unused[used] = False
        head.weight[unused] = 0.0
    unused_log_count = float(torch.log(unused.sum().float()))
    data = torch.tensor(stream, dtype=torch.long)
    optimizer = torch.optim.AdamW(
        [p for n, p in model.named_parameters() if "embed" not in n] + [head.weight], lr=3e-3
    )
    rng = torch.Generator().manual_seed(seed)
    window, batch = 96, 8
    model.train()
    for _ in range(steps):
        starts = torch.randint(0, len(data) - window - 1, (batch,), generator=rng)
        x = torch.stack([data[s : s + window + 1] for s in starts])
        hidden = model.model(input_ids=x[:, :-1]).last_hidden_state
        logits = hidden @ head.weight[used].T
        logits = torch.cat([logits, torch.full_like(logits[..., :1], unused_log_count)], -1)
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, len(used) + 1), position[x[:, 1:]].reshape(-1)
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():  # weight decay would move the zeroed rows off zero
            head.weight[unused] = 0.0
    model.eval()
    return save_model_folder(model, tokenizer, out_dir)


class PidStamper:
    """A Ray Data actor for actor-pool tests (Ray needs actor classes importable from the
    package): adds each row's worker process id as `pid`, after `delay_s` per call."""

    def __init__(self, delay_s: float = 0.2):
        self.delay_s = delay_s

    def __call__(self, batch):
        import os
        import time

        import pyarrow as pa

        time.sleep(self.delay_s)
        return batch.append_column("pid", pa.array([os.getpid()] * batch.num_rows, pa.int64()))


class PlacementProbe:
    """Ray Data actor for placement tests (in the package: Ray workers import it): each call
    reports the node it runs on, its placement group's bundle -> node map, and the placement
    group and node of a one-GPU task it starts, as vLLM's ray executor starts its workers."""

    def __call__(self, batch):
        import json

        import pyarrow as pa
        import ray
        from ray.util import get_current_placement_group, placement_group_table

        group = get_current_placement_group()
        bundles = placement_group_table(group)["bundles_to_node_id"] if group else {}
        task = ray.remote(_where_a_gpu_task_runs).options(num_gpus=1, num_cpus=0)
        child = ray.get(task.remote())
        report = {
            "actor_node": ray.get_runtime_context().get_node_id(),
            "group": group.id.hex() if group else None,
            "bundle_nodes": [bundles[i] for i in sorted(bundles)],
            "child_group": child[0],
            "child_node": child[1],
        }
        return pa.table({"report": [json.dumps(report)] * batch.num_rows})


def _where_a_gpu_task_runs() -> tuple[str | None, str]:
    import ray
    from ray.util import get_current_placement_group

    group = get_current_placement_group()
    return (group.id.hex() if group else None), ray.get_runtime_context().get_node_id()
