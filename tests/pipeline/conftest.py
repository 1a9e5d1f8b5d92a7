"""Fixtures for the distributed-run tests: tiny real images, Parquet manifests, a local Ray, a moto S3 server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from pipeline_checks import free_port, write_images

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One local Ray per module: 2 CPUs and 2 declared (fake) GPUs, on loopback."""
    import ray

    ray.init(
        num_cpus=2,
        num_gpus=2,
        include_dashboard=False,
        object_store_memory=128 * 2**20,
        configure_logging=False,
        log_to_driver=False,
    )
    yield
    ray.shutdown()


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
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    for key, value in (
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        os.environ.setdefault(key, value)
    options = {
        "key": "testing",
        "secret": "moto-secret-value",
        "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}"},
    }
    yield options
    server.stop()
