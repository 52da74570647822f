"""Model families: what each chat model's format is, as data and the checks on it.

A family (one YAML file in `shipped/`, or a user's folder in `template_dirs`) says how its
model's chat template opens a user turn (the pre-query template), what stops a turn, its system
prompts and follow-up text, its thinking modes and any declared deviation. `templates.py` loads
and renders families, `checks.py` checks them against a tokenizer's own chat template,
`harmony.py` renders and parses gpt-oss's harmony format, `reasoning.py` splits reasoning from
answers, and `prepare.py` readies a run's generator and responder families before any weights
load. Below the steps and the engines' users; imports only the config schema and the engines'
tokenizer helpers.
"""
