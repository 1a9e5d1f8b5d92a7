"""Stable row ids: a hash of what determines the output image; called by the batch scanner at read time.

Formula (version 2), documented in docs/manifest.md so that any tool can recompute it:

    params_key = ";".join(f"{name}={format_field(name, value)}"
                          for name, value in sorted effective fields if it differs from StyleParams()'s default)
    canonical  = "nst-row/2\\n" + content_uri + "\\n" + style_uri + "\\n" + params_key
    if content_mask_uri is not None:  # region masks change the image; rows without them keep their ids
        canonical += "\\nmasks\\n" + content_mask_uri + "\\n" + (style_mask_uri or "")
    row_id     = sha256(canonical.encode("utf-8")).hexdigest()[:20]

Only fields that differ from the library default are listed, so adding a field whose default reproduces
the old behaviour leaves every existing id unchanged. The price: an absent field *means* its default, so
changing a default value in `StyleParams` changes what existing ids stand for and requires bumping
ROW_ID_VERSION (a test pins the defaults' fingerprint to enforce this).

`precision` is left out when it is `auto` (the default) or `fp32` (the default before `auto` existed).
`log_every` is left out unless `early_stop` > 0: it only sets how often losses are recorded, except that
early stopping compares the loss every `log_every` steps. Every other field counts, even where the engine
ignores it (size/steps under a schedule): two jobs wrongly sharing an id would make a resumed run skip real
work, while two ids for one image only cost a duplicate computation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from jobs.schema import PARAM_COLUMNS
from nst_core.params import StyleParams, format_field

ROW_ID_VERSION = "nst-row/2"
ROW_ID_HEX = 20
"""80 bits: a collision among 10⁹ rows has probability ~4e-7."""
_SORTED_FIELDS: tuple[str, ...] = tuple(sorted(PARAM_COLUMNS))
_DEFAULT_TEXT: dict[str, str] = {
    name: format_field(name, getattr(StyleParams(), name)) for name in PARAM_COLUMNS
}
"""Defaults compared in their canonical text form, so 1e6 and 1000000 (or a list and a tuple) agree."""
_ALSO_DEFAULT: dict[str, tuple[str, ...]] = {"precision": ("fp32",)}
"""Values that count as the default in the id: `precision`'s default became `auto` (fp32 on CPU, bf16 on
CUDA) after ids had been made with fp32 as the default, so fp32 still reads as absent: every existing id
is unchanged, and an fp32 row and an auto row share one (precision is an execution choice)."""


def params_key(params: StyleParams) -> str:
    """Canonical text of the effective parameters that change the output image, as differences from the defaults."""
    parts = []
    for name in _SORTED_FIELDS:
        if name == "log_every" and not params.early_stop > 0:
            continue  # without early stopping it only sets how often losses are recorded
        text = format_field(name, getattr(params, name))
        if text != _DEFAULT_TEXT[name] and text not in _ALSO_DEFAULT.get(name, ()):
            parts.append(f"{name}={text}")
    return ";".join(parts)


def _check_uri_text(uri: str) -> None:
    if "\n" in uri or "\r" in uri:
        raise ValueError(f"URI contains a line break: {uri!r}")


def row_id_for(
    content_uri: str,
    style_uri: str,
    params: StyleParams,
    *,
    content_mask_uri: str | None = None,
    style_mask_uri: str | None = None,
) -> str:
    """The id of one job; the same for the same inputs on any machine, in any run, for any column order."""
    for uri in (content_uri, style_uri, content_mask_uri, style_mask_uri):
        if uri is not None:
            _check_uri_text(uri)
    if style_mask_uri is not None and content_mask_uri is None:
        raise ValueError("a style mask needs a content mask: regions are matched between the two")
    key = params_key(params) + mask_suffix(content_mask_uri, style_mask_uri)
    return row_id_from_key(content_uri, style_uri, key)


def mask_suffix(content_mask_uri: str | None, style_mask_uri: str | None) -> str:
    """The masks' part of the canonical text: empty without a content mask, so unmasked ids never change.

    Appended after the parameters, which never hold a line break (nor do URIs), so the text stays unambiguous.
    """
    if content_mask_uri is None:
        return ""
    return f"\nmasks\n{content_mask_uri}\n{style_mask_uri or ''}"


def row_id_from_key(content_uri: str, style_uri: str, key: str) -> str:
    canonical = f"{ROW_ID_VERSION}\n{content_uri}\n{style_uri}\n{key}"
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:ROW_ID_HEX]


def row_ids_from_keys(
    contents: Iterable[str],
    styles: Iterable[str],
    keys: Iterable[str],
    masks: Iterable[str] | None = None,
) -> list[str]:
    """Many ids at once (a million-row read): one sha256 per row, parameters pre-rendered per distinct set.

    `masks`: each row's `mask_suffix` (mostly ""), or None for a manifest without mask columns."""
    sha = hashlib.sha256
    head = ROW_ID_VERSION + "\n"
    if masks is None:
        return [
            sha(f"{head}{c}\n{s}\n{k}".encode()).hexdigest()[:ROW_ID_HEX]
            for c, s, k in zip(contents, styles, keys, strict=True)
        ]
    return [
        sha(f"{head}{c}\n{s}\n{k}{m}".encode()).hexdigest()[:ROW_ID_HEX]
        for c, s, k, m in zip(contents, styles, keys, masks, strict=True)
    ]
