"""Checks that fail a run in a second, before the lease is taken or Ray is imported.

A bad `--weights` found after every actor has started costs a minute of cluster start-up and leaves a
lease and a run.json behind; found here it costs nothing.
"""

from __future__ import annotations

from pipeline.cluster.runtime import resolve_address
from pipeline.run.options import RunOptions
from pipeline.store.bounded import set_operation_timeout
from pipeline.store.weights import check_weights


def check_before_lease(options: RunOptions) -> None:
    """Bound every storage operation of this process (the lease is the first one), then check the weights."""
    set_operation_timeout(options.operation_timeout)
    # ImageNet weights are fetched into this machine's cache only when the workers share it.
    check_weights(
        options.weights,
        sha256=options.weights_sha256,
        arch=options.arch,
        storage_options=options.storage_options,
        fetch_imagenet=resolve_address(options.address) is None,
    )
