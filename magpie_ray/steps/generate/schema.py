"""The generate step's output: the columns of `generated/` parts and of dropped rows.

`GENERATED_SCHEMA` keeps the released Magpie field names where they apply and adds finish
reasons, token counts, per-turn lists and reasoning columns; a dropped row is
`storage.DROPPED_SCHEMA` (uuid, index, step, reason, detail).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

STEP = "generate"

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
                    # why the pre-query differs from the chat template (the family's declared
                    # deviation); null when it does not
                    ("pre_query_deviation", pa.string()),
                    ("flaming_tokens", pa.float64()),  # first-token logits / this; null: off
                    # follow-up instructions' sampling (null: single-turn rows)
                    (
                        "follow_up",
                        pa.struct(
                            [
                                ("temperature", pa.float64()),
                                ("top_p", pa.float64()),
                                ("min_p", pa.float64()),
                                ("max_tokens", pa.int64()),
                                ("sanitize", pa.bool_()),
                                ("banned_first_token_prefixes", _STRINGS),
                            ]
                        ),
                    ),
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
                    ("repetition_penalty", pa.float64()),
                    ("max_tokens", pa.int64()),
                    ("output_generator", pa.string()),
                    ("engine", pa.string()),
                    ("num_responses", pa.int64()),  # K of `responses`; 0 = off
                    ("responses_temperature", pa.float64()),
                    ("responses_top_p", pa.float64()),
                    ("responses_max_tokens", pa.int64()),
                    ("thinking", pa.string()),  # a reasoning model's mode; null: none
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
        # A reasoning model's reasoning, apart from the answer in `response` (null: none).
        # Unclosed reasoning (max_tokens hit while thinking) is kept with an empty response.
        ("response_reasoning", pa.string()),
        ("turn_response_reasonings", _STRINGS),  # one per turn; null when there is none
        ("responses_reasoning", _STRINGS),  # of the preference samples
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


def dropped_row(row: dict, reason: str, detail: str = "") -> dict:
    return {
        "uuid": row["uuid"],
        "index": row["index"],
        "step": STEP,
        "reason": reason,
        "detail": detail,
    }
