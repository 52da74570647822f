"""A chat model as the generate step's rows use it: the prompts its format renders and how its
answers are parsed, whatever the format (a chat template, or gpt-oss's harmony).

The generator (`model`) writes instructions: its pre-queries and follow-up prompts come from
here. The responder writes responses: the generator itself, or a second model
(`generate.responder`); its response prompts carry the thinking mode's template arguments
(Qwen3's `enable_thinking`) and its answers are split into reasoning and answer
(`reasoning.py`, or the harmony channels). Renders and parses only; the engine samples.
"""

from __future__ import annotations

import dataclasses
import datetime
from dataclasses import dataclass

from ...engines.base import Completion, Engine
from ...engines.tokens import TOKENIZER_LOCK, chat_prompt_ids, encode
from ...families import harmony, templates
from ...families.prepare import thinking_mode
from ...families.reasoning import Reasoned, split_reasoning
from ...families.variants import variant_text


@dataclass
class ChatModel:
    engine: Engine
    family: templates.Family
    name: str  # recorded as input_generator / output_generator
    engine_kind: str
    max_model_len: int
    thinking: str | None  # the thinking mode in use; None: the family has none
    stop_ids: tuple[int, ...]  # ids that end an instruction
    response_stop_ids: tuple[int, ...]  # ids that end a response
    deviation: str | None = None  # why the default pre-query differs from the chat template
    pre_query_variant: str = "family"  # generate.instruction.pre_query (families/variants.py)
    # (system-prompt key, date) -> (pre-query text, ids): every row of a key shares them.
    _pre_queries: dict = dataclasses.field(default_factory=dict)

    @property
    def tokenizer(self):
        return self.engine.tokenizer

    @property
    def harmony(self) -> bool:
        return self.family.renderer == "harmony"

    def pre_query(self, key: str | None, today: datetime.date) -> tuple[str, list[int]]:
        """The pre-query of system prompt `key` (None: the family's default) on `today`."""
        cache_key = (key, today)
        if cache_key not in self._pre_queries:
            if self.harmony:
                prompt = self.family.system_prompts[key] if key else None
                ids = harmony.pre_query_ids(self._effort, today, prompt)
                text = harmony.decode(ids)
            elif key is None and self.pre_query_variant != "family":
                text = variant_text(self.family, self.tokenizer, self.pre_query_variant, today)
                if text is None:
                    raise templates.TemplateError(
                        f"family {self.family.name!r} has no {self.pre_query_variant!r} pre-query"
                    )
                ids = encode(self.tokenizer, text)
            else:
                text = templates.render_pre_query(self.family, key, today)
                ids = encode(self.tokenizer, text)
            self._pre_queries[cache_key] = (text, ids)
        text, ids = self._pre_queries[cache_key]
        return text, list(ids)

    def response_prompt_ids(self, messages: list[dict[str, str]], today: datetime.date):
        """Token ids of `messages` (ending with a user turn) ready for the answer."""
        if self.harmony:
            return harmony.response_prompt_ids(messages, self._effort, today)
        kwargs = self.family.thinking.kwargs(self.thinking) if self.family.thinking else {}
        return chat_prompt_ids(self.tokenizer, messages, **kwargs)

    def follow_up_prompt_ids(
        self, history: list[dict[str, str]], system: str | None, today: datetime.date
    ) -> list[int]:
        """Token ids that make the model write the next user turn after `history` (answers
        only: earlier reasoning is left out, as chat templates do)."""
        if self.harmony:
            return harmony.follow_up_prompt_ids(history, self._effort, today, system)
        with TOKENIZER_LOCK:
            text = templates.render_follow_up_prompt(self.tokenizer, history, system)
        return encode(self.tokenizer, text)

    def parse(self, completion: Completion) -> Reasoned:
        """The answer and, for a reasoning model, the reasoning of one sample."""
        if self.harmony:
            return harmony.parse_response(list(completion.token_ids))
        thinking = self.family.thinking
        if thinking is None:
            return Reasoned(answer=completion.text.strip(), reasoning=None)
        opened = thinking.opened_by_prompt and self.thinking != "off"
        return split_reasoning(completion.text, thinking.start, thinking.end, opened)

    @property
    def _effort(self) -> str:
        return self.thinking or "medium"


def chat_model(
    engine: Engine,
    family: templates.Family,
    name: str,
    engine_kind: str,
    max_model_len: int,
    thinking: str | None = None,
    deviation: str | None = None,
    pre_query: str = "family",
) -> ChatModel:
    """`family` on `engine`; `thinking` None = the family's default mode."""
    tokenizer = engine.tokenizer
    if family.renderer == "chat_template":
        templates.fit_chat_template(family, tokenizer)
    mode = thinking_mode(family, thinking)
    stops = templates.stop_token_ids_for(family, tokenizer)
    if family.renderer == "harmony":
        response_stops = harmony.response_stop_ids()
    else:
        response_stops = templates.stop_token_ids_for(family, tokenizer, family.response_stops)
    return ChatModel(
        engine=engine,
        family=family,
        name=name,
        engine_kind=engine_kind,
        max_model_len=max_model_len,
        thinking=mode,
        stop_ids=tuple(stops),
        response_stop_ids=tuple(response_stops),
        deviation=deviation,
        pre_query_variant=pre_query,
    )
