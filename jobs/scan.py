"""Vectorised checks of one manifest record batch: the shared core of the reader, the validator and the summary.

Work is done per distinct value, not per row: each parameter column is dictionary-encoded, each distinct
cell value is parsed once, each distinct combination of values becomes one `StyleParams` once, and rows
map onto those by integer codes. A million-row manifest with a handful of sweeps therefore builds a
handful of `StyleParams`, and the per-row work left is string checks done by Arrow compute kernels.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jobs.coerce import coerce
from jobs.names import (
    CONTROL_PATTERN,
    IMAGE_FORMATS,
    MAX_NAME_BYTES,
    MAX_ROW_ID_BYTES,
    SEPARATOR_PATTERN,
    output_name_problem,
    row_id_problem,
)
from jobs.row_id import mask_suffix, params_key, row_ids_from_keys
from jobs.schema import (
    CONTENT_MASK_COLUMN,
    MASK_COLUMNS,
    OUTPUT_NAME_COLUMN,
    PARAM_COLUMNS,
    REQUIRED_COLUMNS,
    RESERVED_COLUMNS,
    ROW_ID_COLUMN,
    STYLE_MASK_COLUMN,
    ManifestError,
    column_type_problem,
    value_type,
)
from nst_core.params import StyleParams, validate_params

Issue = tuple[str | None, str]
"""(column or None, message) for one problem of one row."""

_CONTROL = r"[\x00-\x1f\x7f]"
_SCHEME = r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)(?:://|::)"
_PANDAS_INDEX = re.compile(r"^__index_level_\d+__$")
MAX_ROW_ID_CHARS = MAX_ROW_ID_BYTES  # the old name; the limit counts UTF-8 bytes
MAX_OUTPUT_NAME_BYTES = MAX_NAME_BYTES
_NAME_SUSPECT = rf"^\.|{SEPARATOR_PATTERN}|{CONTROL_PATTERN}"
_IMAGE_EXTENSION = r"(?i)\.(" + "|".join(IMAGE_FORMATS) + r")$"
_COMMON_SCHEMES = "file, s3, gs, az, abfs, http(s), memory"


@dataclass(frozen=True)
class Layout:
    """Which contract columns a manifest has; everything else is metadata."""

    names: tuple[str, ...]
    params: tuple[str, ...]
    metadata: tuple[str, ...]
    has_row_id: bool
    has_output_name: bool
    masks: tuple[str, ...] = ()
    """The mask columns the file has (`MASK_COLUMNS` order)."""


def layout_of(schema: pa.Schema) -> Layout:
    """Check the file-level contract: required columns present, contract columns of usable types."""
    names = tuple(schema.names)
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ManifestError(f"column name(s) appear more than once: {', '.join(repeated)}")
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        raise ManifestError(
            f"manifest lacks required column(s) {', '.join(missing)}; it has: {', '.join(names) or 'no columns'}"
        )
    type_problems = [p for f in schema if (p := column_type_problem(f.name, f.type)) is not None]
    if type_problems:
        raise ManifestError("; ".join(type_problems))
    return Layout(
        names=names,
        params=tuple(c for c in PARAM_COLUMNS if c in names),
        metadata=tuple(n for n in names if n not in RESERVED_COLUMNS and not _PANDAS_INDEX.match(n)),
        has_row_id=ROW_ID_COLUMN in names,
        has_output_name=OUTPUT_NAME_COLUMN in names,
        masks=tuple(c for c in MASK_COLUMNS if c in names),
    )


def column_warnings(layout: Layout) -> list[str]:
    """Metadata columns that look like misspelt contract columns: they would silently be ignored."""
    warnings = []
    for name in layout.metadata:
        close = difflib.get_close_matches(name.lower().strip(), sorted(RESERVED_COLUMNS), n=1, cutoff=0.8)
        if close:
            warnings.append(
                f"column {name!r} is not a manifest column and is kept as metadata; did you mean {close[0]!r}?"
            )
    return warnings


@dataclass
class ScannedBatch:
    """One record batch after checking: per-row issues, parameter sets, and ids."""

    start: int
    batch: pa.RecordBatch
    content: pa.Array
    style: pa.Array
    row_ids: pa.Array
    """Explicit ids, or derived ones where a row's URIs and parameters are usable; null otherwise."""
    combo_of_row: np.ndarray
    """Index into `combos` per row; −1 where the parameters are unusable."""
    combos: list[StyleParams]
    combo_keys: list[str]
    issues: dict[int, list[Issue]] = field(default_factory=dict)
    bad_uri: dict[str, np.ndarray] = field(default_factory=dict)
    """Per URI column, the rows whose URI is unusable (not worth opening)."""
    masks: dict[str, pa.Array] = field(default_factory=dict)
    """Per mask column the file has, its string values (null = no mask)."""

    def mask_column(self, column: str) -> list[str | None]:
        """One row's mask URI per row (all None when the file lacks the column)."""
        arr = self.masks.get(column)
        return arr.to_pylist() if arr is not None else [None] * len(self)

    def __len__(self) -> int:
        return int(self.batch.num_rows)

    def add(self, mask: np.ndarray, column: str | None, message: Any) -> None:
        """Record `message(i)` (or a fixed string) for every local row i where mask is set."""
        for i in np.flatnonzero(mask):
            text = message(int(i)) if callable(message) else message
            self.issues.setdefault(int(i), []).append((column, text))


def _decoded(arr: pa.Array) -> pa.Array:
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if isinstance(arr, pa.DictionaryArray):
        arr = arr.dictionary_decode()
    if hasattr(pa.types, "is_string_view") and pa.types.is_string_view(arr.type):
        arr = arr.cast(pa.large_string())  # few compute kernels accept views yet
    return arr


def _as_string(arr: pa.Array) -> pa.Array:
    arr = _decoded(arr)
    if pa.types.is_null(arr.type):
        return pa.nulls(len(arr), pa.string())
    return arr


def _mask(values: pa.Array) -> np.ndarray:
    mask: np.ndarray = np.asarray(values.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)
    return mask


def _freeze(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    return value


def encode_column(arr: pa.Array) -> tuple[np.ndarray, list[Any]]:
    """Dense codes per row (−1 = null) and the distinct values as Python objects.

    float16/float32 values are widened through their shortest decimal text, so a float32 `0.1` reads
    as 0.1 (and hashes into the same row id) rather than as 0.10000000149011612.
    """
    arr = _decoded(arr)
    t = arr.type
    n = len(arr)
    if pa.types.is_null(t):
        return np.full(n, -1, dtype=np.int64), []
    if pa.types.is_floating(t) and t.bit_width < 64:
        arr = pc.cast(pc.cast(arr, pa.string()), pa.float64())
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t) or not _hashable(t):
        inner = value_type(t.value_type) if hasattr(t, "value_type") else None
        if inner is not None and pa.types.is_floating(inner) and inner.bit_width < 64:
            try:
                arr = pc.cast(pc.cast(arr, pa.list_(pa.string())), pa.list_(pa.float64()))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                pass
        codes = np.empty(n, dtype=np.int64)
        seen: dict[Any, int] = {}
        distinct: list[Any] = []
        for i, value in enumerate(arr.to_pylist()):
            if value is None:
                codes[i] = -1
                continue
            key = _freeze(value)
            code = seen.get(key)
            if code is None:
                code = seen[key] = len(distinct)
                distinct.append(key)
            codes[i] = code
        return codes, distinct
    encoded = pc.dictionary_encode(arr)
    codes = np.asarray(encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)
    return codes, encoded.dictionary.to_pylist()


def _hashable(t: pa.DataType) -> bool:
    return bool(
        pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_boolean(t)
        or pa.types.is_decimal(t)
        or pa.types.is_string(t)
        or pa.types.is_large_string(t)
    )


def _named(problem: str, columns: tuple[str, ...]) -> str | None:
    """The first of `columns` that a validate_params message names, or None."""
    for column in columns:
        if re.search(rf"\b{re.escape(column)}\b", problem):
            return column
    return None


def _mentions_other(problem: str, column: str) -> bool:
    return _named(problem, tuple(c for c in PARAM_COLUMNS if c != column)) is not None


class BatchScanner:
    """Checks record batches of one manifest, caching parsed values and parameter sets across batches."""

    def __init__(self, layout: Layout, defaults: StyleParams) -> None:
        self.layout = layout
        self.defaults = defaults
        self._values: dict[str, dict[Any, tuple[bool, Any]]] = {c: {} for c in layout.params}
        self._combos: dict[tuple[Any, ...], tuple[StyleParams, str] | list[Issue]] = {}
        self._schemes: dict[str, str | None] = {}

    def _merged(self, overrides: dict[str, Any]) -> SimpleNamespace:
        fields = {name: getattr(self.defaults, name) for name in PARAM_COLUMNS}
        fields.update(overrides)
        return SimpleNamespace(**fields)

    def _value(self, column: str, raw: Any) -> tuple[bool, Any]:
        """Parse one distinct cell and check it against the defaults, so that every bad column is reported."""
        cache = self._values[column]
        try:
            return cache[raw]
        except (KeyError, TypeError):
            pass
        try:
            value = coerce(column, raw)
            # validate_params only reads attributes, so it can judge a candidate before it is built.
            problems = validate_params(self._merged({column: value}))
            own = [p for p in problems if not _mentions_other(p, column)]
            result: tuple[bool, Any] = (False, "; ".join(own)) if own else (True, value)
        except ValueError as exc:
            result = (False, str(exc))
        try:
            cache[raw] = result
        except TypeError:
            pass
        return result

    def _combo(self, key: tuple[Any, ...]) -> tuple[StyleParams, str] | list[Issue]:
        cached = self._combos.get(key)
        if cached is not None:
            return cached
        overrides = dict(key)
        problems = validate_params(self._merged(overrides))
        result: tuple[StyleParams, str] | list[Issue]
        if problems:
            result = [(_named(p, tuple(overrides)), p) for p in problems]
        else:
            params = self.defaults.replace(**overrides)
            result = (params, params_key(params))
        self._combos[key] = result
        return result

    def _scheme_problem(self, scheme: str) -> str | None:
        if scheme not in self._schemes:
            from fsspec.registry import known_implementations, registry

            known = set(known_implementations) | set(registry) | {"file", "local"}
            if scheme in known:
                self._schemes[scheme] = None
            else:
                close = difflib.get_close_matches(scheme.lower(), sorted(known), n=1, cutoff=0.5)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                self._schemes[scheme] = (
                    f"unknown URI scheme {scheme!r}{hint}; use a local path or a scheme fsspec knows, "
                    f"e.g. {_COMMON_SCHEMES}"
                )
        return self._schemes[scheme]

    def _check_uris(self, out: ScannedBatch, column: str, arr: pa.Array, *, required: bool = True) -> np.ndarray:
        """Flag bad URIs; returns the mask of rows whose URI is unusable. Null is a problem only when
        `required` (an optional column's null means "none")."""
        null = _mask(arr.is_null()) if required else np.zeros(len(arr), dtype=bool)
        empty = _mask(pc.equal(pc.utf8_length(arr), 0))
        control = _mask(pc.match_substring_regex(arr, _CONTROL))
        out.add(null, column, f"{column} is null; every row needs one")
        out.add(empty, column, f"{column} is an empty string" + ("" if required else "; leave it null for no mask"))
        out.add(control, column, lambda i: f"{column} contains a control character: {arr[i].as_py()!r}")
        bad: np.ndarray = null | empty | control
        schemes = pc.struct_field(pc.extract_regex(arr, _SCHEME), [0])
        for scheme in pc.unique(schemes).drop_null().to_pylist():
            problem = self._scheme_problem(scheme)
            if problem is not None:
                mask = _mask(pc.equal(schemes, scheme))
                out.add(mask, column, lambda i, p=problem: f"{column} {arr[i].as_py()!r}: {p}")
                bad |= mask
        return bad

    def _scan_masks(self, out: ScannedBatch, batch: pa.RecordBatch) -> np.ndarray:
        """Check the mask columns the file has; returns the rows whose masks are unusable."""
        bad = np.zeros(batch.num_rows, dtype=bool)
        for column in self.layout.masks:
            arr = out.masks[column] = _as_string(batch.column(column))
            out.bad_uri[column] = self._check_uris(out, column, arr, required=False)
            bad |= out.bad_uri[column]
        if STYLE_MASK_COLUMN in out.masks:
            content = out.masks.get(CONTENT_MASK_COLUMN)
            alone = _mask(out.masks[STYLE_MASK_COLUMN].is_valid())
            alone &= _mask(content.is_null()) if content is not None else np.ones(batch.num_rows, dtype=bool)
            out.add(
                alone,
                STYLE_MASK_COLUMN,
                f"{STYLE_MASK_COLUMN} without a {CONTENT_MASK_COLUMN}: regions are matched by colour between "
                "the two, so a style mask needs a content mask",
            )
            bad |= alone
        return bad

    def _mask_suffixes(self, out: ScannedBatch, rows: np.ndarray) -> list[str] | None:
        """The masks' part of the canonical id text for `rows`, or None when the file has no content masks."""
        content = out.masks.get(CONTENT_MASK_COLUMN)
        if content is None:
            return None
        idx = pa.array(rows)
        style = out.masks.get(STYLE_MASK_COLUMN)
        styles = style.take(idx).to_pylist() if style is not None else [None] * len(rows)
        return [mask_suffix(c, s) for c, s in zip(content.take(idx).to_pylist(), styles, strict=True)]

    def _check_row_ids(self, out: ScannedBatch, arr: pa.Array) -> None:
        c = ROW_ID_COLUMN
        out.add(
            _mask(arr.is_null()), c, "row_id is null; fill it on every row or drop the column to derive ids"
        )
        _check_names(out, c, arr, row_id_problem, MAX_ROW_ID_BYTES, None)

    def _check_output_names(self, out: ScannedBatch, arr: pa.Array) -> None:
        _check_names(out, OUTPUT_NAME_COLUMN, arr, output_name_problem, MAX_NAME_BYTES, _IMAGE_EXTENSION)

    def scan(self, batch: pa.RecordBatch, start: int) -> ScannedBatch:
        n = batch.num_rows
        content = _as_string(batch.column("content_uri"))
        style = _as_string(batch.column("style_uri"))
        out = ScannedBatch(
            start=start,
            batch=batch,
            content=content,
            style=style,
            row_ids=pa.nulls(n, pa.string()),
            combo_of_row=np.full(n, -1, dtype=np.int64),
            combos=[],
            combo_keys=[],
        )
        for column, arr in (("content_uri", content), ("style_uri", style)):
            out.bad_uri[column] = self._check_uris(out, column, arr)
        bad_uri = out.bad_uri["content_uri"] | out.bad_uri["style_uri"] | self._scan_masks(out, batch)
        if self.layout.has_output_name:
            self._check_output_names(out, _as_string(batch.column(OUTPUT_NAME_COLUMN)))

        bad_params = np.zeros(n, dtype=bool)
        codes: list[np.ndarray] = []
        values: list[list[tuple[bool, Any]]] = []
        for column in self.layout.params:
            col_codes, distinct = encode_column(batch.column(column))
            parsed = [self._value(column, raw) for raw in distinct]
            failing = [k for k, (ok, _) in enumerate(parsed) if not ok]
            if failing:
                mask = np.isin(col_codes, failing)
                out.add(mask, column, lambda i, cc=col_codes, pp=parsed: pp[cc[i]][1])
                bad_params |= mask
            codes.append(col_codes)
            values.append(parsed)

        good = np.flatnonzero(~bad_params)
        if len(good):
            if codes:
                matrix = np.stack(codes, axis=1)[good]
                unique, inverse = np.unique(matrix, axis=0, return_inverse=True)
                inverse = np.asarray(inverse).reshape(-1)
            else:
                unique, inverse = np.zeros((1, 0), dtype=np.int64), np.zeros(len(good), dtype=np.int64)
            combo_index = np.full(len(unique), -1, dtype=np.int64)
            for u, row in enumerate(unique):
                key = tuple(
                    (column, values[c][int(code)][1])
                    for c, (column, code) in enumerate(zip(self.layout.params, row, strict=True))
                    if code >= 0
                )
                result = self._combo(key)
                if isinstance(result, list):
                    mask = np.zeros(n, dtype=bool)
                    mask[good[inverse == u]] = True
                    for problem_column, message in result:
                        out.add(mask, problem_column, message)
                else:
                    combo_index[u] = len(out.combos)
                    out.combos.append(result[0])
                    out.combo_keys.append(result[1])
            out.combo_of_row[good] = combo_index[inverse]

        if self.layout.has_row_id:
            ids = _as_string(batch.column(ROW_ID_COLUMN))
            self._check_row_ids(out, ids)
            out.row_ids = ids
        else:
            usable = np.flatnonzero((out.combo_of_row >= 0) & ~bad_uri)
            if len(usable):
                idx = pa.array(usable)
                keys = [out.combo_keys[k] for k in out.combo_of_row[usable]]
                derived = row_ids_from_keys(
                    content.take(idx).to_pylist(),
                    style.take(idx).to_pylist(),
                    keys,
                    self._mask_suffixes(out, usable),
                )
                if len(usable) == n:
                    out.row_ids = pa.array(derived, pa.string())
                else:
                    full: list[str | None] = [None] * n
                    for i, rid in zip(usable.tolist(), derived, strict=True):
                        full[i] = rid
                    out.row_ids = pa.array(full, pa.string())
        return out


def _check_names(
    out: ScannedBatch,
    column: str,
    arr: pa.Array,
    problem: Any,
    max_bytes: int,
    extension: str | None,
) -> None:
    """Flag names that break the rule of jobs/names.py: Arrow kernels find the candidates (a superset of
    the failures), the scalar rule itself decides and words each one, so both always agree."""
    suspect = _mask(pc.equal(pc.utf8_length(arr), 0))
    suspect |= _mask(pc.match_substring_regex(arr, _NAME_SUSPECT))
    suspect |= _mask(pc.greater(pc.binary_length(arr), max_bytes))
    if extension is not None:
        suspect |= _mask(pc.invert(pc.match_substring_regex(arr, extension)))
    candidates = np.flatnonzero(suspect & _mask(arr.is_valid()))
    if not len(candidates):
        return
    messages = {int(i): problem(arr[int(i)].as_py()) for i in candidates}
    failing = np.zeros(len(arr), dtype=bool)
    failing[[i for i, m in messages.items() if m is not None]] = True
    out.add(failing, column, lambda i: messages[i])
