"""Generate step: pre-query template -> instruction -> response [-> follow-up turns], on a Ray
Data actor pool.

Reads seed rows (see `seeds.py`). Writes `generated/` parts with the columns of
`GENERATED_SCHEMA` (the released Magpie fields that apply, plus finish reasons and token counts)
and `dropped/generate/` parts for rows dropped with a reason:

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

Each engine actor loads its model once and serves every call of every row it gets; it writes a
part file per call itself (atomically), holding the rows that finished for that call (see
`RowPool`), so finished rows survive a crash of anything else.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import queue
import socket
import threading
import time
import weakref
from collections.abc import Generator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from .. import templates
from ..config import GenerateConfig, model_source
from ..engines import (
    Completion,
    Engine,
    EngineSettings,
    SamplingSpec,
    chat_prompt_ids,
    decode,
    encode,
    follow_up_prompt_ids,
)
from ..sanitize import sanitize_instruction
from ..storage import DROPPED_SCHEMA, RunStore, part_name
from .base_answers import BaseAnswerer, load_examples
from .seeds import DEFAULT_SYSTEM_PROMPT, make_seed_rows

log = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class GenerateSettings:
    """Everything an engine actor needs; small and picklable."""

    engine: EngineSettings
    family_name: str
    template_dirs: tuple[str, ...]
    model_name: str
    generate: GenerateConfig
    run_uri: str
    base_engine: EngineSettings | None = None  # the base model, when generate.base.path is set


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


def instruction_specs(
    rows: Sequence[dict], family: templates.Family, stop_ids: Sequence[int], cfg: GenerateConfig
) -> list[SamplingSpec]:
    inst = cfg.instruction
    stops = tuple(family.stop_strings) + (("\n",) if inst.stop_at_newline else ())
    stops += tuple(t for t in inst.extra_stop_strings if t not in stops)
    return [
        SamplingSpec(
            temperature=row["temperature"],
            top_p=row["top_p"],
            min_p=row["min_p"],
            max_tokens=row["max_tokens"],
            seed=row["seed"],
            stop=stops,
            stop_token_ids=tuple(stop_ids),
        )
        for row in rows
    ]


def response_spec(
    row: dict,
    prompt_len: int,
    family: templates.Family,
    stop_ids: Sequence[int],
    cfg: GenerateConfig,
    max_model_len: int,
) -> SamplingSpec:
    """Sampling of one row's response; its budget never overruns the context window."""
    res = cfg.response
    return SamplingSpec(
        temperature=res.temperature,
        top_p=res.top_p,
        max_tokens=min(
            row.get("response_max_tokens") or res.max_tokens, max_model_len - prompt_len
        ),
        seed=row["seed"],
        stop=tuple(family.stop_strings),
        stop_token_ids=tuple(stop_ids),
        ignore_eos=bool(row.get("ignore_eos")),
    )


def preference_spec(
    row: dict, response: SamplingSpec, cfg: GenerateConfig, prompt_len: int, max_model_len: int
) -> SamplingSpec:
    """K samples of the first response in one request (sample j seeded with the row seed + j)."""
    pref = cfg.preference
    return dataclasses.replace(
        response,
        n=pref.num_responses,
        temperature=pref.temperature,
        top_p=pref.top_p,
        max_tokens=min(pref.max_tokens or cfg.response.max_tokens, max_model_len - prompt_len),
        seed=row["seed"],
    )


def turn_seed(seed: int, turn: int) -> int:
    """The sampling seed of turn `turn` (1-based) of a row; turn 1 keeps the row seed."""
    return (seed + (turn - 1) * 1_000_003) % 2**31


_BANNED_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def banned_first_token_ids(tokenizer, prefixes: Sequence[str]) -> tuple[int, ...]:
    """Ids of vocabulary entries whose text, leading spaces removed, starts with a prefix.

    "#" bans "#", "##", " ###", "#include" ...: every way to open a markdown header. Decoding the
    vocabulary takes a second or two, so the result is kept per tokenizer object.
    """
    if not prefixes:
        return ()
    cache = _BANNED_CACHE.setdefault(tokenizer, {})
    key = tuple(prefixes)
    if key not in cache:
        texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
        cache[key] = tuple(i for i, text in enumerate(texts) if text.lstrip().startswith(key))
    return cache[key]


@dataclass(frozen=True)
class _Instruction:
    text: str
    finish_reason: str
    num_output_tokens: int


@dataclass(frozen=True)
class _RowContext:
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
class _Outcome:
    kept: dict | None = None
    dropped: dict | None = None
    output_tokens: int = 0


# A row's work is a generator: it yields each engine Future it needs and is sent the Future's
# result (or thrown its exception), and returns its _Outcome; `_drive` runs a batch of them.
RowSteps = Generator[Future, Any, Any]


def _sample_instruction(ctx: _RowContext, prompt: list[int], spec: SamplingSpec) -> RowSteps:
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


def _clean(ctx: _RowContext, raw: str) -> tuple[str, tuple[str, ...] | None]:
    if not ctx.sanitize:
        return raw, None
    result = sanitize_instruction(raw)
    return result.text, result.rules


def _generate_row(ctx: _RowContext, row: dict) -> RowSteps:
    """One row, start to end (returns its _Outcome); see `RowSteps`."""
    engine, family, cfg, tokenizer = ctx.engine, ctx.family, ctx.cfg, ctx.engine.tokenizer
    out = _Outcome()
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
            "banned_first_token_prefixes": list(_banned_prefixes(family, cfg)),
            "num_turns": cfg.num_turns,
        },
        "instruction": instruction,
        "response": response,
        "conversations": [
            {"from": "human" if m["role"] == "user" else "gpt", "value": m["content"]}
            for m in history
        ],
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
    ctx: _RowContext,
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


def _banned_prefixes(family: templates.Family, cfg: GenerateConfig) -> tuple[str, ...]:
    chosen = cfg.instruction.banned_first_token_prefixes
    return tuple(family.banned_first_token_prefixes if chosen is None else chosen)


def _sanitizes(family: templates.Family, cfg: GenerateConfig) -> bool:
    return family.sanitize if cfg.instruction.sanitize is None else cfg.instruction.sanitize


def generate_rows(
    engine: Engine,
    family: templates.Family,
    rows: Sequence[dict],
    cfg: GenerateConfig,
    model_name: str,
    engine_kind: str,
    max_model_len: int,
    base: BaseAnswerer | None = None,
) -> BatchResult:
    """Every turn of `rows` (seed rows); pure apart from the engine calls.

    Rows advance side by side in this thread, each as soon as its last engine call is done, so
    a row's response is submitted the moment its instruction is done and the engine never waits
    for the slowest row of the batch. Optional row keys `response_max_tokens` and `ignore_eos`
    override the response sampling per row (benchmark workloads use them).
    """
    ctx = _row_context(engine, family, cfg, model_name, engine_kind, max_model_len, base)
    return _batch_result(_drive([_generate_row(ctx, row) for row in rows]))


def _row_context(
    engine: Engine,
    family: templates.Family,
    cfg: GenerateConfig,
    model_name: str,
    engine_kind: str,
    max_model_len: int,
    base: BaseAnswerer | None,
) -> _RowContext:
    tokenizer = engine.tokenizer
    templates.fit_chat_template(family, tokenizer)
    return _RowContext(
        engine=engine,
        family=family,
        cfg=cfg,
        stop_ids=tuple(templates.stop_token_ids_for(family, tokenizer)),
        banned_ids=banned_first_token_ids(tokenizer, _banned_prefixes(family, cfg)),
        sanitize=_sanitizes(family, cfg),
        max_model_len=max_model_len,
        model_name=model_name,
        engine_kind=engine_kind,
        base=base,
    )


def _batch_result(outcomes: list[_Outcome]) -> BatchResult:
    return BatchResult(
        kept=[o.kept for o in outcomes if o.kept is not None],
        dropped=sorted((o.dropped for o in outcomes if o.dropped), key=lambda d: d["index"]),
        output_tokens=sum(o.output_tokens for o in outcomes),
    )


@dataclass(frozen=True)
class _Returned:
    value: Any


def _advance(step: RowSteps, done: Future | None) -> Future | _Returned:
    """Resume a row with its last Future's outcome (None: start it); its next Future, or its
    return value. A finished Future only queues its row (the engine thread does nothing else);
    the caller's thread then does the row's CPU work (templates, tokenizing) in here."""
    try:
        if done is None:
            return next(step)
        if done.exception() is not None:
            return step.throw(done.exception())
        return step.send(done.result())
    except StopIteration as finished:
        return _Returned(finished.value)


def _drive(steps: list[RowSteps]) -> list:
    """Run row generators to their return values (in order) in the calling thread; an
    exception a row does not handle fails the batch."""
    ready: queue.SimpleQueue = queue.SimpleQueue()
    results: list = [None] * len(steps)
    running = len(steps)
    for i in range(len(steps)):
        ready.put((i, None))
    while running:
        i, done = ready.get()
        nxt = _advance(steps[i], done)
        if isinstance(nxt, _Returned):
            results[i] = nxt.value
            running -= 1
        else:
            nxt.add_done_callback(lambda f, i=i: ready.put((i, f)))
    return results


class RowPool:
    """Every row an actor has in flight, advanced by one driver thread, and handed back to
    callers in the order the rows finish, whichever call brought them.

    `run(steps)` adds a call's rows and returns as many finished results as it added; calls
    are served first come, first served. So a call returns once that many rows have finished,
    not when its own longest row has: the rows in flight stay close to the number the actor
    was given, and the engine does not drain while every batch waits for its slowest row (the
    reference's batch-and-wait idling, one level up). The results of all calls together are
    exactly the rows of all calls. A row that raises hands its exception to the call it would
    have been given to.
    """

    def __init__(self) -> None:
        self._ready: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Condition()
        self._claims: collections.deque = collections.deque()  # open _Claims, oldest first
        self._thread = threading.Thread(target=self._loop, name="RowPool", daemon=True)
        self._thread.start()

    def run(self, steps: list[RowSteps]) -> list:
        if not steps:
            return []
        claim = _Claim(len(steps))
        with self._lock:
            self._claims.append(claim)
        for step in steps:
            self._ready.put((step, None))
        with self._lock:
            while len(claim.results) < claim.wanted:
                self._lock.wait()
        if claim.error is not None:
            raise claim.error
        return claim.results

    def _loop(self) -> None:
        while True:
            step, done = self._ready.get()
            try:
                nxt = _advance(step, done)
            except BaseException as err:  # noqa: BLE001 - handed to a caller, which raises it
                self._finish(None, err)
                continue
            if isinstance(nxt, _Returned):
                self._finish(nxt.value, None)
            else:
                nxt.add_done_callback(lambda f, step=step: self._ready.put((step, f)))

    def _finish(self, result, error: BaseException | None) -> None:
        with self._lock:
            claim = self._claims[0]
            claim.results.append(result)
            if error is not None and claim.error is None:
                claim.error = error
            if len(claim.results) == claim.wanted:
                self._claims.popleft()
                self._lock.notify_all()


@dataclass
class _Claim:
    wanted: int
    results: list = dataclasses.field(default_factory=list)
    error: BaseException | None = None


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


def prepare_family(settings: GenerateSettings, tokenizer) -> templates.Family:
    family = resolve_family(
        templates.load_family(settings.family_name, settings.template_dirs), settings.generate
    )
    templates.fit_chat_template(family, tokenizer)
    templates.validate_against_tokenizer(family, tokenizer)
    return family


class GenerateActor:
    """Ray Data actor: one engine, loaded once; `__call__` takes a batch of seed rows."""

    def __init__(self, settings: GenerateSettings):
        from ..engines import load_engine, load_tokenizer

        started = time.perf_counter()
        # The template is checked against the tokenizer before the (slow) model load.
        self.family = prepare_family(
            settings, load_tokenizer(settings.engine.model_path, settings.engine.trust_remote_code)
        )
        self.settings = settings
        self.engine = load_engine(settings.engine)
        self.base = _load_base_answerer(settings) if settings.base_engine else None
        self.store = RunStore(settings.run_uri)
        s = settings
        self.ctx = _row_context(
            self.engine,
            self.family,
            s.generate,
            s.model_name,
            s.engine.kind,
            s.engine.max_model_len,
            self.base,
        )
        self.pool = RowPool()
        # Rows already in the run's files when this actor started: a restarted actor's retried
        # calls are checked against them (see __call__). A first start needs no scan (its calls
        # hold rows nobody has written), which spares every actor reading the uuids of every
        # part of a large run.
        self.written_before_start = self.store.done_uuids(STEP) if _restarted_actor() else set()
        self.load_seconds = time.perf_counter() - started
        self._reported_load = False
        self.actor_key = f"{socket.gethostname()}:{os.getpid()}"

    def __call__(self, batch: pa.Table) -> dict:
        rows = batch.to_pylist()
        started = time.time()
        # The rows that come back are the first len(rows) to finish in this actor, not
        # necessarily these rows (see RowPool); the part file holds the rows that came back.
        # A call retried on a restarted actor may hold rows that another call wrote before the
        # crash (they finished in the pool and went back with that call): never write them twice.
        todo = [row for row in rows if row["uuid"] not in self.written_before_start]
        outcomes = self.pool.run([_generate_row(self.ctx, row) for row in todo])
        result = _batch_result(outcomes)
        done = [o.kept or o.dropped for o in outcomes]
        stats = self._stats(len(rows) - len(todo), result, started)
        if not done:
            return stats
        first = min(r["index"] for r in done)
        name = part_name(first, [r["uuid"] for r in done])
        # Each uuid lands in exactly one of the two files, so a crash between the writes only
        # leaves the second file's rows undone; a resume regenerates them, never duplicates.
        if result.dropped:
            table = pa.Table.from_pylist(result.dropped, schema=DROPPED_SCHEMA)
            self.store.write_part(self.store.dropped_dir(STEP), name, table)
        if result.kept:
            table = pa.Table.from_pylist(result.kept, schema=GENERATED_SCHEMA)
            self.store.write_part(self.store.kept_dir(STEP), name, table)
        stats["finished_at"] = [time.time()]
        return stats

    def _stats(self, skipped: int, result: BatchResult, started: float) -> dict:
        load_seconds = 0.0 if self._reported_load else self.load_seconds
        self._reported_load = True
        return {
            "actor": [self.actor_key],
            "engine_busy_seconds": [self.engine.busy_seconds],  # cumulative over the actor
            "engine_steps": [self.engine.steps],
            "rows": [len(result.kept) + len(result.dropped)],
            "skipped": [skipped],
            "kept": [len(result.kept)],
            "output_tokens": [result.output_tokens],
            "started_at": [started],
            "finished_at": [time.time()],
            "load_seconds": [load_seconds],
        }


def _restarted_actor() -> bool:
    """Whether this is a Ray actor that has been restarted; True where it cannot be told (outside
    a Ray actor, or the state API failed), since then the store scan is the safe side."""
    try:
        import ray

        if not ray.is_initialized() or ray.get_runtime_context().get_actor_id() is None:
            return True
        return bool(ray.get_runtime_context().was_current_actor_reconstructed)
    except Exception:  # noqa: BLE001 - the state API is best effort; scanning is always correct
        return True


@dataclass(frozen=True)
class StepStats:
    """What one invocation of the step did (a resumed run counts only its own work)."""

    rows_todo: int
    rows_done_before: int
    rows_processed: int  # rows of this invocation now in the run's files (kept or dropped)
    rows_kept: int
    output_tokens: int
    wall_seconds: float  # the whole step, actor start-up included
    generation_seconds: float  # first batch started -> last batch finished, on any actor
    engine_load_seconds: float  # the slowest actor's model load
    # Seconds the engines spent advancing their models, summed over actors; divided by
    # actors x generation_seconds it says how much of the time the engines had work.
    engine_busy_seconds: float = 0.0
    max_num_seqs: int | None = None  # vLLM engines' limit of sequences per step (None: HF)
    # Rows of a retried call (after an actor crash) that were already written: not redone.
    rows_skipped_on_retry: int = 0
    engine_steps: int = 0
    actors: int = 0
    passes: int = 0  # Ray Data passes: 1, plus one per sweep for rows lost with an actor
    rows_missing: int = 0  # rows in no file after the last pass: the run is incomplete

    @property
    def engine_busy_fraction(self) -> float | None:
        if not self.actors or self.generation_seconds <= 0:
            return None
        return min(1.0, self.engine_busy_seconds / (self.actors * self.generation_seconds))


def _load_base_answerer(settings: GenerateSettings):
    from ..engines import load_engine

    base = settings.generate.base
    spec = SamplingSpec(temperature=base.temperature, top_p=base.top_p, max_tokens=base.max_tokens)
    return BaseAnswerer(
        load_engine(settings.base_engine),
        base.name or base.path,
        load_examples(base.examples_file),
        spec,
        base.max_model_len,
    )


def _engine_path(path: str) -> str:
    return str(Path(path).expanduser()) if model_source(path) == "local" else path


def _engine_settings(kind: str, model, memory, engine, seed: int) -> EngineSettings:
    """`model` gives the weights and their shape, `memory` the GPU / KV-cache budget and
    `engine` (EngineConfig) the scheduling limits."""
    return EngineSettings(
        kind=kind,
        model_path=_engine_path(model.path),
        dtype=model.dtype,
        max_model_len=model.max_model_len,
        tensor_parallel_size=model.tensor_parallel_size,
        trust_remote_code=model.trust_remote_code,
        gpu_memory_utilization=memory.gpu_memory_utilization,
        kv_cache_gib=memory.kv_cache_gib,
        enforce_eager=engine.enforce_eager,
        max_num_seqs=engine.max_num_seqs,
        hf_batch_size=engine.hf_batch_size,
        seed=seed,
    )


def settings_from(cfg) -> GenerateSettings:
    m, e, base = cfg.model, cfg.engine, cfg.generate.base
    return GenerateSettings(
        # The base model brings its own memory budget (it shares the actor's GPU).
        base_engine=(
            _engine_settings(base.kind, base, base, e, cfg.seed) if base.path is not None else None
        ),
        engine=_engine_settings(e.kind, m, e, e, cfg.seed),
        family_name=m.family,
        template_dirs=tuple(cfg.template_dirs),
        model_name=m.name,
        generate=cfg.generate,
        run_uri=cfg.run_uri,
    )


def run_step(cfg, store: RunStore, seeds: list[dict] | None = None) -> StepStats:
    """Generate every seed row not already in `generated/` or `dropped/generate/`.

    After each pass the step compares the run's files with the rows it was given: a row that is
    in neither (its engine actor or node died while it was in flight, after the call that
    brought it had returned) goes through again, up to `generate.max_passes` passes in all.
    Rows still missing after that are counted in `rows_missing`; the pipeline then stops with
    a non-zero exit. `seeds` replaces the rows made from the config (benchmarks pass
    synthetic workloads).
    """
    gen = cfg.generate
    if seeds is None:
        seeds = make_seed_rows(cfg.run_name, cfg.seed, gen.num_samples, gen)
    done = store.done_uuids(STEP)
    todo = [row for row in seeds if row["uuid"] not in done]
    started = time.perf_counter()
    tally = _Tally()
    pending, passes = todo, 0
    while pending and passes < gen.max_passes:
        passes += 1
        if passes > 1:
            log.warning(
                "generate: %d of %d rows were not written by pass %d (an engine actor or node"
                " died while they were in flight); generating them again, pass %d of at most %d",
                len(pending),
                len(todo),
                passes - 1,
                passes,
                gen.max_passes,
            )
        _run_pass(cfg, store, pending, tally, first=passes == 1)
        done = store.done_uuids(STEP)
        pending = [row for row in pending if row["uuid"] not in done]
    return StepStats(
        rows_todo=len(todo),
        rows_done_before=len(seeds) - len(todo),
        rows_processed=len(todo) - len(pending),
        rows_skipped_on_retry=tally.skipped,
        rows_kept=tally.kept,
        output_tokens=tally.tokens,
        wall_seconds=time.perf_counter() - started,
        generation_seconds=max(0.0, tally.last_finish - tally.first_start),
        engine_load_seconds=tally.load_seconds,
        engine_busy_seconds=sum(tally.busy.values()),
        engine_steps=sum(tally.steps.values()),
        max_num_seqs=cfg.engine.max_num_seqs if cfg.engine.kind == "vllm" else None,
        actors=len(tally.busy),
        passes=passes,
        rows_missing=len(pending),
    )


@dataclass
class _Tally:
    """The counters of every actor call of an invocation, over all its passes."""

    skipped: int = 0
    kept: int = 0
    tokens: int = 0
    load_seconds: float = 0.0
    first_start: float = float("inf")
    last_finish: float = 0.0
    busy: dict = dataclasses.field(default_factory=dict)  # actor -> cumulative busy seconds
    steps: dict = dataclasses.field(default_factory=dict)  # actor -> cumulative engine steps

    def add(self, stats: dict) -> None:
        self.skipped += stats["skipped"]
        self.kept += stats["kept"]
        self.tokens += stats["output_tokens"]
        self.load_seconds = max(self.load_seconds, stats["load_seconds"])
        self.first_start = min(self.first_start, stats["started_at"])
        self.last_finish = max(self.last_finish, stats["finished_at"])
        actor = stats["actor"]
        self.busy[actor] = max(self.busy.get(actor, 0.0), stats["engine_busy_seconds"])
        self.steps[actor] = max(self.steps.get(actor, 0), stats["engine_steps"])


def _run_pass(cfg, store: RunStore, rows: list[dict], tally: _Tally, first: bool) -> None:
    """One Ray Data pass of `rows` through an engine actor pool.

    The first pass runs the configured pool; a later pass (rows lost with a dead actor or
    node) starts with one actor and grows to the configured size, so it also runs on a
    cluster that lost the node.
    """
    import ray.data

    gen, cl = cfg.generate, cfg.cluster
    blocks = min(len(rows), max(1, -(-len(rows) // gen.batch_size)))
    ray.data.DataContext.get_current().max_consecutive_actor_init_deaths = cl.actor_start_retries
    size = {"size": cl.num_actors} if first else {"min_size": 1, "max_size": cl.num_actors}
    ds = ray.data.from_items(rows, override_num_blocks=blocks).map_batches(
        GenerateActor,
        fn_constructor_kwargs={"settings": settings_from(cfg)},
        # One block (<= batch_size rows) per actor call. With batch_size set, Ray Data
        # bundles blocks up to batch_size rows and runs the bundle's batches one after
        # another in one call, so a batch waited for the previous one's longest row.
        batch_size=None,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(
            **size,
            max_concurrent_calls_per_actor=cl.batches_in_flight,
            enable_true_multi_threading=cl.batches_in_flight > 1,
        ),
        num_cpus=cl.cpus_per_actor,
        num_gpus=cl.gpus_per_actor,
        resources=dict(cl.actor_resources),
        runtime_env={"env_vars": dict(cl.actor_env)} if cl.actor_env else None,
    )
    for stats in ds.iter_rows():
        tally.add(stats)
