"""The tag step: `step.py` runs every tagger of `registry.py` over the generated rows.

Taggers, one module each, declare their columns (`spec.Tagger`): `text_tags.py` (language,
lengths), `reward.py`, `safety.py` (guard), `judge.py` (difficulty, quality, task), `embed.py`.
"""
