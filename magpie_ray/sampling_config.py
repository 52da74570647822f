"""The generate step's sampling schemas (`generate.instruction`, `.response`, `.follow_up`,
`.preference`, and the decoding grid's cells): part of `config.py`'s schema, which re-exports
them. A bottom-layer module: it imports only `choices`."""

from __future__ import annotations

from dataclasses import dataclass, field

from .choices import PreQuery, SanitizerRules, Thinking


@dataclass
class DecodingCell:
    """One cell of a decoding grid: instruction sampling settings and their share of the rows."""

    temperature: float = 1.0
    top_p: float = 1.0
    min_p: float = 0.0
    weight: float = 1.0


@dataclass
class InstructionSampling:
    """Sampling of the user instruction from the pre-query template (reference defaults)."""

    temperature: float = 1.0
    top_p: float = 1.0
    min_p: float = 0.0
    max_tokens: int = 2048
    stop_at_newline: bool = True  # the reference's "early stopping": one line per instruction
    # More texts that end an instruction (not a response), after the family's stop strings;
    # ["assistant"] reproduces the reference, which also cuts any instruction using the word.
    extra_stop_strings: list[str] = field(default_factory=list)
    # A decoding grid (the paper's Air / Pro grids): rows are spread over the cells in proportion
    # to their weights; empty = every row samples with temperature / top_p / min_p above.
    grid: list[DecodingCell] = field(default_factory=list)
    # None = the family's default (its YAML keys of the same names).
    sanitize: bool | None = None  # clean labels, numbering and leaked answers (sanitize.py)
    # which rules sanitize: ours, or the reference's truncation (sanitize_reference.py)
    sanitizer: SanitizerRules | None = None
    banned_first_token_prefixes: list[str] | None = None  # e.g. ["#"]: no markdown header first
    # "Flaming tokens" (the reference's Qwen2.5-Math script): the first token's logits are
    # divided by this factor, i.e. it samples at temperature x factor; None = off.
    flaming_tokens: float | None = None
    # The default pre-query (rows without a named system prompt): the family's own, the chat
    # template's rendering, or the user turn without a system turn; `mode=probe` compares them
    pre_query: PreQuery = PreQuery.family


@dataclass
class FollowUpSampling:
    """Sampling of follow-up instructions (turns 2..N), apart from the first turn's: the
    reference samples them at T=1, top_p=1, without sanitizer, first-token ban or grid cell."""

    temperature: float = 1.0
    top_p: float = 1.0
    min_p: float = 0.0
    max_tokens: int | None = None  # None = generate.instruction.max_tokens
    sanitize: bool = False
    banned_first_token_prefixes: list[str] = field(default_factory=list)


@dataclass
class ResponseSampling:
    """Sampling of the assistant response (greedy by default, as the reference)."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 4096
    repetition_penalty: float = 1.0  # vLLM's: > 1 discourages tokens already in prompt or answer
    # A reasoning model's mode (Qwen3: on/off, DeepSeek-R1: on, gpt-oss: low/medium/high);
    # None = the family's default. Reasoning goes to `response_reasoning`, never `response`.
    thinking: Thinking | None = None


@dataclass
class PreferenceSampling:
    """K more responses per instruction, sampled in one request (n=K, so the prompt is shared),
    stored as `responses` for preference pairs once a reward model scores them."""

    num_responses: int = 0  # K >= 2 turns it on; 0 = off
    temperature: float = 0.8  # the reference's
    top_p: float = 1.0
    max_tokens: int | None = None  # None = generate.response.max_tokens
