"""The generate step, in the order a row meets it:

seeds.py         the rows to make, deterministic from the run name (pure)
sampling.py      how each request of a row samples (pure)
rows.py          one row's work, pure apart from the engine Futures it waits on
base_answers.py  URIAL-style prompts for a base model's answer (pure + a thin wrapper)
row_pool.py      the one driver of many rows at once (actors, tests and benchmarks)
step.py          the Ray Data actor pool, its part files, passes and stats
"""
