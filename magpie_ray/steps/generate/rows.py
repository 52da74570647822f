"""One generated row, start to end: pure apart from the engine Futures it waits on.

Reads seed rows (see `seeds.py`). A row's work is a generator (`generate_row`) that yields each
engine Future it needs and returns an `Outcome`: a kept row with the columns of
`schema.GENERATED_SCHEMA` or a dropped row with a reason:

- `instruction_truncated`: the instruction hit its max_tokens (finish_reason "length")
- `instruction_empty`: nothing but whitespace before the stop (or after the sanitizer)
- `prompt_too_long`: the response prompt leaves no room under the responder's max_model_len
- `response_empty`: the answer is empty (a reasoning that never ended is kept, see below)

Per row, in order: the generator samples the instruction from the row's pre-query (its system
prompt and decoding-grid cell come from the seed row; the date of a dated template is the day the
row runs; with `banned_first_token_prefixes` or `flaming_tokens`, a one-token request picks the
first token, without the banned ones and at temperature x factor, and a second request continues
from it, since vLLM V1 has no per-request logits processors); the sanitizer (optional) cleans it,
keeping `raw_instruction` and recording the rules that fired; the responder (the generator, or
`generate.responder`) answers it from its chat template in its thinking mode, and its reasoning
goes to `response_reasoning`, its answer to `response`. A reasoning that never ends (max_tokens)
keeps the row with an empty `response` and finish reason "length". With preference sampling one
more request (n=K) writes `responses`; with a base model its engine writes `base_output`; both run
beside the response. Turns after the first continue the conversation: a follow-up instruction
sampled by the generator from the history (answers only, under the family's `multi_turn` system
prompt when it has one) with `generate.follow_up`'s settings (the reference's by default: T=1,
top_p=1, no sanitizer or ban), and its answer. A follow-up turn that fails (truncated, empty, too
long, unclosed reasoning) ends the conversation early instead of dropping the row: `num_turns` says
how many turns it has and `multi_turn_stop_reason` why it stopped. `instruction` / `response` are
always the first turn.
`row_pool.py` drives many rows at once; `step.py` runs them on Ray.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Generator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from ...config import GenerateConfig
from ...conversations import to_turns
from ...engines.base import Completion, SamplingSpec
from ...engines.tokens import decode
from ...families.reasoning import Reasoned
from ...sanitize import sanitize_instruction
from ...sanitize_reference import reference_truncate, variant_for
from .base_answers import BaseAnswerer
from .chat_model import ChatModel
from .sampling import (
    banned_first_token_ids,
    banned_prefixes,
    instruction_specs,
    preference_spec,
    response_spec,
    sanitizes,
    turn_seed,
)
from .schema import BatchResult, dropped_row

# The family system prompt that follow-up instructions are sampled under, when it has one.
MULTI_TURN_PROMPT = "multi_turn"


@dataclass(frozen=True)
class _Instruction:
    text: str
    finish_reason: str
    num_output_tokens: int


@dataclass(frozen=True)
class RowContext:
    """What every row of an actor shares."""

    generator: ChatModel  # writes instructions
    responder: ChatModel  # writes responses: the generator, or generate.responder
    cfg: GenerateConfig
    banned_ids: tuple[int, ...]
    sanitize: str | None  # None = off, "ours", or the reference's variant ("llama-3", "gemma-2")
    follow_up_banned_ids: tuple[int, ...]
    base: BaseAnswerer | None


@dataclass
class Outcome:
    kept: dict | None = None
    dropped: dict | None = None
    output_tokens: int = 0


@dataclass
class _Turns:
    """The conversation so far (answers only) and what each turn recorded."""

    history: list[dict[str, str]]
    instruction_reasons: list[str] = field(default_factory=list)
    response_reasons: list[str] = field(default_factory=list)
    rules: list = field(default_factory=list)
    reasonings: list[str | None] = field(default_factory=list)

    def add(self, instruction: _Instruction, rules, response: Completion, parsed: Reasoned):
        self.instruction_reasons.append(instruction.finish_reason)
        self.response_reasons.append(response.finish_reason)
        self.rules.append(rules)
        self.reasonings.append(parsed.reasoning)


# A row's work is a generator: it yields each engine Future it needs and is sent the Future's
# result (or thrown its exception), and returns its Outcome; `row_pool.RowPool` drives them.
RowSteps = Generator[Future, Any, Any]


def sample_instruction(
    ctx: RowContext,
    prompt: list[int],
    spec: SamplingSpec,
    banned_ids: tuple[int, ...],
    flaming: float | None = None,
) -> RowSteps:
    """An instruction; with banned first tokens or flaming tokens, its first token is a request
    of its own (without those tokens, at temperature x flaming), and the rest continues it."""
    engine = ctx.generator.engine
    flaming = flaming if flaming and spec.temperature > 0 else None
    if not banned_ids and not flaming:
        done = yield engine.submit(prompt, spec)
        return _Instruction(done.text, done.finish_reason, done.num_output_tokens)
    first_spec = dataclasses.replace(spec, max_tokens=1, banned_token_ids=banned_ids)
    if flaming:
        first_spec = dataclasses.replace(first_spec, temperature=spec.temperature * flaming)
    first = yield engine.submit(prompt, first_spec)
    if first.finish_reason == "stop" or spec.max_tokens == 1:
        return _Instruction(first.text, first.finish_reason, first.num_output_tokens)
    rest = yield engine.submit(
        prompt + list(first.token_ids), dataclasses.replace(spec, max_tokens=spec.max_tokens - 1)
    )
    text = decode(engine.tokenizer, first.token_ids) + rest.text
    return _Instruction(text, rest.finish_reason, 1 + rest.num_output_tokens)


def clean_instruction(sanitize: str | None, raw: str) -> tuple[str, tuple[str, ...] | None]:
    """`raw` sanitized by `sanitize` (a rules variant, None = off), and the rules that fired."""
    if sanitize is None:
        return raw, None
    result = sanitize_instruction(raw) if sanitize == "ours" else reference_truncate(raw, sanitize)
    return result.text, result.rules


def generate_row(ctx: RowContext, row: dict) -> RowSteps:
    """One row, start to end (returns its Outcome); see `RowSteps`."""
    gen, res, cfg = ctx.generator, ctx.responder, ctx.cfg
    today = datetime.date.today()
    out = Outcome()
    pre_query, pre_query_ids = gen.pre_query(row["system_prompt_key"], today)
    inst_spec = instruction_specs([row], gen.family, gen.stop_ids, cfg)[0]
    inst = yield from sample_instruction(
        ctx, pre_query_ids, inst_spec, ctx.banned_ids, cfg.instruction.flaming_tokens
    )
    out.output_tokens += inst.num_output_tokens
    if inst.finish_reason == "length":
        out.dropped = dropped_row(row, "instruction_truncated", inst.text)
        return out
    raw = inst.text.strip()
    instruction, rules = clean_instruction(ctx.sanitize, raw)
    if not instruction:
        out.dropped = dropped_row(row, "instruction_empty", inst.text)
        return out
    turns = _Turns(history=[{"role": "user", "content": instruction}])
    ids = res.response_prompt_ids(turns.history, today)
    if len(ids) >= res.max_model_len:
        out.dropped = dropped_row(row, "prompt_too_long", instruction)
        return out
    spec = response_spec(row, len(ids), res.family, res.response_stop_ids, cfg, res.max_model_len)
    response_future = res.engine.submit(ids, spec)
    pref = cfg.preference
    pref_spec = preference_spec(row, spec, cfg, len(ids), res.max_model_len)
    pref_future = res.engine.submit(ids, pref_spec) if pref.num_responses else None
    base_future = ctx.base.submit(instruction, row["seed"]) if ctx.base else None
    resp = yield response_future
    out.output_tokens += resp.num_output_tokens
    parsed = res.parse(resp)
    if parsed.closed and not parsed.answer:
        out.dropped = dropped_row(row, "response_empty", instruction)
        return out
    turns.history.append({"role": "assistant", "content": parsed.answer})
    turns.add(inst, rules, resp, parsed)
    stop_reason = None
    if cfg.num_turns > 1 and not parsed.closed:
        stop_reason = "reasoning_unclosed"
    elif cfg.num_turns > 1:
        stop_reason, tokens = yield from _follow_up_turns(ctx, row, inst_spec, turns, today)
        out.output_tokens += tokens

    samples: list[tuple[Completion, Reasoned]] = []
    if pref_future is not None:
        done = yield pref_future
        samples = [(s, res.parse(s)) for s in (done.samples or (done,))]
        out.output_tokens += sum(s.num_output_tokens for s, _ in samples)
    base = (yield base_future) if base_future is not None else None
    out.kept = _kept_record(ctx, row, pre_query, inst, raw, rules, spec, pref_spec, len(ids))
    out.kept |= {
        "instruction": instruction,
        "response": parsed.answer,
        "conversations": to_turns(turns.history),
        "response_finish_reason": resp.finish_reason,
        "response_tokens": resp.num_output_tokens,
        "num_turns": len(turns.history) // 2,
        "turn_instruction_finish_reasons": turns.instruction_reasons,
        "turn_response_finish_reasons": turns.response_reasons,
        # per turn: its rules, null where that turn's sanitizer was off; null when all were
        "turn_sanitizer_rules": None
        if all(r is None for r in turns.rules)
        else [None if r is None else list(r) for r in turns.rules],
        "multi_turn_stop_reason": stop_reason,
        "responses": [p.answer for _, p in samples] if samples else None,
        "responses_finish_reasons": [s.finish_reason for s, _ in samples] if samples else None,
        "response_reasoning": parsed.reasoning,
        "turn_response_reasonings": turns.reasonings if res.family.thinking else None,
        "responses_reasoning": (
            [p.reasoning or "" for _, p in samples] if samples and res.family.thinking else None
        ),
        "base_output": base.text if base and base.finish_reason != "prompt_too_long" else None,
        "base_finish_reason": base.finish_reason if base is not None else None,
    }
    return out


def _kept_record(
    ctx: RowContext,
    row: dict,
    pre_query: str,
    inst: _Instruction,
    raw: str,
    rules,
    spec: SamplingSpec,
    pref_spec: SamplingSpec,
    prompt_tokens: int,
) -> dict:
    """The columns of a kept row that describe how it was sampled."""
    gen, res, cfg = ctx.generator, ctx.responder, ctx.cfg
    pref = cfg.preference
    default_key = row["system_prompt_key"] is None
    return {
        "uuid": row["uuid"],
        "model": gen.name,
        "gen_input_configs": {
            "temperature": row["temperature"],
            "top_p": row["top_p"],
            "min_p": row["min_p"],
            "max_tokens": row["max_tokens"],
            "input_generator": gen.name,
            "seed": row["seed"],
            "pre_query_template": pre_query,
            "system_prompt_key": row["system_prompt_key"],
            "stop_at_newline": cfg.instruction.stop_at_newline,
            "extra_stop_strings": list(cfg.instruction.extra_stop_strings),
            "sanitizer_rules": None if rules is None else list(rules),
            "banned_first_token_prefixes": list(banned_prefixes(gen.family, cfg)),
            "num_turns": cfg.num_turns,
            "pre_query_deviation": gen.deviation if default_key else None,
            "flaming_tokens": cfg.instruction.flaming_tokens,
            "follow_up": _follow_up_record(cfg),
        },
        "gen_response_configs": {
            "temperature": cfg.response.temperature,
            "top_p": cfg.response.top_p,
            "repetition_penalty": cfg.response.repetition_penalty,
            "max_tokens": spec.max_tokens,
            "output_generator": res.name,
            "engine": res.engine_kind,
            "num_responses": pref.num_responses,
            "responses_temperature": pref.temperature if pref.num_responses else None,
            "responses_top_p": pref.top_p if pref.num_responses else None,
            "responses_max_tokens": pref_spec.max_tokens if pref.num_responses else None,
            "thinking": res.thinking,
        },
        "instruction_finish_reason": inst.finish_reason,
        "instruction_tokens": inst.num_output_tokens,
        "response_prompt_tokens": prompt_tokens,
        "raw_instruction": raw,
        "base_generator": ctx.base.name if ctx.base else None,
        "index": row["index"],
    }


def _follow_up_record(cfg: GenerateConfig) -> dict | None:
    """How follow-up instructions were sampled (null for single-turn rows)."""
    if cfg.num_turns < 2:
        return None
    fu = cfg.follow_up
    return {
        "temperature": fu.temperature,
        "top_p": fu.top_p,
        "min_p": fu.min_p,
        "max_tokens": fu.max_tokens or cfg.instruction.max_tokens,
        "sanitize": fu.sanitize,
        "banned_first_token_prefixes": list(fu.banned_first_token_prefixes),
    }


def _follow_up_turns(
    ctx: RowContext, row: dict, inst_spec: SamplingSpec, turns: _Turns, today: datetime.date
) -> RowSteps:
    """Extend `turns` to `num_turns` turns; returns (why it stopped early or None, tokens)."""
    gen, res, cfg = ctx.generator, ctx.responder, ctx.cfg
    fu = cfg.follow_up
    system = gen.family.system_prompts.get(MULTI_TURN_PROMPT)
    tokens = 0
    for turn in range(2, cfg.num_turns + 1):
        seed = turn_seed(row["seed"], turn)
        prompt = gen.follow_up_prompt_ids(turns.history, system, today)
        room = gen.max_model_len - len(prompt)
        if room <= 1:
            return "prompt_too_long", tokens
        spec = dataclasses.replace(
            inst_spec,
            temperature=fu.temperature,
            top_p=fu.top_p,
            min_p=fu.min_p,
            seed=seed,
            max_tokens=min(fu.max_tokens or cfg.instruction.max_tokens, room),
        )
        inst = yield from sample_instruction(ctx, prompt, spec, ctx.follow_up_banned_ids)
        tokens += inst.num_output_tokens
        if inst.finish_reason == "length":
            return "instruction_truncated", tokens
        sanitizer = _sanitizer(gen.family, cfg) if fu.sanitize else None
        instruction, rules = clean_instruction(sanitizer, inst.text.strip())
        if not instruction:
            return "instruction_empty", tokens
        messages = [*turns.history, {"role": "user", "content": instruction}]
        ids = res.response_prompt_ids(messages, today)
        if len(ids) >= res.max_model_len:
            return "prompt_too_long", tokens
        spec = response_spec(
            row, len(ids), res.family, res.response_stop_ids, cfg, res.max_model_len
        )
        resp = yield res.engine.submit(ids, dataclasses.replace(spec, seed=seed))
        tokens += resp.num_output_tokens
        parsed = res.parse(resp)
        if not parsed.closed:
            return "reasoning_unclosed", tokens
        if not parsed.answer:
            return "response_empty", tokens
        turns.history += [messages[-1], {"role": "assistant", "content": parsed.answer}]
        turns.add(inst, rules, resp, parsed)
    return None, tokens


def _sanitizer(family, cfg: GenerateConfig) -> str:
    """The sanitizer: "ours", or the reference rule's variant for the family
    (generate.instruction.sanitizer, else the family's default)."""
    chosen = cfg.instruction.sanitizer or family.sanitizer
    return variant_for(family.name) if chosen == "reference" else "ours"


def row_context(
    generator: ChatModel,
    cfg: GenerateConfig,
    base: BaseAnswerer | None = None,
    responder: ChatModel | None = None,
) -> RowContext:
    tokenizer = generator.tokenizer
    return RowContext(
        generator=generator,
        responder=responder or generator,
        cfg=cfg,
        banned_ids=banned_first_token_ids(tokenizer, banned_prefixes(generator.family, cfg)),
        sanitize=_sanitizer(generator.family, cfg) if sanitizes(generator.family, cfg) else None,
        follow_up_banned_ids=banned_first_token_ids(
            tokenizer, tuple(cfg.follow_up.banned_first_token_prefixes)
        ),
        base=base,
    )


def batch_result(outcomes: list[Outcome]) -> BatchResult:
    """Kept and dropped rows, each in index order, and the tokens they took."""
    return BatchResult(
        kept=sorted((o.kept for o in outcomes if o.kept), key=lambda r: r["index"]),
        dropped=sorted((o.dropped for o in outcomes if o.dropped), key=lambda d: d["index"]),
        output_tokens=sum(o.output_tokens for o in outcomes),
    )
