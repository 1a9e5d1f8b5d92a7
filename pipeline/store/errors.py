"""What a storage failure means: a transient outage (hold the row), a bad input (fail it), or no credentials.

Object-store clients raise their own exception types, so the classification looks at the exception's
package as well as its class; `storage_errors` turns what it finds into one masked line for the user.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from jobs.masking import mask_text


class StorageError(RuntimeError):
    """An I/O failure on storage (transient: worth retrying), with the URI already masked."""


class InputMissing(FileNotFoundError):
    """An input file that does not exist (permanent for this row: retrying will not help)."""


class InputRefused(ValueError):
    """An input that is not read at all: not a regular file (FIFO, device, socket) or over the byte limit."""


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


class RunError(RuntimeError):
    """The run could not start or had to stop (the message says why and what to do).

    Defined beside the storage errors because every wing raises it and the CLI prints it as one line.
    """
