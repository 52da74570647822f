"""RowPool: an actor's rows in flight, handed back in finishing order to calls first come,
first served (pure scheduling: the rows here wait on Futures this test resolves)."""

import threading
from concurrent.futures import Future

import pytest

from magpie_ray.steps.generate.row_pool import RowPool


def _row(name: str, gates: dict[str, Future]):
    """A row that waits on its gate, then returns its name."""
    yield gates[name]
    return name


def _call(pool, steps, out, key):
    out[key] = pool.run(steps)


def _wait_for(predicate, what: str):
    for _ in range(200):
        if predicate():
            return
        threading.Event().wait(0.01)
    raise AssertionError(what)


def test_a_call_returns_when_as_many_rows_finished_not_its_own_slowest():
    pool = RowPool()
    gates = {name: Future() for name in ["a1", "a2", "b1", "b2"]}
    out: dict[str, list] = {}
    first = threading.Thread(
        target=_call, args=(pool, [_row("a1", gates), _row("a2", gates)], out, "a")
    )
    first.start()
    _wait_for(lambda: len(pool._claims) == 1, "the first call never registered")
    second = threading.Thread(
        target=_call, args=(pool, [_row("b1", gates), _row("b2", gates)], out, "b")
    )
    second.start()
    _wait_for(lambda: len(pool._claims) == 2, "the second call never registered")
    # a2 is the slow row: b1 and a1 finish first and go to the first call.
    gates["b1"].set_result(None)
    gates["a1"].set_result(None)
    first.join(timeout=5)
    assert not first.is_alive(), "the first call waited for its own slowest row"
    assert sorted(out["a"]) == ["a1", "b1"]
    assert second.is_alive()
    gates["b2"].set_result(None)
    gates["a2"].set_result(None)
    second.join(timeout=5)
    assert sorted(out["b"]) == ["a2", "b2"]
    assert sorted(out["a"] + out["b"]) == sorted(gates), "every row exactly once"


def test_a_row_error_reaches_the_call_it_would_have_been_given_to():
    pool = RowPool()
    gate: Future = Future()

    def failing():
        yield gate
        raise ValueError("bad row")

    gate.set_result(None)
    with pytest.raises(ValueError, match="bad row"):
        pool.run([failing()])
    assert pool.run([]) == []
    fine = {"x": Future()}
    fine["x"].set_result(None)
    assert pool.run([_row("x", fine)]) == ["x"], "the pool keeps serving after a row error"
