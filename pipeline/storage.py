"""Every byte the pipeline reads or writes goes through here: fsspec URIs, atomic writes, secret masking.

Called by the CLI commands, the run driver and the workers. Two promises are kept here and nowhere else:
a reader never sees a partial file (temporary name then rename on file systems, one PUT on object
stores), and credentials never leave this module unmasked.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import fsspec
from fsspec.core import split_protocol

LOCAL_PROTOCOLS = frozenset({"file", "local"})
_SECRET_KEY = re.compile(r"(secret|token|password|passwd|key|credential|signature|sas)", re.IGNORECASE)
_URI_USERINFO = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)([^/@]+)@")
_QUERY_SECRET = re.compile(
    r"((?:[?&])(?:[^=&]*(?:secret|token|password|key|signature|sig|credential)[^=&]*)=)[^&]*", re.IGNORECASE
)


class StorageError(RuntimeError):
    """An I/O failure on storage (transient: worth retrying), with the URI already masked."""


class InputMissing(FileNotFoundError):
    """An input file that does not exist (permanent for this row: retrying will not help)."""


_NETWORK_PACKAGES = frozenset(
    {"botocore", "aiobotocore", "aiohttp", "urllib3", "requests", "s3fs", "gcsfs", "adlfs", "google", "azure"}
)
"""Packages whose network exceptions mean "the store did not answer" (connection refused, timeout)."""
_NETWORK_NAMES = (
    "Connect",
    "Timeout",
    "Endpoint",
    "Disconnect",
    "HTTPClientError",
    "IncompleteRead",
    "Payload",
    "ResponseParser",
    "ProtocolError",
)
"""Class-name parts of those packages' network failures; their other errors (botocore's
ParamValidationError for a malformed bucket name, NoCredentialsError) are not transient."""


def is_storage_error(exc: BaseException) -> bool:
    """Whether an exception is an I/O failure talking to storage (worth retrying), not a bad input.

    Object-store clients raise their own types for network failures (botocore's EndpointConnectionError
    is not an OSError), so the exception's package counts as much as its class.
    """
    if isinstance(exc, InputMissing):
        return False
    if isinstance(exc, (StorageError, OSError, TimeoutError)):
        return True
    return is_connection_error(exc)


def is_connection_error(exc: BaseException) -> bool:
    """Whether the store did not answer at all (refused, reset, timed out): an outage, not a bad object."""
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    mro = type(exc).__mro__
    from_client = any((getattr(c, "__module__", "") or "").split(".", 1)[0] in _NETWORK_PACKAGES for c in mro)
    return from_client and any(part in c.__name__ for c in mro for part in _NETWORK_NAMES)


def describe_storage_error(exc: BaseException, options: Mapping[str, Any] | None = None) -> str:
    """`Type: message` with URIs and secret values masked, on one line."""
    text = " ".join((str(exc) or "").split())
    if not isinstance(exc, StorageError):
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return mask_text(text, options)


@contextmanager
def storage_errors(what: str, options: Mapping[str, Any] | None = None) -> Iterator[None]:
    """Turn a store that does not answer (a client's own exception type) into one masked StorageError line.

    Answers that name a path (not found, permission denied, is a directory) pass through unchanged.
    """
    try:
        yield
    except (StorageError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError):
        raise
    except Exception as exc:
        if not is_storage_error(exc):
            raise
        raise StorageError(f"storage unreachable {what}: {describe_storage_error(exc, options)}") from None


def unreachable(uri: str, storage_options: Mapping[str, Any] | None = None) -> str | None:
    """None when the store behind `uri` answers (a missing path is an answer); else why it does not.

    One metadata call, used by the driver after a storage failure to tell a store outage (pause, keep the
    row's attempts) from a failure of one object (count an attempt).
    """
    try:
        fs, path = filesystem(uri, storage_options)
        fs.invalidate_cache()
        fs.info(path)
    except FileNotFoundError:
        return None
    except Exception as exc:  # noqa: BLE001 - only a network failure is an outage
        if isinstance(exc, (InputMissing, PermissionError, IsADirectoryError, NotADirectoryError)):
            return None
        return describe_storage_error(exc, storage_options) if is_storage_error(exc) else None
    return None


def protocol_of(uri: str) -> str:
    protocol, _ = split_protocol(uri)
    return protocol or "file"


def is_local(uri: str) -> bool:
    return protocol_of(uri) in LOCAL_PROTOCOLS


def known_protocol(uri: str) -> bool:
    """Whether fsspec knows this URI's scheme (installed or not); unknown ones are typos like `s4://`."""
    from fsspec.registry import known_implementations, registry

    protocol = protocol_of(uri)
    return protocol in LOCAL_PROTOCOLS or protocol in known_implementations or protocol in registry


def filesystem(uri: str, storage_options: Mapping[str, Any] | None = None) -> tuple[Any, str]:
    """(fs, path) for a URI; raises StorageError naming the missing package for an uninstalled backend."""
    try:
        fs, path = fsspec.core.url_to_fs(uri, **dict(storage_options or {}))
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


def read_bytes(uri: str, storage_options: Mapping[str, Any] | None = None) -> bytes:
    fs, path = filesystem(uri, storage_options)
    try:
        return fs.cat_file(path)  # type: ignore[no-any-return]
    except FileNotFoundError:
        raise InputMissing(f"file not found: {mask_uri(uri)}") from None
    except IsADirectoryError:
        raise InputMissing(f"is a directory, not a file: {mask_uri(uri)}") from None
    except PermissionError:
        raise InputMissing(f"permission denied: {mask_uri(uri)}") from None


def exists(uri: str, storage_options: Mapping[str, Any] | None = None) -> bool:
    fs, path = filesystem(uri, storage_options)
    return bool(fs.exists(path))


def write_bytes_atomic(uri: str, data: bytes, storage_options: Mapping[str, Any] | None = None) -> None:
    """Write so that no reader ever sees a partial object, and so that repeating the write is harmless.

    Local paths: write a uniquely named temporary file in the same directory, fsync, then `os.replace`
    (atomic on POSIX). Object stores: one PUT of the whole body (`pipe_file`), which is atomic by the
    store's own contract; a rename there would be a copy plus delete and is avoided.
    """
    fs, path = filesystem(uri, storage_options)
    if protocol_of(uri) in LOCAL_PROTOCOLS:
        directory = os.path.dirname(path) or "."
        os.makedirs(directory, exist_ok=True)
        tmp = os.path.join(directory, f".tmp-{uuid.uuid4().hex}-{os.path.basename(path)}")
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        return
    parent = path.rsplit("/", 1)[0]
    try:
        fs.makedirs(parent, exist_ok=True)
    except Exception:  # object stores have no directories; some backends refuse makedirs
        pass
    fs.pipe_file(path, data)


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
    """Mask URIs in free text (error messages), any literal secret value from the storage options, and the
    `user:password` of the given URIs wherever it appears without its scheme (client libraries quote the
    bucket part of `s3://user:password@bucket/…` on its own)."""
    for uri in uris:
        match = _URI_USERINFO.match(uri or "")
        if match and len(match.group(2)) >= 4:
            text = text.replace(match.group(2), "***")
    text = re.sub(r"[a-zA-Z][a-zA-Z0-9+.-]*://\S+", lambda m: mask_uri(m.group(0)), text)
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


def parse_storage_options(pairs: list[str] | None) -> dict[str, Any]:
    """`key=value` pairs from the command line; dotted keys nest (`client_kwargs.endpoint_url=…`).

    Values are JSON-decoded when they parse (numbers, booleans), otherwise kept as strings.
    """
    import json

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
