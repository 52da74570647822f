"""Base-model answers: a base (non-chat) model answers each instruction in context.

The paper's reward difference compares an instruction's reward with the reward of a base
model's answer (r* - r_base). A base model has no chat template, so it is prompted URIAL-style:
a preamble and a few fenced query/answer examples (`magpie_ray/examples/urial.yaml`, or a user's
file with the same keys), then the new query and an open answer fence. The answer ends at the
next "# Query:" heading the model starts to write; the closing fence is removed.

The prompts come from `urial.py` (pure); `BaseAnswerer` wraps an engine (the generate step
runs one beside the chat model's, in the same actor). Writes nothing itself: the generate step
stores `base_output`, `base_generator` and `base_finish_reason` (`prompt_too_long` when the
instruction leaves no room for an answer, with `base_output` null).
"""

from __future__ import annotations

from concurrent.futures import Future

from ...engines.base import Completion, Engine, SamplingSpec
from ...engines.tokens import encode_document
from ...urial import STOP_STRINGS, Examples, clean_answer, render_prompt


class BaseAnswerer:
    """Submits instructions to a base model's engine; `submit` returns a Future[Completion]
    whose text is already cleaned."""

    def __init__(
        self, engine: Engine, name: str, examples: Examples, spec: SamplingSpec, max_model_len: int
    ):
        self.engine, self.name, self.examples = engine, name, examples
        self.spec, self.max_model_len = spec, max_model_len

    def submit(self, instruction: str, seed: int | None = None) -> Future:
        prompt = encode_document(self.engine.tokenizer, render_prompt(self.examples, instruction))
        room = self.max_model_len - len(prompt)
        result: Future = Future()
        if room < 1:
            result.set_result(Completion("", len(prompt), 0, "prompt_too_long"))
            return result
        spec = SamplingSpec(
            temperature=self.spec.temperature,
            top_p=self.spec.top_p,
            max_tokens=min(self.spec.max_tokens, room),
            seed=seed,
            stop=STOP_STRINGS,
        )
        raw = self.engine.submit(prompt, spec)
        raw.add_done_callback(lambda done: _resolve(result, done))
        return result


def _resolve(result: Future, done: Future) -> None:
    error = done.exception()
    if error is not None:
        result.set_exception(error)
        return
    completion = done.result()
    result.set_result(
        Completion(
            text=clean_answer(completion.text),
            num_prompt_tokens=completion.num_prompt_tokens,
            num_output_tokens=completion.num_output_tokens,
            finish_reason=completion.finish_reason,
            token_ids=completion.token_ids,
        )
    )
