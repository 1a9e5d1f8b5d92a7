"""Turn one manifest cell into an engine parameter value; called by the batch scanner for each distinct cell.

A cell may hold a native value (int, float, bool, list) or the text form of `nst_core.params.parse_field`;
both meet in the same validation so that a value is judged the same way whichever tool wrote the file.
NaN is an error, not a missing value: Parquet has real nulls, and pandas writes its NaN placeholders as
nulls, so a NaN that reaches the file was written on purpose.
"""

from __future__ import annotations

import decimal
import math
from typing import Any

from jobs.schema import PARAM_KINDS, Kind
from nst_core.params import enum_of, parse_field


def _plain(value: Any) -> Any:
    """numpy scalars and arrays → Python values (pandas rows hand these over)."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return value.tolist()
    return value


def _as_int(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got the boolean {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, (float, decimal.Decimal)):
        if not math.isfinite(value) or value != int(value):
            raise ValueError(f"{name} must be an integer, got {value!r}")
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            raise ValueError(f"{name}: cannot parse {value!r} as an integer") from None
    raise ValueError(f"{name} must be an integer, got {type(value).__name__} {value!r}")


def _as_float(name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number, got the boolean {value!r}")
    if isinstance(value, (int, float, decimal.Decimal)):
        try:
            return float(value)
        except OverflowError:
            raise ValueError(f"{name} must be a finite number, got {value!r}") from None
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            raise ValueError(f"{name}: cannot parse {value!r} as a number") from None
    raise ValueError(f"{name} must be a number, got {type(value).__name__} {value!r}")


def _as_stage(name: str, stage: Any) -> tuple[int, int]:
    if isinstance(stage, str):
        parsed = parse_field(name, stage)
        if len(parsed) != 1:
            raise ValueError(f"{name}: stage {stage!r} must be one 'size:steps' pair")
        pair: tuple[int, int] = parsed[0]
        return pair
    if isinstance(stage, (list, tuple)) and len(stage) == 2:
        return (_as_int(name, stage[0]), _as_int(name, stage[1]))
    raise ValueError(f"{name}: stage {stage!r} must be 'size:steps' or a [size, steps] pair")


def coerce(name: str, value: Any) -> Any:
    """The engine value of one non-null cell; ValueError whose message starts with the column name."""
    kind = PARAM_KINDS[name]
    value = _plain(value)
    try:
        if isinstance(value, str):
            return parse_field(name, value)
        if kind is Kind.int:
            return _as_int(name, value)
        if kind is Kind.float:
            return _as_float(name, value)
        if kind is Kind.bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            raise ValueError(f"{name} must be a boolean (true/false or 0/1), got {value!r}")
        if kind is Kind.choice:
            enum_type = enum_of(name)
            assert enum_type is not None
            if isinstance(value, enum_type):
                return value
            raise ValueError(f"{name} must be one of {', '.join(e.value for e in enum_type)}, got {value!r}")
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{name} must be a list or a comma-separated string, got {value!r}")
        if kind is Kind.layers:
            if not all(isinstance(v, str) for v in value):
                raise ValueError(f"{name} must list layer names as strings, got {value!r}")
            return tuple(v.strip() for v in value)
        if kind is Kind.floats:
            return tuple(_as_float(name, v) for v in value)
        if kind is Kind.schedule:
            return tuple(_as_stage(name, stage) for stage in value)
    except ValueError as exc:
        message = str(exc)
        if message.startswith(name):
            raise
        raise ValueError(f"{name}: {message}") from None
    except (TypeError, OverflowError, ArithmeticError) as exc:
        raise ValueError(f"{name}: cannot use {value!r} ({exc})") from None
    raise AssertionError(kind)

