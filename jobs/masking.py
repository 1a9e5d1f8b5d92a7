"""Secret masking: the one place that turns URIs, storage options and messages into text safe to show.

Every message, record and log line that may hold a URI or a storage option passes through `mask_text`,
`mask_uri` or `mask_options` first, so credentials never reach a terminal, a ledger or run.json.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_SECRET_KEY = re.compile(r"(secret|token|password|passwd|key|credential|signature|sas)", re.IGNORECASE)


_URI_USERINFO = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)([^/@]+)@")


_BARE_USERINFO = re.compile(r"(?<![\w.+-])[^\s/@:'\"(),=]+:[^\s/@'\"]+@(?=[\w.-])")
"""`user:password@host` quoted without its scheme (botocore: `Invalid bucket name "user:pass@bucket"`)."""


_QUERY_SECRET = re.compile(
    r"((?:[?&])(?:[^=&]*(?:secret|token|password|key|signature|sig|credential)[^=&]*)=)[^&]*", re.IGNORECASE
)


def mask_uri(uri: str) -> str:
    """Hide `user:password@` and secret-looking query parameters in a URI."""
    masked = _URI_USERINFO.sub(r"\1***@", uri)
    return _QUERY_SECRET.sub(r"\1***", masked)


def mask_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Storage options with every secret-looking value replaced, for logs and run records."""
    out: dict[str, Any] = {}
    for key, value in (options or {}).items():
        if isinstance(value, Mapping):
            out[key] = mask_options(value)
        elif _SECRET_KEY.search(str(key)):
            out[key] = "***"
        elif isinstance(value, str):
            out[key] = mask_uri(value)
        else:
            out[key] = value
    return out


def mask_text(text: str, options: Mapping[str, Any] | None = None, uris: tuple[str, ...] = ()) -> str:
    """The one formatter for any message that may hold a URI or a storage option. Mask URIs in free text (error messages), any literal secret value from the storage options, and the
    `user:password` of the given URIs wherever it appears without its scheme (client libraries quote the
    bucket part of `s3://user:password@bucket/…` on its own)."""
    for uri in uris:
        match = _URI_USERINFO.match(uri or "")
        if match and len(match.group(2)) >= 4:
            text = text.replace(match.group(2), "***")
    text = re.sub(r"[a-zA-Z][a-zA-Z0-9+.-]*://\S+", lambda m: mask_uri(m.group(0)), text)
    text = _BARE_USERINFO.sub("***@", text)
    for key, value in _flatten(options or {}):
        if _SECRET_KEY.search(key) and isinstance(value, str) and len(value) >= 4:
            text = text.replace(value, "***")
    return text


def _flatten(options: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for key, value in options.items():
        if isinstance(value, Mapping):
            items += _flatten(value, f"{prefix}{key}.")
        else:
            items.append((f"{prefix}{key}", value))
    return items
