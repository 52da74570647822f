"""One generated row, start to end: pure apart from the engine Futures it waits on.

Reads seed rows (see `seeds.py`). A row's work is a generator (`generate_row`) that yields each
engine Future it needs and returns an `Outcome`: a kept row with the columns of
`GENERATED_SCHEMA` (the released Magpie fields that apply, plus finish reasons and token counts)
or a dropped row with a reason:

- `instruction_truncated`: the instruction hit its max_tokens (finish_reason "length")
- `instruction_empty`: nothing but whitespace before the stop (or after the sanitizer)
- `prompt_too_long`: the response prompt leaves no room under model.max_model_len
- `response_empty`: the response is empty

Per row, in order: the instruction is sampled from the row's pre-query (its system prompt and
decoding-grid cell come from the seed row; with `banned_first_token_prefixes`, a one-token
request that bans them picks the first token and a second request continues from it, since vLLM
V1 has no per-request logits processors); the sanitizer (optional) cleans it, keeping
`raw_instruction` and recording the rules that fired; the response is sampled from the chat
template. With preference sampling one more request (n=K) writes `responses`; with a base model
its engine writes `base_output`; both are submitted with the response and run beside it. Turns
after the first continue the conversation: a follow-up instruction sampled from the history
(under the family's `multi_turn` system prompt, when it has one) and its response, without the
system prompt. A follow-up turn that fails (truncated, empty, too long) ends the conversation
early instead of dropping the row: `num_turns` says how many turns it has and
`multi_turn_stop_reason` why it stopped. `instruction` / `response` are always the first turn.
`row_pool.py` drives many rows at once; `step.py` runs them on Ray.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from ... import templates
from ...config import GenerateConfig
from ...conversations import to_turns
from ...engines.base import Completion, Engine, SamplingSpec
from ...engines.tokens import TOKENIZER_LOCK, chat_prompt_ids, decode, encode
from ...sanitize import sanitize_instruction
from .base_answers import BaseAnswerer
from .sampling import (
    banned_first_token_ids,
    banned_prefixes,
    instruction_specs,
    preference_spec,
    response_spec,
    sanitizes,
    turn_seed,
)
from .seeds import DEFAULT_SYSTEM_PROMPT

STEP = "generate"

# The family system prompt that follow-up instructions are sampled under, when it has one.
MULTI_TURN_PROMPT = "multi_turn"

_TURN = pa.struct([("from", pa.string()), ("value", pa.string())])

_STRINGS = pa.list_(pa.string())

GENERATED_SCHEMA = pa.schema(
    [
        ("uuid", pa.string()),
        ("model", pa.string()),
        (
            "gen_input_configs",
            pa.struct(
                [
                    ("temperature", pa.float64()),
                    ("top_p", pa.float64()),
                    ("min_p", pa.float64()),
                    ("max_tokens", pa.int64()),
                    ("input_generator", pa.string()),
                    ("seed", pa.int64()),
                    ("pre_query_template", pa.string()),
                    ("system_prompt_key", pa.string()),
                    ("stop_at_newline", pa.bool_()),
                    ("extra_stop_strings", _STRINGS),
                    ("sanitizer_rules", _STRINGS),  # null: sanitizer off; first turn's rules
                    ("banned_first_token_prefixes", _STRINGS),
                    ("num_turns", pa.int64()),  # requested; the `num_turns` column has the result
                ]
            ),
        ),
        ("instruction", pa.string()),
        ("response", pa.string()),
        ("conversations", pa.list_(_TURN)),
        (
            "gen_response_configs",
            pa.struct(
                [
                    ("temperature", pa.float64()),
                    ("top_p", pa.float64()),
                    ("max_tokens", pa.int64()),
                    ("output_generator", pa.string()),
                    ("engine", pa.string()),
                    ("num_responses", pa.int64()),  # K of `responses`; 0 = off
                    ("responses_temperature", pa.float64()),
                    ("responses_top_p", pa.float64()),
                    ("responses_max_tokens", pa.int64()),
                ]
            ),
        ),
        ("instruction_finish_reason", pa.string()),
        ("response_finish_reason", pa.string()),
        ("instruction_tokens", pa.int64()),
        ("response_tokens", pa.int64()),
        ("response_prompt_tokens", pa.int64()),
        ("raw_instruction", pa.string()),  # the first instruction before the sanitizer
        ("num_turns", pa.int64()),
        ("turn_instruction_finish_reasons", _STRINGS),  # one per turn in `conversations`
        ("turn_response_finish_reasons", _STRINGS),
        ("turn_sanitizer_rules", pa.list_(_STRINGS)),  # rules per turn; null: sanitizer off
        ("multi_turn_stop_reason", pa.string()),  # null unless a follow-up turn failed
        ("responses", _STRINGS),  # preference samples of the first turn; null when off
        ("responses_finish_reasons", _STRINGS),
        ("base_output", pa.string()),  # the base model's answer; null when off
        ("base_generator", pa.string()),
        ("base_finish_reason", pa.string()),
        ("index", pa.int64()),
    ]
)


@dataclass
class BatchResult:
    kept: list[dict]
    dropped: list[dict]
    output_tokens: int


def _drop(row: dict, reason: str, detail: str = "") -> dict:
    return {
        "uuid": row["uuid"],
        "index": row["index"],
        "step": STEP,
        "reason": reason,
        "detail": detail,
    }


@dataclass(frozen=True)
class _Instruction:
    text: str
    finish_reason: str
    num_output_tokens: int


@dataclass(frozen=True)
class RowContext:
    """What every row of a batch shares."""

    engine: Engine
    family: templates.Family
    cfg: GenerateConfig
    stop_ids: tuple[int, ...]
    banned_ids: tuple[int, ...]
    sanitize: bool
    max_model_len: int
    model_name: str
    engine_kind: str
    base: BaseAnswerer | None
    # system_prompt_key -> (pre-query text, its token ids): every row of a key shares them.
    pre_queries: dict = dataclasses.field(default_factory=dict)

    def pre_query(self, key: str | None) -> tuple[str, list[int]]:
        if key not in self.pre_queries:
            text = templates.render_pre_query(self.family, key)
            self.pre_queries[key] = (text, encode(self.engine.tokenizer, text))
        text, ids = self.pre_queries[key]
        return text, list(ids)


@dataclass
class Outcome:
    kept: dict | None = None
    dropped: dict | None = None
    output_tokens: int = 0


# A row's work is a generator: it yields each engine Future it needs and is sent the Future's
# result (or thrown its exception), and returns its Outcome; `row_pool.RowPool` drives them.
RowSteps = Generator[Future, Any, Any]


def _sample_instruction(ctx: RowContext, prompt: list[int], spec: SamplingSpec) -> RowSteps:
    engine = ctx.engine
    if not ctx.banned_ids:
        done = yield engine.submit(prompt, spec)
        return _Instruction(done.text, done.finish_reason, done.num_output_tokens)
    first = yield engine.submit(
        prompt, dataclasses.replace(spec, max_tokens=1, banned_token_ids=ctx.banned_ids)
    )
    if first.finish_reason == "stop" or spec.max_tokens == 1:
        return _Instruction(first.text, first.finish_reason, first.num_output_tokens)
    rest = yield engine.submit(
        prompt + list(first.token_ids), dataclasses.replace(spec, max_tokens=spec.max_tokens - 1)
    )
    text = decode(engine.tokenizer, first.token_ids) + rest.text
    return _Instruction(text, rest.finish_reason, 1 + rest.num_output_tokens)


def _clean(ctx: RowContext, raw: str) -> tuple[str, tuple[str, ...] | None]:
    if not ctx.sanitize:
        return raw, None
    result = sanitize_instruction(raw)
    return result.text, result.rules


def generate_row(ctx: RowContext, row: dict) -> RowSteps:
    """One row, start to end (returns its Outcome); see `RowSteps`."""
    engine, family, cfg, tokenizer = ctx.engine, ctx.family, ctx.cfg, ctx.engine.tokenizer
    out = Outcome()
    pre_query, pre_query_ids = ctx.pre_query(row["system_prompt_key"])
    inst_spec = instruction_specs([row], family, ctx.stop_ids, cfg)[0]
    inst = yield from _sample_instruction(ctx, pre_query_ids, inst_spec)
    out.output_tokens += inst.num_output_tokens
    if inst.finish_reason == "length":
        out.dropped = _drop(row, "instruction_truncated", inst.text)
        return out
    raw = inst.text.strip()
    instruction, rules = _clean(ctx, raw)
    if not instruction:
        out.dropped = _drop(row, "instruction_empty", inst.text)
        return out
    history = [{"role": "user", "content": instruction}]
    ids = chat_prompt_ids(tokenizer, history)
    if len(ids) >= ctx.max_model_len:
        out.dropped = _drop(row, "prompt_too_long", instruction)
        return out
    spec = response_spec(row, len(ids), family, ctx.stop_ids, cfg, ctx.max_model_len)
    response_future = engine.submit(ids, spec)
    pref = cfg.preference
    pref_spec = preference_spec(row, spec, cfg, len(ids), ctx.max_model_len)
    pref_future = engine.submit(ids, pref_spec) if pref.num_responses else None
    base_future = ctx.base.submit(instruction, row["seed"]) if ctx.base else None
    resp = yield response_future
    out.output_tokens += resp.num_output_tokens
    response = resp.text.strip()
    if not response:
        out.dropped = _drop(row, "response_empty", instruction)
        return out
    history.append({"role": "assistant", "content": response})
    turn_inst_reasons, turn_resp_reasons = [inst.finish_reason], [resp.finish_reason]
    turn_rules = [rules]
    stop_reason = None
    if cfg.num_turns > 1:
        stop_reason, tokens = yield from _follow_up_turns(
            ctx, row, inst_spec, history, (turn_inst_reasons, turn_resp_reasons, turn_rules)
        )
        out.output_tokens += tokens

    samples: tuple[Completion, ...] = ()
    if pref_future is not None:
        done = yield pref_future
        samples = done.samples or (done,)
        out.output_tokens += sum(s.num_output_tokens for s in samples)
    base = (yield base_future) if base_future is not None else None
    res = cfg.response
    out.kept = {
        "uuid": row["uuid"],
        "model": ctx.model_name,
        "gen_input_configs": {
            "temperature": row["temperature"],
            "top_p": row["top_p"],
            "min_p": row["min_p"],
            "max_tokens": row["max_tokens"],
            "input_generator": ctx.model_name,
            "seed": row["seed"],
            "pre_query_template": pre_query,
            "system_prompt_key": row["system_prompt_key"],
            "stop_at_newline": cfg.instruction.stop_at_newline,
            "extra_stop_strings": list(cfg.instruction.extra_stop_strings),
            "sanitizer_rules": None if rules is None else list(rules),
            "banned_first_token_prefixes": list(banned_prefixes(family, cfg)),
            "num_turns": cfg.num_turns,
        },
        "instruction": instruction,
        "response": response,
        "conversations": to_turns(history),
        "gen_response_configs": {
            "temperature": res.temperature,
            "top_p": res.top_p,
            "max_tokens": spec.max_tokens,
            "output_generator": ctx.model_name,
            "engine": ctx.engine_kind,
            "num_responses": pref.num_responses,
            "responses_temperature": pref.temperature if pref.num_responses else None,
            "responses_top_p": pref.top_p if pref.num_responses else None,
            "responses_max_tokens": pref_spec.max_tokens if pref.num_responses else None,
        },
        "instruction_finish_reason": inst.finish_reason,
        "response_finish_reason": resp.finish_reason,
        "instruction_tokens": inst.num_output_tokens,
        "response_tokens": resp.num_output_tokens,
        "response_prompt_tokens": len(ids),
        "raw_instruction": raw,
        "num_turns": len(history) // 2,
        "turn_instruction_finish_reasons": turn_inst_reasons,
        "turn_response_finish_reasons": turn_resp_reasons,
        "turn_sanitizer_rules": None if rules is None else [list(r) for r in turn_rules],
        "multi_turn_stop_reason": stop_reason,
        "responses": [s.text.strip() for s in samples] if samples else None,
        "responses_finish_reasons": [s.finish_reason for s in samples] if samples else None,
        "base_output": base.text if base and base.finish_reason != "prompt_too_long" else None,
        "base_generator": ctx.base.name if ctx.base else None,
        "base_finish_reason": base.finish_reason if base is not None else None,
        "index": row["index"],
    }
    return out


def _follow_up_turns(
    ctx: RowContext,
    row: dict,
    inst_spec: SamplingSpec,
    history: list[dict[str, str]],
    per_turn: tuple[list, list, list],
) -> RowSteps:
    """Extend `history` and the per-turn lists (instruction and response finish reasons,
    sanitizer rules) to `num_turns` turns; returns (why it stopped, tokens)."""
    inst_reasons, resp_reasons, turn_rules = per_turn
    engine, family, cfg, tokenizer = ctx.engine, ctx.family, ctx.cfg, ctx.engine.tokenizer
    system = family.system_prompts.get(MULTI_TURN_PROMPT)
    tokens = 0
    for turn in range(2, cfg.num_turns + 1):
        seed = turn_seed(row["seed"], turn)
        prompt = follow_up_prompt_ids(tokenizer, history, system)
        room = ctx.max_model_len - len(prompt)
        if room <= 1:
            return "prompt_too_long", tokens
        spec = dataclasses.replace(inst_spec, seed=seed, max_tokens=min(inst_spec.max_tokens, room))
        inst = yield from _sample_instruction(ctx, prompt, spec)
        tokens += inst.num_output_tokens
        if inst.finish_reason == "length":
            return "instruction_truncated", tokens
        instruction, rules = _clean(ctx, inst.text.strip())
        if not instruction:
            return "instruction_empty", tokens
        messages = [*history, {"role": "user", "content": instruction}]
        ids = chat_prompt_ids(tokenizer, messages)
        if len(ids) >= ctx.max_model_len:
            return "prompt_too_long", tokens
        spec = response_spec(row, len(ids), family, ctx.stop_ids, cfg, ctx.max_model_len)
        resp = yield engine.submit(ids, dataclasses.replace(spec, seed=seed))
        tokens += resp.num_output_tokens
        if not resp.text.strip():
            return "response_empty", tokens
        history += [messages[-1], {"role": "assistant", "content": resp.text.strip()}]
        inst_reasons.append(inst.finish_reason)
        resp_reasons.append(resp.finish_reason)
        turn_rules.append(rules)
    return None, tokens


def row_context(
    engine: Engine,
    family: templates.Family,
    cfg: GenerateConfig,
    model_name: str,
    engine_kind: str,
    max_model_len: int,
    base: BaseAnswerer | None,
) -> RowContext:
    tokenizer = engine.tokenizer
    templates.fit_chat_template(family, tokenizer)
    return RowContext(
        engine=engine,
        family=family,
        cfg=cfg,
        stop_ids=tuple(templates.stop_token_ids_for(family, tokenizer)),
        banned_ids=banned_first_token_ids(tokenizer, banned_prefixes(family, cfg)),
        sanitize=sanitizes(family, cfg),
        max_model_len=max_model_len,
        model_name=model_name,
        engine_kind=engine_kind,
        base=base,
    )


def batch_result(outcomes: list[Outcome]) -> BatchResult:
    """Kept and dropped rows, each in index order, and the tokens they took."""
    return BatchResult(
        kept=sorted((o.kept for o in outcomes if o.kept), key=lambda r: r["index"]),
        dropped=sorted((o.dropped for o in outcomes if o.dropped), key=lambda d: d["index"]),
        output_tokens=sum(o.output_tokens for o in outcomes),
    )


def resolve_family(family: templates.Family, cfg: GenerateConfig) -> templates.Family:
    """`family` with the run's custom system prompts; raises `TemplateError` when the domain
    mixture names a prompt the family lacks, or any prompt for a family without a system turn,
    or when multi-turn is asked of a family without a follow-up template."""
    family = templates.with_system_prompts(family, cfg.custom_system_prompts)
    for key in cfg.system_prompts:
        if key != DEFAULT_SYSTEM_PROMPT:
            templates.render_pre_query(family, key)
    if cfg.num_turns > 1 and family.follow_up_template is None:
        raise templates.TemplateError(
            f"family {family.name!r} has no follow_up_template, so generate.num_turns"
            f"={cfg.num_turns} cannot work; set generate.num_turns=1 or add the template to the"
            " family's YAML"
        )
    return family


def follow_up_prompt_ids(tokenizer, history: list[dict[str, str]], system: str | None) -> list[int]:
    """Token ids that make the model write the next user turn after `history` (see templates)."""
    with TOKENIZER_LOCK:
        text = templates.render_follow_up_prompt(tokenizer, history, system)
    return encode(tokenizer, text)
