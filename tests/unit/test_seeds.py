from magpie_ray.config import InstructionSampling
from magpie_ray.steps.seeds import make_seed_rows, row_seed, row_uuid


def test_uuids_are_deterministic_distinct_and_scoped_by_run_name():
    rows = make_seed_rows("run-a", 0, 500, InstructionSampling())
    again = make_seed_rows("run-a", 0, 500, InstructionSampling())
    assert [r["uuid"] for r in rows] == [r["uuid"] for r in again]
    assert len({r["uuid"] for r in rows}) == 500
    other = {r["uuid"] for r in make_seed_rows("run-b", 0, 500, InstructionSampling())}
    assert not other & {r["uuid"] for r in rows}, "two runs must never share a uuid"
    # A longer run extends a shorter one: the first rows keep their uuids and seeds.
    longer = make_seed_rows("run-a", 0, 600, InstructionSampling())
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
    assert row_uuid("demo", 3) == make_seed_rows("demo", 9, 4, InstructionSampling())[3]["uuid"]


def test_rows_carry_the_instruction_sampling():
    sampling = InstructionSampling(
        temperature=1.2, top_p=0.995, min_p=0.05, max_tokens=99, system_prompt="math"
    )
    row = make_seed_rows("r", 0, 1, sampling)[0]
    assert (row["temperature"], row["top_p"], row["min_p"], row["max_tokens"]) == (
        1.2,
        0.995,
        0.05,
        99,
    )
    assert row["system_prompt_key"] == "math"
