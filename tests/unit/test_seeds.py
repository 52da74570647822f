from collections import Counter

import pytest

from magpie_ray.config import DecodingCell, GenerateConfig, InstructionSampling
from magpie_ray.steps.generate.seeds import make_seed_rows, pick_by_weight, row_seed, row_uuid


def test_uuids_are_deterministic_distinct_and_scoped_by_run_name():
    rows = make_seed_rows("run-a", 0, 500, GenerateConfig())
    again = make_seed_rows("run-a", 0, 500, GenerateConfig())
    assert [r["uuid"] for r in rows] == [r["uuid"] for r in again]
    assert len({r["uuid"] for r in rows}) == 500
    other = {r["uuid"] for r in make_seed_rows("run-b", 0, 500, GenerateConfig())}
    assert not other & {r["uuid"] for r in rows}, "two runs must never share a uuid"
    # A longer run extends a shorter one: the first rows keep their uuids and seeds.
    longer = make_seed_rows("run-a", 0, 600, GenerateConfig())
    assert longer[:500] == rows


def test_seeds_depend_on_base_seed_and_fit_in_31_bits():
    assert row_seed(0, "r", 7) == row_seed(0, "r", 7)
    assert row_seed(0, "r", 7) != row_seed(1, "r", 7)
    seeds = [row_seed(0, "r", i) for i in range(2000)]
    assert len(set(seeds)) > 1990
    assert all(0 <= s < 2**31 for s in seeds)


def test_uuid_is_a_pure_function_of_run_name_and_index():
    # Pinned: changing the namespace or the name format would orphan every existing run.
    assert row_uuid("demo", 0) == "facb7993-5889-58f1-82c4-33072f627c0e"
    assert row_uuid("demo", 3) == make_seed_rows("demo", 9, 4, GenerateConfig())[3]["uuid"]


def test_rows_carry_the_instruction_sampling():
    sampling = InstructionSampling(temperature=1.2, top_p=0.995, min_p=0.05, max_tokens=99)
    row = make_seed_rows("r", 0, 1, GenerateConfig(instruction=sampling))[0]
    assert (row["temperature"], row["top_p"], row["min_p"], row["max_tokens"]) == (
        1.2,
        0.995,
        0.05,
        99,
    )
    assert row["system_prompt_key"] is None, "no mixture: the family's default pre-query"


def test_pick_by_weight_splits_the_unit_interval():
    assert [pick_by_weight([1, 3], u) for u in (0.0, 0.24, 0.25, 0.99)] == [0, 0, 1, 1]
    assert pick_by_weight([0, 2, 0], 0.999999) == 1
    assert pick_by_weight([1, 0], 1.0) == 0, "rounding at the top lands on a non-empty option"


def test_domain_mixture_is_split_by_weight_in_every_prefix():
    gen = GenerateConfig(system_prompts={"default": 2, "math": 1, "code": 1, "translation": 0})
    rows = make_seed_rows("mix", 0, 1000, gen)
    for n in (40, 200, 1000):
        counts = Counter(r["system_prompt_key"] for r in rows[:n])
        assert set(counts) == {None, "math", "code"}, "weight 0 is never picked"
        assert abs(counts[None] - n / 2) <= 3 and abs(counts["math"] - n / 4) <= 3, counts
    # A row keeps its prompt when the run grows (resume with a larger num_samples).
    assert make_seed_rows("mix", 0, 1200, gen)[:1000] == rows
    assert make_seed_rows("other", 0, 1000, gen) != rows


def test_paper_pro_grid_cells_get_their_share():
    cells = [(1.0, 1.0), (1.1, 0.995), (1.2, 0.995), (1.25, 0.99)]
    grid = [DecodingCell(temperature=t, top_p=p, weight=1) for t, p in cells]
    rows = make_seed_rows("pro", 0, 400, GenerateConfig(instruction=InstructionSampling(grid=grid)))
    counts = Counter((r["temperature"], r["top_p"]) for r in rows)
    assert set(counts) == set(cells)
    assert all(abs(c - 100) <= 3 for c in counts.values()), counts


@pytest.mark.parametrize("weights", [{"a": 1, "b": 1}, {"a": 3, "b": 1}])
def test_grid_and_domain_assignments_are_not_in_lockstep(weights):
    grid = [DecodingCell(temperature=t) for t in (0.5, 1.0)]
    gen = GenerateConfig(system_prompts=weights, instruction=InstructionSampling(grid=grid))
    pairs = Counter(
        (r["system_prompt_key"], r["temperature"]) for r in make_seed_rows("x", 0, 800, gen)
    )
    assert len(pairs) == 4, f"every (domain, cell) pair occurs: {pairs}"
