"""Arrow column helpers for steps that add columns to batches of rows. Pure; a leaf module.

A tagger declares its output columns as `{name: pa.DataType}` and sets them with
`set_columns`; why a tag is null goes into the shared `tag_errors` column (a list of
{tag, reason}) through `append_errors`.
"""

from __future__ import annotations

import pyarrow as pa

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
TAG_ERROR = pa.struct([("tag", pa.string()), ("reason", pa.string())])
ERROR_FIELDS: dict[str, pa.DataType] = {"tag_errors": pa.list_(TAG_ERROR)}


def set_columns(table: pa.Table, values: dict[str, list], fields: dict[str, pa.DataType]):
    """`table` with the columns of `values` set (replaced if present), typed by `fields`."""
    for name, column in values.items():
        array = pa.array(column, type=fields[name])
        index = table.schema.get_field_index(name)
        if index >= 0:
            table = table.set_column(index, name, array)
        else:
            table = table.append_column(name, array)
    return table


def append_errors(table: pa.Table, errors: list[list[tuple[str, str]]]) -> pa.Table:
    """Adds each row's (tag, reason) pairs to its `tag_errors` list."""
    if "tag_errors" in table.column_names:
        before = table.column("tag_errors").to_pylist()
    else:
        before = [None] * table.num_rows
    merged = [
        (old or []) + [{"tag": tag, "reason": reason} for tag, reason in new]
        for old, new in zip(before, errors, strict=True)
    ]
    return set_columns(table, {"tag_errors": merged}, ERROR_FIELDS)


def conform(table: pa.Table, fields: dict[str, pa.DataType]) -> pa.Table:
    """Every column of `fields` present (null where missing), after the table's other columns,
    in `fields` order."""
    base = [name for name in table.column_names if name not in fields]
    for name, kind in fields.items():
        if name not in table.column_names:
            table = table.append_column(name, pa.nulls(table.num_rows, kind))
    return table.select(base + list(fields))
