"""Both engines on the tiny chat model: same greedy text, per-row seeds, stops, finish reasons."""

import dataclasses

import pytest

from magpie_ray.engines.base import SamplingSpec
from magpie_ray.engines.tokens import chat_prompt_ids, encode
from magpie_ray.families.templates import load_family, render_pre_query, stop_token_ids_for
from magpie_ray.testing import TOPICS

KINDS = ["vllm", "hf"]


@pytest.fixture(scope="module")
def family():
    return load_family("smollm2")


def _pre_query_ids(engine, family):
    return encode(engine.tokenizer, render_pre_query(family))


def _stops(engine, family):
    return dict(
        stop=tuple(family.stop_strings),
        stop_token_ids=tuple(stop_token_ids_for(family, engine.tokenizer)),
    )


def test_vllm_and_hf_write_the_same_greedy_text(engines, family):
    texts = {}
    for kind, engine in engines.items():
        prompts = [
            _pre_query_ids(engine, family),
            chat_prompt_ids(engine.tokenizer, [{"role": "user", "content": "How does tea work?"}]),
            chat_prompt_ids(
                engine.tokenizer, [{"role": "user", "content": "Give me three facts about ice."}]
            ),
        ]
        spec = SamplingSpec(temperature=0.0, max_tokens=40, **_stops(engine, family))
        texts[kind] = [c.text for c in engine.generate(prompts, [spec] * len(prompts))]
    assert texts["vllm"] == texts["hf"]
    question = texts["vllm"][0]
    assert any(t in question for t in TOPICS), (
        f"the pre-query should elicit a request: {question!r}"
    )
    assert all(text.endswith((".", "?")) for text in texts["vllm"]), texts


@pytest.mark.parametrize("kind", KINDS)
def test_seeded_rows_do_not_depend_on_their_batch(engines, family, kind):
    engine = engines[kind]
    prompt = _pre_query_ids(engine, family)
    specs = [
        SamplingSpec(temperature=1.0, max_tokens=24, seed=s, **_stops(engine, family))
        for s in (11, 12, 11, 13, 14, 15)
    ]
    batch = [c.text for c in engine.generate([prompt] * len(specs), specs)]
    alone = engine.generate([prompt], [specs[0]])[0].text
    assert batch[0] == batch[2] == alone
    assert len(set(batch)) >= 3, f"different seeds should give different questions: {batch}"


@pytest.mark.parametrize("kind", KINDS)
def test_finish_reasons_token_counts_and_stops(engines, family, kind):
    engine = engines[kind]
    prompt = chat_prompt_ids(engine.tokenizer, [{"role": "user", "content": "How does rain work?"}])
    stops = _stops(engine, family)
    short, full, cut = engine.generate(
        [prompt] * 3,
        [
            SamplingSpec(temperature=0.0, max_tokens=3, **stops),
            SamplingSpec(temperature=0.0, max_tokens=80, **stops),
            SamplingSpec(
                temperature=0.0,
                max_tokens=80,
                stop=("is",) + stops["stop"],
                stop_token_ids=stops["stop_token_ids"],
            ),
        ],
    )
    assert short.finish_reason == "length" and short.num_output_tokens == 3
    assert full.finish_reason == "stop", "the tiny model ends its answers with <|im_end|>"
    assert 3 < full.num_output_tokens < 80
    assert full.num_prompt_tokens == len(prompt)
    assert "<|im_end|>" not in full.text and "<|im_start|>" not in full.text
    assert full.text.startswith(short.text)
    assert cut.finish_reason == "stop" and "is" not in cut.text
    assert full.text.startswith(cut.text) and len(cut.text) < len(full.text)


@pytest.mark.parametrize("kind", KINDS)
def test_concurrent_callers_share_one_engine(engines, family, kind):
    """Rows submitted from several threads at once get what they would get alone."""
    from concurrent.futures import ThreadPoolExecutor

    engine = engines[kind]
    prompt = _pre_query_ids(engine, family)
    specs = [
        SamplingSpec(temperature=1.0, max_tokens=24, seed=s, **_stops(engine, family))
        for s in range(12)
    ]
    alone = [c.text for c in engine.generate([prompt] * len(specs), specs)]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda s: engine.generate([prompt], [s])[0].text, specs))
    assert together == alone


def test_a_bad_request_fails_alone(engines, family):
    engine = engines["vllm"]
    stops = _stops(engine, family)
    too_long = engine.submit([1] * 600, SamplingSpec(temperature=0.0, max_tokens=4, **stops))
    assert "context length" in str(too_long.exception(timeout=60))
    fine = engine.submit(_pre_query_ids(engine, family), SamplingSpec(0.0, 4, **stops))
    assert fine.result(timeout=60).num_output_tokens > 0, "the engine must survive a bad request"


def test_ignore_eos_gives_exact_lengths(engines, family):
    lengths = {}
    for kind, engine in engines.items():
        prompt = chat_prompt_ids(engine.tokenizer, [{"role": "user", "content": "Why rain?"}])
        spec = SamplingSpec(
            temperature=0.0, max_tokens=70, ignore_eos=True, **_stops(engine, family)
        )
        out = engine.generate([prompt], [spec])[0]
        lengths[kind] = (out.num_output_tokens, out.finish_reason)
    assert lengths == {"vllm": (70, "length"), "hf": (70, "length")}


@pytest.mark.parametrize("kind", KINDS)
def test_n_samples_share_one_request_and_match_single_seeded_requests(engines, family, kind):
    engine = engines[kind]
    prompt = chat_prompt_ids(engine.tokenizer, [{"role": "user", "content": "Why do bees hum?"}])
    spec = SamplingSpec(temperature=1.0, max_tokens=24, seed=5, n=3, **_stops(engine, family))
    out = engine.submit(prompt, spec).result(timeout=120)
    assert len(out.samples) == 3 and out.text == out.samples[0].text
    assert all(s.finish_reason in ("stop", "length") and s.token_ids for s in out.samples)
    assert len({s.text for s in out.samples}) >= 2, [s.text for s in out.samples]
    # Sample j is what a single request seeded with seed + j writes.
    single = dataclasses.replace(spec, n=1, seed=6)
    assert engine.submit(prompt, single).result(timeout=120).text == out.samples[1].text
    assert engine.submit(prompt, dataclasses.replace(spec, n=1)).result().samples == ()


@pytest.mark.parametrize("kind", KINDS)
def test_banned_tokens_are_never_sampled(engines, family, kind):
    engine = engines[kind]
    prompt = _pre_query_ids(engine, family)
    base = SamplingSpec(temperature=1.0, max_tokens=1, **_stops(engine, family))
    free = [engine.submit(prompt, dataclasses.replace(base, seed=s)) for s in range(16)]
    firsts = {f.result(timeout=120).token_ids[0] for f in free}
    assert len(firsts) >= 2, "the test needs several distinct first tokens to ban"
    banned = dataclasses.replace(base, banned_token_ids=tuple(firsts))
    outs = [engine.submit(prompt, dataclasses.replace(banned, seed=s)) for s in range(16)]
    assert not {f.result(timeout=120).token_ids[0] for f in outs} & firsts


def test_extra_engine_kwargs_reach_the_real_vllm_engine_config(tiny_model_path):
    """engine.extra_kwargs goes to vLLM as is (here over our own CPU default of 8192): the
    installed vLLM builds its engine config from our arguments. (Built without starting a second
    in-process engine: closing one tears down state the session's engine shares.)"""
    from vllm.engine.arg_utils import EngineArgs

    from magpie_ray.engines.base import EngineSettings
    from magpie_ray.engines.vllm_engine import llm_kwargs

    settings = EngineSettings(
        kind="vllm",
        model_path=str(tiny_model_path),
        max_model_len=512,
        kv_cache_gib=0.25,
        extra_kwargs={"max_num_batched_tokens": 2048},
    )
    config = EngineArgs(**llm_kwargs(settings, on_gpu=False)).create_engine_config()
    assert config.scheduler_config.max_num_batched_tokens == 2048
    assert config.model_config.max_model_len == 512
