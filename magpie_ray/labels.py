"""The tag label sets (the reference implementation's, exactly), in rank order where they have
one. Pure."""

from __future__ import annotations

DIFFICULTY_LABELS = ("very easy", "easy", "medium", "hard", "very hard")
QUALITY_LABELS = ("very poor", "poor", "average", "good", "excellent")
TASK_CATEGORIES = (
    "Information seeking",
    "Reasoning",
    "Planning",
    "Editing",
    "Coding & Debugging",
    "Math",
    "Role playing",
    "Data analysis",
    "Creative writing",
    "Advice seeking",
    "Brainstorming",
    "Others",
)
SAFETY_VERDICTS = ("safe", "unsafe")

# Labels that compare by rank in filters ("input_quality >= good").
ORDINAL_LABELS = {"input_quality": QUALITY_LABELS, "difficulty": DIFFICULTY_LABELS}
# Every label column's values in display order (reports show the whole scale).
LABEL_ORDERS = {**ORDINAL_LABELS, "task_category": TASK_CATEGORIES, "safety": SAFETY_VERDICTS}
