"""The manifest contract: column names, per-column kinds and accepted Arrow types; used by every `jobs` module.

Parameter columns are derived from `nst_core.params.STYLE_PARAM_FIELDS` (names) and from the type hints
of `StyleParams` (kinds), so adding a field to the engine adds a manifest column without touching this file.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from enum import Enum
from types import NoneType, UnionType
from typing import Any

import pyarrow as pa

from nst_core.params import STYLE_PARAM_FIELDS, StyleParams

REQUIRED_COLUMNS: tuple[str, ...] = ("content_uri", "style_uri")
CONTENT_MASK_COLUMN = "content_mask_uri"
STYLE_MASK_COLUMN = "style_mask_uri"
MASK_COLUMNS: tuple[str, ...] = (CONTENT_MASK_COLUMN, STYLE_MASK_COLUMN)
"""Optional region masks (Gatys et al. 2017 spatial control); null = no mask. Same URI forms as the images."""
URI_COLUMNS: tuple[str, ...] = (*REQUIRED_COLUMNS, *MASK_COLUMNS)
ROW_ID_COLUMN = "row_id"
OUTPUT_NAME_COLUMN = "output_name"
PARAM_COLUMNS: tuple[str, ...] = tuple(f.name for f in STYLE_PARAM_FIELDS)
RESERVED_COLUMNS: frozenset[str] = frozenset(
    (*URI_COLUMNS, ROW_ID_COLUMN, OUTPUT_NAME_COLUMN, *PARAM_COLUMNS)
)


class Kind(str, Enum):
    """How a parameter column's values are read."""

    int = "int"
    float = "float"
    bool = "bool"
    choice = "choice"
    layers = "layers"
    floats = "floats"
    schedule = "schedule"


def _kind_of(hint: Any) -> tuple[Kind, bool]:
    optional = False
    if isinstance(hint, UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not NoneType]
        optional = len(args) != len(typing.get_args(hint))
        (hint,) = args
    if isinstance(hint, type) and issubclass(hint, Enum):
        return Kind.choice, optional
    if hint is bool:
        return Kind.bool, optional
    if hint is int:
        return Kind.int, optional
    if hint is float:
        return Kind.float, optional
    if typing.get_origin(hint) is tuple:
        item = typing.get_args(hint)[0]
        if item is str:
            return Kind.layers, optional
        if item is float:
            return Kind.floats, optional
        if typing.get_origin(item) is tuple:
            return Kind.schedule, optional
    raise TypeError(f"no manifest column kind for StyleParams type {hint!r}")


_HINTS = typing.get_type_hints(StyleParams)
PARAM_KINDS: dict[str, Kind] = {name: _kind_of(_HINTS[name])[0] for name in PARAM_COLUMNS}
OPTIONAL_PARAMS: frozenset[str] = frozenset(name for name in PARAM_COLUMNS if _kind_of(_HINTS[name])[1])
LIST_KINDS: frozenset[Kind] = frozenset({Kind.layers, Kind.floats, Kind.schedule})


class ManifestError(ValueError):
    """A problem with the whole file (unreadable, not Parquet, a missing or mistyped column): no row can run."""


@dataclass(frozen=True)
class ManifestRow:
    """One runnable job, with its parameters resolved against the run-level defaults."""

    index: int
    """0-based row number in the manifest file (as pandas counts)."""
    row_id: str
    content_uri: str
    style_uri: str
    params: StyleParams
    output_name: str | None
    metadata: dict[str, Any]
    """Every non-contract column, as JSON-safe Python values, carried into the results."""
    content_mask_uri: str | None = None
    style_mask_uri: str | None = None
    """Region masks; a style mask only ever comes with a content mask (regions are matched between them)."""


@dataclass(frozen=True)
class RowProblem:
    """One bad row (or one problem of a row), reported instead of stopping the other rows."""

    index: int
    row_id: str | None
    column: str | None
    message: str

    def __str__(self) -> str:
        where = f"row {self.index}"
        if self.row_id:
            where += f" (row_id {self.row_id})"
        if self.column:
            where += f" [{self.column}]"
        return f"{where}: {self.message}"


def _is_string(t: pa.DataType) -> bool:
    return bool(
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or (hasattr(pa.types, "is_string_view") and pa.types.is_string_view(t))
    )


def _is_list(t: pa.DataType) -> bool:
    return bool(
        pa.types.is_list(t)
        or pa.types.is_large_list(t)
        or pa.types.is_fixed_size_list(t)
        or (
            hasattr(pa.types, "is_list_view") and (pa.types.is_list_view(t) or pa.types.is_large_list_view(t))
        )
    )


def _is_number(t: pa.DataType) -> bool:
    return bool(pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t))


def value_type(t: pa.DataType) -> pa.DataType:
    """The logical type: dictionary-encoded columns are judged by their values."""
    return t.value_type if pa.types.is_dictionary(t) else t


_EXPECTED: dict[Kind, str] = {
    Kind.int: "an integer, a float holding an integer, or a string",
    Kind.float: "a number or a string",
    Kind.bool: "a boolean, 0/1, or a string",
    Kind.choice: "a string",
    Kind.layers: "a list of strings or a comma-separated string",
    Kind.floats: "a list of numbers or a comma-separated string",
    Kind.schedule: "a string like '256:300,512:200', a list of 'size:steps' strings or of [size, steps] pairs",
}


def _accepts(kind: Kind, t: pa.DataType) -> bool:
    if pa.types.is_null(t) or _is_string(t):
        return True
    if kind in (Kind.int, Kind.float):
        return _is_number(t)
    if kind is Kind.bool:
        return bool(pa.types.is_boolean(t) or pa.types.is_integer(t))
    if kind is Kind.layers:
        return _is_list(t) and _is_string(value_type(t.value_type))
    if kind is Kind.floats:
        return _is_list(t) and _is_number(value_type(t.value_type))
    if kind is Kind.schedule:
        if not _is_list(t):
            return False
        inner = value_type(t.value_type)
        return _is_string(inner) or (_is_list(inner) and pa.types.is_integer(value_type(inner.value_type)))
    return False


def column_type_problem(name: str, arrow_type: pa.DataType) -> str | None:
    """Why a contract column cannot hold this Arrow type, or None when it can."""
    t = value_type(arrow_type)
    if name in PARAM_KINDS:
        kind = PARAM_KINDS[name]
        if _accepts(kind, t):
            return None
        return f"column {name!r} has type {arrow_type}; expected {_EXPECTED[kind]}"
    if name in (*URI_COLUMNS, ROW_ID_COLUMN, OUTPUT_NAME_COLUMN):
        if pa.types.is_null(t) or _is_string(t):
            return None
        return f"column {name!r} has type {arrow_type}; expected a string column"
    return None


def is_string_type(arrow_type: pa.DataType) -> bool:
    return _is_string(value_type(arrow_type))


def arrow_type_for(name: str) -> pa.DataType:
    """The native Arrow type the builder writes for a parameter column."""
    kind = PARAM_KINDS[name]
    return {
        Kind.int: pa.int64(),
        Kind.float: pa.float64(),
        Kind.bool: pa.bool_(),
        Kind.choice: pa.string(),
        Kind.layers: pa.list_(pa.string()),
        Kind.floats: pa.list_(pa.float64()),
        Kind.schedule: pa.string(),  # the `256:300,512:200` text form: readable in any Parquet viewer
    }[kind]
