"""Where a URI lives: its fsspec filesystem, scheme and joins, and whether its store answers at all.

Every module that touches storage opens it through `filesystem`, so storage options (per protocol) and
the error for an uninstalled backend are the same everywhere.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import fsspec
from fsspec.core import split_protocol
from fsspec.registry import known_implementations, registry

from jobs.masking import mask_uri
from jobs.options import options_for
from pipeline.store.bounded import LOCAL_PROTOCOLS, bounded, operation_timeout
from pipeline.store.errors import InputMissing, StorageError, describe_storage_error, is_storage_error

"""Prefix of temporary files (swept at start); no output name may start with it."""


def unreachable(uri: str, storage_options: Mapping[str, Any] | None = None) -> str | None:
    """None when the store behind `uri` answers (a missing path is an answer); else why it does not.

    One metadata call, used by the driver after a storage failure to tell a store outage (pause, keep the
    row's attempts) from a failure of one object (count an attempt).
    """
    try:
        fs, path = filesystem(uri, storage_options)
        fs.invalidate_cache()
        bounded(fs, "info", path, uri=uri, timeout=min(operation_timeout(), PROBE_TIMEOUT_S))
    except FileNotFoundError:
        return None
    except Exception as exc:  # noqa: BLE001 - only a network failure is an outage
        if isinstance(exc, (InputMissing, PermissionError, IsADirectoryError, NotADirectoryError)):
            return None
        return describe_storage_error(exc, storage_options) if is_storage_error(exc) else None
    return None


PROBE_TIMEOUT_S = 10.0
"""An outage probe is one metadata call: a store that has not answered it in 10 s is down for now."""


def protocol_of(uri: str) -> str:
    protocol, _ = split_protocol(uri)
    return protocol or "file"


def is_local(uri: str) -> bool:
    return protocol_of(uri) in LOCAL_PROTOCOLS


def known_protocol(uri: str) -> bool:
    """Whether fsspec knows this URI's scheme (installed or not); unknown ones are typos like `s4://`."""
    protocol = protocol_of(uri)
    return protocol in LOCAL_PROTOCOLS or protocol in known_implementations or protocol in registry


def filesystem(uri: str, storage_options: Mapping[str, Any] | None = None) -> tuple[Any, str]:
    """(fs, path) for a URI; raises StorageError naming the missing package for an uninstalled backend."""
    try:
        fs, path = fsspec.core.url_to_fs(uri, **options_for(uri, storage_options))
    except ImportError as exc:
        raise StorageError(f"cannot open {mask_uri(uri)}: {exc}") from None
    except ValueError as exc:
        raise StorageError(f"cannot open {mask_uri(uri)}: {exc}") from None
    return fs, path


def join(base: str, *parts: str) -> str:
    """Join URI path segments with '/', the separator of every fsspec backend (local included)."""
    out = base.rstrip("/")
    for part in parts:
        out = f"{out}/{part.strip('/')}"
    return out


def exists(uri: str, storage_options: Mapping[str, Any] | None = None) -> bool:
    fs, path = filesystem(uri, storage_options)
    return bool(bounded(fs, "exists", path, uri=uri))


def parse_storage_options(pairs: list[str] | None) -> dict[str, Any]:
    """`key=value` pairs from the command line; dotted keys nest (`client_kwargs.endpoint_url=…`).

    Values are JSON-decoded when they parse (numbers, booleans), otherwise kept as strings.
    """
    options: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ValueError(f"--storage-option expects key=value, got {pair!r}")
        key, raw = pair.split("=", 1)
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        node = options
        *parents, leaf = key.strip().split(".")
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return options
