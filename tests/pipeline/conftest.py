"""Fixtures for the distributed-run tests: tiny real images, Parquet manifests, a local Ray, a moto S3 server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.pipeline.pipeline_checks import MotoS3, local_ray_session, write_images

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One local Ray per module: 2 CPUs and 2 declared (fake) GPUs, on loopback."""
    with local_ray_session():
        yield


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    base = tmp_path_factory.mktemp("inputs")
    return {
        "contents": write_images(base, "content", 25, seed=1),
        "styles": write_images(base, "style", 4, seed=2, shape=(48, 48)),
    }


@pytest.fixture(scope="module")
def s3_server() -> Iterator[dict[str, Any]]:
    """A real S3 endpoint (moto) on 127.0.0.1 and storage options that reach it through s3fs."""
    server = MotoS3().start()
    yield server.options
    server.stop()
