"""Every byte the pipeline reads or writes goes through here: fsspec URIs, atomic writes, secret masking.

Called by the CLI commands, the run driver and the workers. Two promises are kept here and nowhere else:
a reader never sees a partial file (temporary name then rename on file systems, one PUT on object
stores), and credentials never leave this module unmasked.
"""

from __future__ import annotations

import os
import re
import stat
import threading
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import fsspec
from fsspec.core import split_protocol

from jobs.options import options_for

LOCAL_PROTOCOLS = frozenset({"file", "local"})
TMP_PREFIX = ".tmp-"
"""Prefix of temporary files (swept at start); no output name may start with it."""
_SECRET_KEY = re.compile(r"(secret|token|password|passwd|key|credential|signature|sas)", re.IGNORECASE)
_URI_USERINFO = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)([^/@]+)@")
_BARE_USERINFO = re.compile(r"(?<![\w.+-])[^\s/@:'\"(),=]+:[^\s/@'\"]+@(?=[\w.-])")
"""`user:password@host` quoted without its scheme (botocore: `Invalid bucket name "user:pass@bucket"`)."""
_QUERY_SECRET = re.compile(
    r"((?:[?&])(?:[^=&]*(?:secret|token|password|key|signature|sig|credential)[^=&]*)=)[^&]*", re.IGNORECASE
)


class StorageError(RuntimeError):
    """An I/O failure on storage (transient: worth retrying), with the URI already masked."""


class InputMissing(FileNotFoundError):
    """An input file that does not exist (permanent for this row: retrying will not help)."""


class InputRefused(ValueError):
    """An input that is not read at all: not a regular file (FIFO, device, socket) or over the byte limit."""


OPERATION_TIMEOUT_S = 60.0
"""Default wall-clock bound of one storage operation (`--read-timeout`): a store that accepts connections
and never answers makes the operation fail instead of holding its row (aiohttp waits 300 s per try)."""
_timeout = {"seconds": OPERATION_TIMEOUT_S}


def set_operation_timeout(seconds: float) -> None:
    """Bound every later storage operation of this process (the driver and each worker set it per run)."""
    if not seconds > 0:
        raise ValueError(f"storage operation timeout must be > 0 seconds, got {seconds}")
    _timeout["seconds"] = float(seconds)


def operation_timeout() -> float:
    return _timeout["seconds"]


def bounded(fs: Any, method: str, *args: Any, uri: str = "", timeout: float | None = None, **kwargs: Any) -> Any:
    """`fs.<method>(*args)` that fails with TimeoutError naming the endpoint after `timeout` seconds.

    Async backends (s3, gcs, http, …) get the bound inside their event loop, which cancels the request;
    other remote backends run the call in a helper thread (left to finish on its own after a timeout).
    Local files are called directly: only regular files are ever opened (see `read_bytes`).
    """
    seconds = operation_timeout() if timeout is None else timeout
    from fsspec.asyn import AsyncFileSystem, sync

    if isinstance(fs, AsyncFileSystem) and hasattr(fs, f"_{method}") and not fs.asynchronous:
        try:
            return sync(fs.loop, getattr(fs, f"_{method}"), *args, timeout=seconds, **kwargs)
        except TimeoutError as exc:
            if str(exc).strip():
                raise
            raise TimeoutError(_no_answer(uri, fs, seconds, method)) from None
    if _fs_is_local(fs):
        return getattr(fs, method)(*args, **kwargs)
    return call_bounded(lambda: getattr(fs, method)(*args, **kwargs), uri=uri, what=method, timeout=seconds, fs=fs)


def call_bounded(fn: Any, *, uri: str, what: str, timeout: float | None = None, fs: Any = None) -> Any:
    """`fn()` for operations that are not one filesystem method (open + write + close), in a helper thread,
    failing with TimeoutError naming the endpoint after `timeout` seconds (default: the operation timeout)."""
    seconds = operation_timeout() if timeout is None else timeout
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            result["error"] = exc

    worker = threading.Thread(target=target, daemon=True, name="nst-storage-op")
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise TimeoutError(f"no answer from {endpoint_of(uri, fs)} within {seconds:g} s ({what} {mask_uri(uri)})")
    if "error" in result:
        raise result["error"]
    return result.get("value")


def _fs_is_local(fs: Any) -> bool:
    protocol = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
    return protocol in LOCAL_PROTOCOLS


def _no_answer(uri: str, fs: Any, seconds: float, method: str) -> str:
    return f"no answer from {endpoint_of(uri, fs)} within {seconds:g} s ({method} {mask_uri(uri)})"


def endpoint_of(uri: str, fs: Any = None) -> str:
    """The server behind a URI, for error lines: the configured endpoint URL, else the scheme and host."""
    endpoint = None
    if fs is not None:
        client = getattr(fs, "client_kwargs", None) or {}
        endpoint = client.get("endpoint_url") or getattr(fs, "endpoint_url", None)
    if endpoint:
        return f"endpoint {mask_uri(str(endpoint))}"
    protocol, path = split_protocol(uri)
    host = (path or "").split("/", 1)[0].rsplit("@", 1)[-1]
    return f"{protocol or 'file'}://{host}" if host else (protocol or "file")


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


def is_credentials_error(exc: BaseException) -> bool:
    """botocore's NoCredentialsError / PartialCredentialsError and their kind in other clients."""
    return any("Credentials" in c.__name__ and "Error" in c.__name__ for c in type(exc).__mro__)


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
        if is_credentials_error(exc):
            raise StorageError(
                f"no credentials {what}: {describe_storage_error(exc, options)}; give them with "
                "--storage-option key=… --storage-option secret=… (per protocol: --storage-option s3.key=…) "
                "or the storage client's usual environment variables"
            ) from None
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
    from fsspec.registry import known_implementations, registry

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


def read_bytes(
    uri: str,
    storage_options: Mapping[str, Any] | None = None,
    *,
    max_bytes: int | None = None,
    timeout: float | None = None,
) -> bytes:
    """The whole object, read within `timeout` seconds and at most `max_bytes` long (InputRefused beyond).

    Local paths must be regular files, checked before opening: a FIFO would block `open()` for ever and a
    device (`/dev/zero`) never ends.
    """
    fs, path = filesystem(uri, storage_options)
    try:
        if _fs_is_local(fs):
            return _read_local(path, uri, max_bytes)
        if max_bytes is None:
            return bounded(fs, "cat_file", path, uri=uri, timeout=timeout)  # type: ignore[no-any-return]
        data = bounded(fs, "cat_file", path, uri=uri, timeout=timeout, start=0, end=max_bytes + 1)
        if len(data) > max_bytes:
            raise InputRefused(f"larger than the {max_bytes}-byte read limit (from --max-pixels): {mask_uri(uri)}")
        return data  # type: ignore[no-any-return]
    except FileNotFoundError:
        raise InputMissing(f"file not found: {mask_uri(uri)}") from None
    except IsADirectoryError:
        raise InputMissing(f"is a directory, not a file: {mask_uri(uri)}") from None
    except PermissionError:
        raise InputMissing(f"permission denied: {mask_uri(uri)}") from None


_FILE_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _read_local(path: str, uri: str, max_bytes: int | None) -> bytes:
    mode = os.stat(path).st_mode
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(path)
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")
        raise InputRefused(f"not a regular file ({kind}): {mask_uri(uri)}")
    with open(path, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):  # replaced between the check and the open
            raise InputRefused(f"not a regular file: {mask_uri(uri)}")
        data = fh.read() if max_bytes is None else fh.read(max_bytes + 1)
    if max_bytes is not None and len(data) > max_bytes:
        raise InputRefused(f"larger than the {max_bytes}-byte read limit (from --max-pixels): {mask_uri(uri)}")
    return data


def exists(uri: str, storage_options: Mapping[str, Any] | None = None) -> bool:
    fs, path = filesystem(uri, storage_options)
    return bool(bounded(fs, "exists", path, uri=uri))


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
        tmp = os.path.join(directory, f"{TMP_PREFIX}{uuid.uuid4().hex[:16]}")  # short: the name's bytes are the limit
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
        bounded(fs, "makedirs", parent, uri=uri, exist_ok=True)
    except TimeoutError:
        raise
    except Exception:  # object stores have no directories; some backends refuse makedirs
        pass
    bounded(fs, "pipe_file", path, data, uri=uri)


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
