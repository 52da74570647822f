"""Progress lines: rows of the total, rates, ETA, at most one line per interval."""

from magpie_ray.progress import Progress, duration


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_a_line_per_interval_with_rates_and_eta():
    clock, lines = Clock(), []
    progress = Progress("generate", 10_000, 30, tokens=True, clock=clock, emit=lines.append)
    clock.now += 10
    progress.add(400, 90_000)
    assert lines == [], "no line before the interval has passed"
    clock.now += 20
    progress.add(800, 150_000)
    assert lines == [
        "generate: 1,200 / 10,000 rows (12%), 40.0 rows/s, 8,000 output tok/s, ETA 3m 40s"
    ]
    clock.now += 5
    progress.add(100)
    assert len(lines) == 1
    clock.now += 300
    progress.add(8_700)
    assert lines[-1].startswith("generate: 10,000 / 10,000 rows (100%)")
    assert lines[-1].endswith("done in 5m 35s")


def test_no_rate_yet_and_off():
    clock, lines = Clock(), []
    progress = Progress("tag", 50, 1, clock=clock, emit=lines.append)
    clock.now += 2
    progress.add(0)
    assert lines == ["tag: 0 / 50 rows (0%), 0.0 rows/s, ETA unknown (no row done yet)"]
    off = Progress("tag", 50, 0, clock=clock, emit=lines.append)
    clock.now += 1000
    off.add(10)
    assert len(lines) == 1


def test_durations_read_as_a_person_writes_them():
    assert [duration(s) for s in (0, 45, 214, 7500)] == ["0s", "45s", "3m 34s", "2h 05m"]


def test_the_last_line_is_not_repeated():
    clock, lines = Clock(), []
    progress = Progress("tag", 10, 5, clock=clock, emit=lines.append)
    clock.now += 6
    progress.add(10)
    progress.finish()
    assert len(lines) == 1 and "10 / 10 rows" in lines[0]
    quiet = Progress("tag", 10, 5, clock=clock, emit=lines.append)
    quiet.add(4)
    quiet.finish()
    assert lines[-1].startswith("tag: 4 / 10 rows (40%)")
