"""Storage options per protocol: `--storage-option s3.key=…` applies to s3:// only, `http.headers.X=…` to
http(s):// only, and an unscoped `key=…` to every remote scheme except http(s).

Called wherever a URI is opened (pipeline.store.fs.filesystem, the manifest reader, the file checks, the
source listing), so one run can read an `https://` image while writing to S3 with credentials: the S3
options would make the HTTP client refuse the request.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fsspec.core import split_protocol

LOCAL_PROTOCOLS = frozenset({"file", "local"})
UNSCOPED_EXCLUDED = frozenset({"http", "https"} | LOCAL_PROTOCOLS)
"""Schemes that never take unscoped options: HTTP passes unknown options on to every request (and fails
on `key`, `secret`, …); local files need none."""
_ALIASES = {"https": "http", "gcs": "gs", "s3a": "s3", "abfs": "az", "abfss": "az", "local": "file"}


def _protocol_names() -> frozenset[str]:
    from fsspec.registry import known_implementations, registry

    return frozenset(known_implementations) | frozenset(registry) | LOCAL_PROTOCOLS


def options_for(uri: str, storage_options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The options that apply to `uri`: unscoped ones (unless its scheme takes none), then the section for
    its scheme (`s3`, `gs`, `http`, …; https shares http's, gcs gs's) on top."""
    if not storage_options:
        return {}
    protocols = _protocol_names()
    protocol = split_protocol(uri)[0] or "file"
    family = _ALIASES.get(protocol, protocol)
    options = (
        {}
        if protocol in UNSCOPED_EXCLUDED
        else {k: v for k, v in storage_options.items() if not (k in protocols and isinstance(v, Mapping))}
    )
    for name in (family, protocol):
        section = storage_options.get(name)
        if isinstance(section, Mapping) and name in protocols:
            options.update(section)
    return options
