"""Generate features on real engines and on a scripted engine: sanitizer, first-token ban,
preference samples, multi-turn conversations."""

from __future__ import annotations

import dataclasses
from concurrent.futures import Future

import pyarrow as pa
import pytest

from magpie_ray.config import (
    FollowUpSampling,
    GenerateConfig,
    InstructionSampling,
    PreferenceSampling,
    ResponseSampling,
)
from magpie_ray.engines.base import Completion
from magpie_ray.families.templates import TemplateError, load_family
from magpie_ray.steps.generate.row_pool import generate_rows
from magpie_ray.steps.generate.sampling import (
    banned_first_token_ids,
    instruction_specs,
    response_spec,
)
from magpie_ray.steps.generate.schema import GENERATED_SCHEMA
from magpie_ray.steps.generate.seeds import make_seed_rows
from magpie_ray.testing import ASKS

# The words the tiny model opens every instruction with (see magpie_ray.testing.ASKS).
OPENERS = tuple(sorted({ask.split()[0] for ask in ASKS}))


def _cfg(**changes) -> GenerateConfig:
    inst = changes.pop("instruction", InstructionSampling(max_tokens=32))
    res = changes.pop("response", ResponseSampling(max_tokens=48))
    return GenerateConfig(
        num_samples=8,
        batch_size=8,
        instruction=inst,
        response=res,
        **changes,
    )


def _run(engine, kind, cfg, n=6, run="feat", family="smollm2"):
    seeds = make_seed_rows(run, 0, n, cfg)
    family = load_family(family) if isinstance(family, str) else family
    result = generate_rows(engine, family, seeds, cfg, "tiny", kind, 512)
    pa.Table.from_pylist(result.kept, schema=GENERATED_SCHEMA)  # raises on a bad field
    return result


def test_banned_first_token_ids_cover_every_header_opening(engines):
    tok = engines["vllm"].tokenizer
    ids = banned_first_token_ids(tok, ("#",))
    texts = {tok.decode([i]) for i in ids}
    assert {"#", "##", "###"} <= {t.strip() for t in texts}
    assert all(t.lstrip().startswith("#") for t in texts)
    assert tok.encode("Hello", add_special_tokens=False)[0] not in ids
    assert banned_first_token_ids(tok, ()) == ()
    assert banned_first_token_ids(tok, ("#",)) is ids, "cached per tokenizer"


@pytest.mark.parametrize("kind", ["vllm", "hf"])
def test_banned_first_tokens_never_open_an_instruction(engines, kind):
    free = _run(engines[kind], kind, _cfg(), n=8, run="ban")
    assert any(r["instruction"].startswith(OPENERS) for r in free.kept), "the ban must matter"
    inst = InstructionSampling(max_tokens=32, banned_first_token_prefixes=list(OPENERS))
    result = _run(engines[kind], kind, _cfg(instruction=inst), n=8, run="ban")
    texts = [r["instruction"] for r in result.kept] + [d["detail"] for d in result.dropped]
    assert texts and not [t for t in texts if t.lstrip().startswith(OPENERS)], texts
    for row in result.kept:
        assert row["gen_input_configs"]["banned_first_token_prefixes"] == list(OPENERS)
        assert row["instruction_tokens"] >= 2


@pytest.mark.parametrize("kind", ["vllm", "hf"])
def test_preference_samples_share_the_prompt_and_keep_the_greedy_response(engines, kind):
    pref = PreferenceSampling(num_responses=3, temperature=0.8)
    result = _run(engines[kind], kind, _cfg(preference=pref), n=4, run="pref")
    plain = {r["uuid"]: r for r in _run(engines[kind], kind, _cfg(), n=4, run="pref").kept}
    assert result.kept
    for row in result.kept:
        assert len(row["responses"]) == 3 and all(row["responses"])
        assert set(row["responses_finish_reasons"]) <= {"stop", "length"}
        assert len(row["responses_finish_reasons"]) == 3
        assert row["response"] == plain[row["uuid"]]["response"], "the greedy response stays"
        assert plain[row["uuid"]]["responses"] is None
        configs = row["gen_response_configs"]
        assert (configs["num_responses"], configs["responses_temperature"]) == (3, 0.8)
    assert any(len(set(r["responses"])) > 1 for r in result.kept), "T=0.8 samples differ"


@pytest.mark.parametrize("kind", ["vllm", "hf"])
def test_two_turn_conversations(engines, kind):
    result = _run(engines[kind], kind, _cfg(num_turns=2), n=6, run="mt")
    assert len(result.kept) >= 4, result.dropped
    two = [r for r in result.kept if r["num_turns"] == 2]
    assert len(two) >= 3, [(r["num_turns"], r["multi_turn_stop_reason"]) for r in result.kept]
    for row in result.kept:
        conv = row["conversations"]
        assert [t["from"] for t in conv] == ["human", "gpt"] * row["num_turns"]
        assert conv[0]["value"] == row["instruction"] and conv[1]["value"] == row["response"]
        assert len(row["turn_instruction_finish_reasons"]) == row["num_turns"]
        assert len(row["turn_response_finish_reasons"]) == row["num_turns"]
        assert (row["multi_turn_stop_reason"] is None) == (row["num_turns"] == 2)
        assert row["gen_input_configs"]["num_turns"] == 2
        assert all("<|im_" not in t["value"] for t in conv)
    assert any(r["conversations"][2]["value"] != r["instruction"] for r in two)


# --- a scripted engine: exact control over what the "model" writes ---------------------------


class ScriptedEngine:
    """Answers from a script: instruction prompts (ending in the user header) get the next
    scripted instruction, chat prompts get the next scripted response."""

    def __init__(self, tokenizer, instructions, responses):
        self.tokenizer = tokenizer
        self.instructions, self.responses = list(instructions), list(responses)
        self.specs = []

    def submit(self, prompt, spec) -> Future:
        self.specs.append(spec)
        text = self.tokenizer.decode(prompt)
        script = self.instructions if text.endswith("<|im_start|>user\n") else self.responses
        reply, reason = script.pop(0)
        done = Completion(reply, len(prompt), max(1, len(reply.split())), reason, (1,))
        if spec.n > 1:
            done = dataclasses.replace(done, samples=(done,) * spec.n)
        future: Future = Future()
        future.set_result(done)
        return future


class InOrderEngine:
    """Answers requests with scripted (text, finish reason) pairs in the order they come."""

    def __init__(self, tokenizer, replies):
        self.tokenizer, self.replies, self.specs = tokenizer, list(replies), []

    def submit(self, prompt, spec) -> Future:
        self.specs.append(spec)
        text, reason = self.replies.pop(0)
        future: Future = Future()
        ids = tuple(self.tokenizer.encode(text, add_special_tokens=False))
        future.set_result(Completion(text, len(prompt), len(ids), reason, ids))
        return future


def _scripted(engines, instructions, responses, **cfg_changes):
    engine = ScriptedEngine(engines["vllm"].tokenizer, instructions, responses)
    cfg = _cfg(**cfg_changes)
    result = generate_rows(
        engine, load_family("smollm2"), make_seed_rows("s", 0, 1, cfg), cfg, "m", "vllm", 512
    )
    pa.Table.from_pylist(result.kept, schema=GENERATED_SCHEMA)
    return result, engine


def test_sanitizer_cleans_keeps_the_raw_text_and_records_its_rules(engines):
    inst = InstructionSampling(max_tokens=32, sanitize=True)
    result, _ = _scripted(
        engines,
        [("**Question:** What is 7 x 8? Answer: 56", "stop")],
        [("56.", "stop")],
        instruction=inst,
    )
    (row,) = result.kept
    assert row["instruction"] == "What is 7 x 8?"
    assert row["raw_instruction"] == "**Question:** What is 7 x 8? Answer: 56"
    assert row["gen_input_configs"]["sanitizer_rules"] == ["strip_label", "cut_leaked_answer"]
    assert row["conversations"][0]["value"] == "What is 7 x 8?"


def test_the_references_truncation_rule_is_an_option(engines):
    inst = InstructionSampling(max_tokens=32, sanitize=True, sanitizer="reference")
    result, _ = _scripted(
        engines,
        [("How do tides work? And why twice a day?", "stop")],
        [("The moon.", "stop")],
        instruction=inst,
    )
    (row,) = result.kept
    assert row["instruction"] == "How do tides work?"
    assert row["raw_instruction"] == "How do tides work? And why twice a day?"
    assert row["gen_input_configs"]["sanitizer_rules"] == ["reference_class_99.1"]


def test_sanitizer_off_records_null_rules(engines):
    result, _ = _scripted(engines, [("Question: Why?", "stop")], [("Because.", "stop")])
    (row,) = result.kept
    assert row["instruction"] == row["raw_instruction"] == "Question: Why?"
    assert row["gen_input_configs"]["sanitizer_rules"] is None
    assert row["turn_sanitizer_rules"] is None


def test_the_sanitizer_records_its_rules_for_every_turn(engines):
    inst = InstructionSampling(max_tokens=32, sanitize=True)
    result, _ = _scripted(
        engines,
        [("How do tides work?", "stop"), ("**Question:** And why twice a day?", "stop")],
        [("The moon pulls the sea.", "stop"), ("Two bulges.", "stop")],
        instruction=inst,
        follow_up=FollowUpSampling(sanitize=True),
        num_turns=2,
    )
    (row,) = result.kept
    assert row["conversations"][2]["value"] == "And why twice a day?"
    assert row["gen_input_configs"]["sanitizer_rules"] == []
    assert row["turn_sanitizer_rules"] == [[], ["strip_label"]]


def test_follow_ups_sample_on_their_own_settings_by_default_the_references(engines):
    """Turn 1 keeps its grid cell, limit, sanitizer and ban; follow-ups sample at T=1, top_p=1
    with none of those (generate.follow_up defaults), and rows record both."""
    inst = InstructionSampling(
        temperature=0.7, top_p=0.9, max_tokens=32, sanitize=True, banned_first_token_prefixes=["#"]
    )
    result, engine = _scripted(
        engines,
        [("How do tides work?", "stop"), ("**Question:** And why twice a day?", "stop")],
        [("The moon pulls the sea.", "stop"), ("Two bulges.", "stop")],
        instruction=inst,
        num_turns=2,
    )
    (row,) = result.kept
    assert row["conversations"][2]["value"] == "**Question:** And why twice a day?"
    assert row["turn_sanitizer_rules"] == [[], None]
    first, _, follow_up, _ = engine.specs  # banned first token (ends there), answer, turn 2, answer
    assert first.max_tokens == 1 and first.banned_token_ids and first.temperature == 0.7
    assert (follow_up.temperature, follow_up.top_p, follow_up.banned_token_ids) == (1.0, 1.0, ())
    assert follow_up.max_tokens == 32
    assert row["gen_input_configs"]["follow_up"] == {
        "temperature": 1.0,
        "top_p": 1.0,
        "min_p": 0.0,
        "max_tokens": 32,
        "sanitize": False,
        "banned_first_token_prefixes": [],
    }


def test_flaming_tokens_sample_the_first_token_hotter_then_continue(engines):
    """The reference's flaming tokens divide the first token's logits by the factor: a request
    of one token at temperature x factor, then the rest at the row's temperature."""
    inst = InstructionSampling(temperature=0.6, top_p=0.9, max_tokens=32, flaming_tokens=1.2)
    engine = InOrderEngine(
        engines["vllm"].tokenizer,
        [("W", "length"), ("hy is the sky blue?", "stop"), ("Rayleigh.", "stop")],
    )
    cfg = _cfg(instruction=inst)
    result = generate_rows(
        engine, load_family("smollm2"), make_seed_rows("s", 0, 1, cfg), cfg, "m", "vllm", 512
    )
    (row,) = result.kept
    assert row["instruction"] == "Why is the sky blue?"
    first, rest, _ = engine.specs
    assert (first.max_tokens, first.temperature) == (1, pytest.approx(0.72))
    assert (rest.max_tokens, rest.temperature, rest.top_p) == (31, 0.6, 0.9)
    assert row["gen_input_configs"]["flaming_tokens"] == 1.2
    assert row["gen_input_configs"]["follow_up"] is None


@pytest.mark.parametrize("kind", ["vllm", "hf"])
def test_repetition_penalty_reaches_the_engine_and_changes_greedy_answers(engines, kind):
    plain = _run(engines[kind], kind, _cfg(), n=6, run="rep")
    res = ResponseSampling(max_tokens=48, repetition_penalty=1.8)
    penalized = _run(engines[kind], kind, _cfg(response=res), n=6, run="rep")
    before = {r["uuid"]: r["response"] for r in plain.kept}
    after = {r["uuid"]: r for r in penalized.kept}
    assert set(before) == set(after)
    assert any(before[u] != after[u]["response"] for u in before), "a penalty of 1.8 must matter"
    assert all(r["gen_response_configs"]["repetition_penalty"] == 1.8 for r in after.values())


def test_an_instruction_the_sanitizer_empties_is_dropped(engines):
    inst = InstructionSampling(max_tokens=32, sanitize=True)
    result, _ = _scripted(engines, [('" "', "stop")], [], instruction=inst)
    assert result.kept == [] and result.dropped[0]["reason"] == "instruction_empty"


def test_a_failed_follow_up_ends_the_conversation_but_keeps_the_row(engines):
    result, engine = _scripted(
        engines,
        [
            ("How do tides work?", "stop"),
            ("And why twice a day?", "stop"),
            ("Tell me mo", "length"),
        ],
        [("The moon pulls the sea.", "stop"), ("Two bulges.", "length")],
        num_turns=3,
    )
    (row,) = result.kept
    assert row["num_turns"] == 2 and row["multi_turn_stop_reason"] == "instruction_truncated"
    assert [t["value"] for t in row["conversations"]] == [
        "How do tides work?",
        "The moon pulls the sea.",
        "And why twice a day?",
        "Two bulges.",
    ]
    assert row["turn_response_finish_reasons"] == ["stop", "length"]
    seeds = [s.seed for s in engine.specs]
    assert len(set(seeds)) == 3, "each turn samples with its own seed"


def test_base_model_answers_every_kept_row(engines):
    from magpie_ray.engines.base import SamplingSpec
    from magpie_ray.steps.generate.base_answers import BaseAnswerer
    from magpie_ray.urial import load_examples

    # The tiny chat model on the HF engine stands in for a base model.
    base = BaseAnswerer(
        engines["hf"], "tiny-base", load_examples(), SamplingSpec(0.0, 24), max_model_len=2048
    )
    cfg = _cfg()
    seeds = make_seed_rows("base", 0, 4, cfg)
    result = generate_rows(
        engines["vllm"], load_family("smollm2"), seeds, cfg, "tiny", "vllm", 512, base
    )
    pa.Table.from_pylist(result.kept, schema=GENERATED_SCHEMA)
    assert result.kept
    for row in result.kept:
        assert row["base_generator"] == "tiny-base"
        assert isinstance(row["base_output"], str) and "```" not in row["base_output"][-3:]
        assert row["base_finish_reason"] in ("stop", "length")
    plain = _run(engines["vllm"], "vllm", cfg, n=2, run="base")
    assert all(r["base_output"] is None and r["base_generator"] is None for r in plain.kept)
    # A context too small for the examples: no answer, and the reason says why.
    small = BaseAnswerer(engines["hf"], "b", load_examples(), SamplingSpec(0.0, 8), 64)
    done = small.submit("Why?").result()
    assert (done.text, done.finish_reason) == ("", "prompt_too_long")


def test_an_engine_error_fails_the_batch_instead_of_hanging(engines):
    class FailingEngine(ScriptedEngine):
        def submit(self, prompt, spec) -> Future:
            future: Future = Future()
            future.set_exception(RuntimeError("engine thread died"))
            return future

    engine = FailingEngine(engines["vllm"].tokenizer, [], [])
    cfg = _cfg()
    with pytest.raises(RuntimeError, match="engine thread died"):
        generate_rows(
            engine, load_family("smollm2"), make_seed_rows("f", 0, 3, cfg), cfg, "m", "vllm", 512
        )


def test_a_family_chat_template_serves_a_tokenizer_without_one(engines):
    """A generator tokenizer without a chat template (Vicuna's) renders responses with the
    family's `chat_template`; with neither, generation refuses before any row is sampled."""
    engine = engines["hf"]
    own = engine.tokenizer.chat_template
    plain = load_family("smollm2")
    family = dataclasses.replace(plain, chat_template=own)
    engine.tokenizer.chat_template = None
    try:
        with pytest.raises(TemplateError, match="chat_template"):
            generate_rows(engine, plain, make_seed_rows("ct", 0, 2, _cfg()), _cfg(), "t", "hf", 512)
        result = _run(engine, "hf", _cfg(), n=4, run="ct", family=family)
        assert engine.tokenizer.chat_template == own, "the family's template was installed"
    finally:
        engine.tokenizer.chat_template = own
    assert len(result.kept) >= 3, result.dropped
    for row in result.kept:
        assert row["response"] and row["response_prompt_tokens"] > row["instruction_tokens"]


def test_extra_stop_strings_end_instructions_but_not_responses(engines):
    """`about` ends an instruction on the real engine (the tiny model asks "... about X?" often);
    the response's stop texts stay the family's."""
    free = _run(engines["vllm"], "vllm", _cfg(), n=8, run="stop")
    assert any("about" in r["instruction"] for r in free.kept), "the stop must matter"
    inst = InstructionSampling(max_tokens=32, extra_stop_strings=["about"])
    cut = _run(engines["vllm"], "vllm", _cfg(instruction=inst), n=8, run="stop")
    assert cut.kept and not any("about" in r["instruction"] for r in cut.kept)
    assert cut.kept[0]["gen_input_configs"]["extra_stop_strings"] == ["about"]

    cfg, family = _cfg(instruction=inst), load_family("smollm2")
    row = make_seed_rows("stop", 0, 1, cfg)[0]
    assert "about" in instruction_specs([row], family, (), cfg)[0].stop
    assert "about" not in response_spec(row, 10, family, (), cfg, 512).stop
