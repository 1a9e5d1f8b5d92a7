"""Fixtures for the hardening tests (chaos, bad inputs, security): thin wrappers over tests/pipeline's helpers.

The helpers live in tests/pipeline/pipeline_checks.py (real images, manifests, a local Ray, a restartable
moto S3 server, the output-consistency check), imported as the package module `tests.pipeline.pipeline_checks`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.pipeline.pipeline_checks import MotoS3, local_ray_session, write_images

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One local Ray per module (2 CPUs, 2 declared GPUs), forwarding worker output to this process."""
    with local_ray_session(log_to_driver=True):
        yield


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    base = tmp_path_factory.mktemp("images")
    return {
        "contents": write_images(base, "content", 30, seed=11),
        "styles": write_images(base, "style", 3, seed=12, shape=(48, 48)),
    }


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoS3]:
    """A restartable S3 endpoint on 127.0.0.1 (stop/start keep the port and the buckets)."""
    server = MotoS3().start()
    yield server
    server.stop()
