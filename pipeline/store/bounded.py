"""A wall-clock bound on every storage operation: a store that accepts connections and never answers
makes the operation fail (and the outage logic count it) instead of holding its row for ever.
"""

from __future__ import annotations

import threading
from typing import Any

from fsspec.asyn import AsyncFileSystem, sync
from fsspec.core import split_protocol

from jobs.masking import mask_uri

LOCAL_PROTOCOLS = frozenset({"file", "local"})


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
