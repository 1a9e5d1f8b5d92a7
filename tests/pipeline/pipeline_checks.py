"""Helpers shared by the pipeline tests: real input files, manifests, and the output-consistency check."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from nst_core.atomic import TMP_PREFIX
from nst_core.params import StyleParams
from pipeline.store.fs import filesystem
from pipeline.store.layout import OutputLayout, list_files
from pipeline.store.ledger import read_ledger, row_states

WEIGHTS = "random:0"
PARAMS = StyleParams(size=32, steps=6, log_every=2)
REPO = Path(__file__).resolve().parents[2]


def write_images(
    directory: Path, prefix: str, count: int, *, seed: int = 0, shape: tuple[int, int] = (40, 48)
) -> list[str]:
    """Random-texture PNGs (real files the decoder has to read)."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        array = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
        path = directory / f"{prefix}{i}.png"
        Image.fromarray(array).save(path)
        paths.append(str(path))
    return paths


def write_mask(path: Path, shape: tuple[int, int], colours: Sequence[tuple[int, int, int]]) -> str:
    """A region mask: `shape` (H, W) split into vertical bands, one flat colour each (a real PNG file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.zeros((*shape, 3), dtype=np.uint8)
    bands = np.array_split(np.arange(shape[1]), len(colours))
    for columns, colour in zip(bands, colours, strict=True):
        array[:, columns] = colour
    Image.fromarray(array).save(path)
    return str(path)


def write_manifest(
    path: str | Path, rows: Sequence[dict[str, Any]], storage_options: dict[str, Any] | None = None
) -> str:
    table = pa.Table.from_pylist(list(rows))
    if str(path).startswith("s3://"):
        import fsspec

        with fsspec.open(str(path), "wb", **(storage_options or {})) as fh:
            pq.write_table(table, fh)
    else:
        pq.write_table(table, str(path))
    return str(path)


def grid_rows(contents: Sequence[str], styles: Sequence[str], count: int) -> list[dict[str, Any]]:
    """`count` distinct (content, style) pairs, styles interleaved so batches must be regrouped by style."""
    rows = []
    for i in range(count):
        rows.append(
            {
                "content_uri": contents[i % len(contents)],
                "style_uri": styles[(i // len(contents)) % len(styles)],
                "tag": f"row{i}",
            }
        )
    pairs = {(r["content_uri"], r["style_uri"]) for r in rows}
    assert len(pairs) == count, "not enough contents x styles for distinct rows"
    return rows


@contextmanager
def local_ray_session(*, num_cpus: int = 2, num_gpus: int = 2, log_to_driver: bool = False) -> Iterator[None]:
    """A local Ray on loopback with declared (fake) GPUs; one per test module, shut down afterwards."""
    import ray

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray.init(
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        include_dashboard=False,
        object_store_memory=128 * 2**20,
        configure_logging=False,
        log_to_driver=log_to_driver,
    )
    try:
        yield
    finally:
        ray.shutdown()


class MotoS3:
    """A real S3 endpoint (moto's threaded server) on 127.0.0.1 that can be stopped and restarted on the
    same port; the buckets live in this process, so they survive a restart.

    `stop()` is a real outage: moto's own stop leaves the listening socket open (new connections hang) and
    keeps serving kept-alive connections, so here the socket is closed and every open connection cut.
    """

    def __init__(self, port: int | None = None) -> None:
        self.port = port or 0  # 0: the first start binds a port the kernel picks, later starts reuse it
        self.server: Any = None
        for key, value in (
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_DEFAULT_REGION", "us-east-1"),
        ):
            os.environ.setdefault(key, value)
        self.options: dict[str, Any] = {}

    def start(self) -> MotoS3:
        """Bound by the server itself (no probe-then-bind race); a failed bind raises here, not in its thread."""
        self.server = _CuttableMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        if self.server.bind_error is not None:
            raise self.server.bind_error
        self.port = int(self.server._server.server_port)
        self.options = {
            "key": "testing",
            "secret": "moto-secret-value",
            "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{self.port}"},
        }
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


def _cuttable_moto_server() -> type:
    import threading

    from moto.moto_server.threaded_moto_server import ThreadedMotoServer
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    class Server(ThreadedMotoServer):  # type: ignore[misc]
        def _server_entry(self) -> None:
            connections: set[Any] = set()
            lock = threading.Lock()
            self._connections, self._lock = connections, lock

            class Handler(MotoRequestHandler):  # type: ignore[misc]
                def setup(self) -> None:
                    super().setup()
                    with lock:
                        connections.add(self.connection)

                def finish(self) -> None:
                    with lock:
                        connections.discard(self.connection)
                    super().finish()

            app = DomainDispatcherApplication(create_backend_app)
            self.bind_error: OSError | None = None
            try:
                self._server = make_server(self._ip_address, self._port, app, True, request_handler=Handler)
            except OSError as exc:
                self.bind_error = exc
                self._server_ready_event.set()
                return
            self._server_ready_event.set()
            self._server.serve_forever()

        def stop(self) -> None:
            super().stop()
            self._server.server_close()
            with self._lock:
                for connection in list(self._connections):
                    try:
                        connection.shutdown(socket.SHUT_RDWR)
                        connection.close()
                    except OSError:
                        pass

    return Server


class _LazyServer:
    """Builds the server class on first use, so importing this module does not import moto."""

    def __call__(self, **kwargs: Any) -> Any:
        return _cuttable_moto_server()(**kwargs)


_CuttableMotoServer = _LazyServer()


def start_driver(
    manifest: str,
    out: str,
    *,
    params: StyleParams = PARAMS,
    batch_size: int = 2,
    extra: Sequence[str] = (),
    module: str = "pipeline.cli",
    stdout: Any = subprocess.DEVNULL,
) -> subprocess.Popen[bytes]:
    """`nst run` as its own process (`python -m pipeline.cli run …`), in its own session so that the
    Ray processes it starts can be killed with it by process group (`kill_group`)."""
    command = [
        sys.executable,
        "-m",
        module,
        "run",
        manifest,
        "--out",
        out,
        "--weights",
        WEIGHTS,
        "--size",
        str(params.size),
        "--steps",
        str(params.steps),
        "--log-every",
        str(params.log_every),
        "--batch-size",
        str(batch_size),
        "--no-progress",
        *extra,
    ]
    return subprocess.Popen(
        command, cwd=REPO, start_new_session=True, stdout=stdout, stderr=subprocess.PIPE
    )


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL whatever is left of a driver's process group (its local Ray)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def check_output(
    out: str, expected_done: Iterable[str], storage_options: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Assert the invariants of a finished output folder and return what was found.

    Every expected row has exactly one done record; the images present are exactly the done rows' outputs;
    every curve file is referenced by a done record and holds each done row's curve exactly once; no
    temporary file is left anywhere.
    """
    layout = OutputLayout(out)
    table = read_ledger(layout, storage_options)
    states = row_states(table)
    expected = set(expected_done)
    done = {s.row_id for s in states.values() if s.done}
    assert expected <= done, f"rows not done: {sorted(expected - done)[:5]}"
    duplicates = {s.row_id: s.done_records for s in states.values() if s.done_records > 1}
    assert not duplicates, f"rows done more than once: {duplicates}"
    files = list_files(out, storage_options)
    assert not [f for f in files if f.rsplit("/", 1)[-1].startswith(TMP_PREFIX)], "temporary files left"
    fs, root = filesystem(out, storage_options)
    root = root.rstrip("/")
    images = {f for f in files if f.startswith(root + "/images/")}
    outputs = {filesystem(s.done_record["output_uri"], storage_options)[1] for s in states.values() if s.done}
    assert images == outputs, (
        f"orphan images {sorted(images - outputs)[:3]}, missing {sorted(outputs - images)[:3]}"
    )
    curve_files = {f for f in files if f.startswith(root + "/curves/")}
    referenced = {
        filesystem(s.done_record["curve_uri"], storage_options)[1] for s in states.values() if s.done
    }
    assert curve_files == referenced, f"unreferenced curve files {sorted(curve_files - referenced)[:3]}"
    curve_rows: list[str] = []
    for path in curve_files:
        with fs.open(path, "rb") as fh:
            curve = pq.read_table(fh)
        assert curve.num_rows > 0
        curve_rows += sorted(set(curve.column("row_id").to_pylist()))
    assert sorted(curve_rows) == sorted(done), "each done row must have its curve exactly once"
    return {"states": states, "table": table, "files": files, "images": images}


class BackgroundRun:
    """`run_manifest` in a thread, so a test can kill actors, nodes or storage while it runs.

    Defaults: the suite's PARAMS and WEIGHTS, no progress display (no event callback). `finish` joins it
    and returns its summary (or re-raises what the run raised).
    """

    def __init__(self, **kwargs: Any) -> None:
        from pipeline.run.manifest_run import run_manifest

        self.kwargs = {"params": PARAMS, "weights": WEIGHTS, **kwargs}
        self.summary: Any = None
        self.error: BaseException | None = None

        def go() -> None:
            try:
                self.summary = run_manifest(**self.kwargs)
            except BaseException as exc:  # noqa: BLE001 - handed to the test by finish()
                self.error = exc

        self.thread = threading.Thread(target=go, daemon=True)
        self.thread.start()

    def is_alive(self) -> bool:
        return self.thread.is_alive()

    def finish(self, timeout: float = 300) -> Any:
        self.thread.join(timeout=timeout)
        assert not self.thread.is_alive(), f"the run did not finish within {timeout} s"
        if self.error is not None:
            raise self.error
        return self.summary
