"""Reliability of whole runs (docs/reliability.md, "What the chaos run broke"): stop signals, inputs that
never end or never answer, one run per output, stdout kept JSON, credentials masked on every failing
command, a black-holed store, missing credentials."""

from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest

from jobs import ManifestRow, iter_manifest
from pipeline.run.manifest_run import run_manifest
from pipeline.store.layout import OutputLayout
from pipeline.store.ledger import part_paths, read_ledger, row_states
from tests.hardening.cli_helpers import fast_options, last_line, nst, option_flags, run_args
from tests.pipeline.pipeline_checks import (
    PARAMS,
    REPO,
    WEIGHTS,
    check_output,
    grid_rows,
    kill_group,
    start_driver,
    write_images,
    write_manifest,
)


def _manifest(tmp_path: Path, count: int, seed: int) -> str:
    contents = write_images(tmp_path / "in", "c", count // 2, seed=seed)
    styles = write_images(tmp_path / "in", "s", 2, seed=seed + 1)
    return write_manifest(tmp_path / "m.parquet", grid_rows(contents, styles, count))


def _ids(manifest: str, storage_options: dict[str, Any] | None = None) -> list[str]:
    return [
        r.row_id
        for r in iter_manifest(manifest, defaults=PARAMS, storage_options=storage_options)
        if isinstance(r, ManifestRow)
    ]


@pytest.fixture()
def black_hole() -> Iterator[int]:
    """A TCP port on 127.0.0.1 that accepts connections and never answers (a stalled HTTP or S3 server)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


@pytest.fixture()
def http_images(tmp_path: Path) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 serving a folder of images."""
    folder = tmp_path / "served"
    write_images(folder, "h", 1, seed=40)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(folder), **kwargs)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


# -- SIGTERM -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_a_stop_signal_flushes_results_records_interrupted_and_exits_128_plus_its_number(
    tmp_path: Path, sig: signal.Signals, code: int
) -> None:
    manifest = _manifest(tmp_path, 20, seed=21)
    out = str(tmp_path / "out")
    layout = OutputLayout(out)
    driver = start_driver(manifest, out)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and driver.poll() is None and not part_paths(layout):
            time.sleep(0.05)
        assert driver.poll() is None, driver.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
        os.kill(driver.pid, sig)
        returned = driver.wait(timeout=90)
        stderr = driver.stderr.read().decode()  # type: ignore[union-attr]
    finally:
        kill_group(driver)
    assert returned == code, stderr[-2000:]
    assert "SIGTERM received" not in stderr  # Ray's C++ handler did not run
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert record["status"] == "interrupted"
    done = [s.row_id for s in row_states(read_ledger(layout)).values() if s.done]
    assert 0 < len(done) < 20
    assert record["stats"]["done"] + record["stats"]["already_done"] == len(done)
    assert not (tmp_path / "out" / "_lease.json").exists()  # released at exit
    summary = run_manifest(manifest=manifest, out=out, params=PARAMS, weights=WEIGHTS)
    assert summary.complete and summary.already_done == len(done)
    check_output(out, _ids(manifest))


# -- one run per output --------------------------------------------------------------------------------


def _two_runs(manifest: str, out: str, extra: list[str], env: dict[str, str] | None = None) -> list[tuple[int, str]]:
    drivers = [start_driver(manifest, out, extra=extra, module="pipeline.cli") for _ in range(2)]
    results = []
    try:
        for driver in drivers:
            code = driver.wait(timeout=300)
            results.append((code, driver.stderr.read().decode()))  # type: ignore[union-attr]
    finally:
        for driver in drivers:
            kill_group(driver)
    return results


def _check_one_refused(results: list[tuple[int, str]]) -> None:
    codes = sorted(code for code, _ in results)
    assert codes == [0, 1], results
    refused = next(err for code, err in results if code == 1)
    assert "is in use by run" in last_line(refused) and "pid" in last_line(refused), refused[-2000:]


def test_two_runs_on_one_local_output_one_refuses_naming_the_holder(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, 12, seed=23)
    out = str(tmp_path / "out")
    _check_one_refused(_two_runs(manifest, out, []))
    check_output(out, _ids(manifest))  # no duplicate done record, every curve present and referenced
    history = json.loads((tmp_path / "out" / "run.json").read_text())["history"]
    assert [h["status"] for h in history] == ["completed"]


def test_two_runs_on_one_s3_output_one_refuses(tmp_path: Path, moto: Any) -> None:
    options = fast_options(moto.options)
    fs = fsspec.filesystem("s3", **options)
    fs.mkdir("lease-runs")
    contents = write_images(tmp_path / "in", "c", 5, seed=25)
    styles = write_images(tmp_path / "in", "s", 2, seed=26)
    manifest = write_manifest(tmp_path / "m.parquet", grid_rows(contents, styles, 10))
    out = "s3://lease-runs/out"
    results = _two_runs(manifest, out, option_flags(options))
    _check_one_refused(results)
    check_output(out, _ids(manifest), options)
    assert not fs.exists("lease-runs/out/_lease.json")


# -- inputs that never end or never answer -------------------------------------------------------------


@pytest.mark.usefixtures("local_ray")
def test_a_batch_with_unbounded_or_silent_inputs_finishes_its_other_rows(
    tmp_path: Path, images: dict[str, list[str]], black_hole: int, http_images: str
) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    style = images["styles"][0]
    good = images["contents"][:4]
    bad = {
        "/dev/zero": ("bad_input", "character device"),
        "/dev/urandom": ("bad_input", "character device"),
        str(fifo): ("bad_input", "FIFO"),
        f"http://127.0.0.1:{black_hole}/never.png": ("storage", "no answer from"),
    }
    served = f"{http_images}/h0.png"  # answers: must be done although the run has S3-style options
    rows = [{"content_uri": uri, "style_uri": style} for uri in [*good, *bad, served]]
    manifest = write_manifest(tmp_path / "m.parquet", rows)
    out = str(tmp_path / "out")
    summary = run_manifest(
        manifest=manifest,
        out=out,
        params=PARAMS,
        weights=WEIGHTS,
        batch_size=16,  # one batch: the bad rows share it with the good ones
        read_timeout=1,
        storage_timeout=2,
        max_attempts=2,
        storage_options={"key": "AKIAFAKE", "secret": "FAKE-secret-1234"},
    )
    assert summary.done == 5, summary
    states = row_states(read_ledger(OutputLayout(out)))
    by_uri = {
        s.done_record["content_uri"] if s.done else None: s for s in states.values()
    }
    failed = {r["content_uri"]: r for r in read_ledger(OutputLayout(out)).to_pylist() if r["status"] == "failed"}
    for uri, (kind, text) in bad.items():
        assert failed[uri]["error_kind"] == kind and text in failed[uri]["error_message"], failed[uri]
    assert all(uri in by_uri for uri in [*good, served])


# -- stdout stays JSON ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("local_ray")
def test_run_json_stdout_is_json_only_even_when_something_prints(
    tmp_path: Path, images: dict[str, list[str]], monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    import pipeline.run.manifest_run as run_module

    real = run_module.plan_rows

    def noisy(*args: Any, **kwargs: Any) -> Any:
        print("a library printing to stdout")
        os.write(1, b"and a raw write to fd 1\n")
        return real(*args, **kwargs)

    monkeypatch.setattr(run_module, "plan_rows", noisy)
    manifest = write_manifest(
        tmp_path / "m.parquet", [{"content_uri": images["contents"][0], "style_uri": images["styles"][0]}]
    )
    code, stdout, stderr = nst(
        run_args(manifest, str(tmp_path / "out"), PARAMS, "--weights", WEIGHTS, "--json"), monkeypatch, capfd
    )
    assert code == 0, stderr
    assert json.loads(stdout)["done"] == 1
    assert "a library printing" in stderr and "raw write" in stderr


# -- credentials masked on every failing command -------------------------------------------------------


@pytest.mark.usefixtures("local_ray")
def test_planted_secrets_never_reach_stdout_or_stderr_of_failing_commands(
    tmp_path: Path, images: dict[str, list[str]], moto: Any, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    secret = "FAKE-planted-pass-9c2f"
    options = fast_options(moto.options)
    flags = option_flags(options)
    userinfo = f"AKIAFAKEUSER:{secret}@"
    manifest = write_manifest(
        tmp_path / "m.parquet",
        [{"content_uri": f"s3://{userinfo}bucket/c.png", "style_uri": images["styles"][0]}],
    )
    out = f"s3://{userinfo}bucket/out"
    outputs = [
        nst(run_args(manifest, out, PARAMS, "--weights", WEIGHTS, *flags), monkeypatch, capfd),
        nst(["status", out, *flags], monkeypatch, capfd),
        nst(["report", out, *flags], monkeypatch, capfd),
        nst(["manifest", "validate", manifest, "--check-files", *flags], monkeypatch, capfd),
    ]
    for code, stdout, stderr in outputs:
        assert code != 0, (stdout, stderr)
        assert secret not in stdout and secret not in stderr, (stdout, stderr)
    assert any("***" in stdout + stderr for _, stdout, stderr in outputs)


# -- a store that never answers, missing credentials ---------------------------------------------------


def _clean_env(**extra: str) -> dict[str, str]:
    keep = {k: os.environ[k] for k in ("PATH", "HOME", "PYTHONPATH", "RAY_TMPDIR") if k in os.environ}
    return {
        **keep,
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        "AWS_EC2_METADATA_DISABLED": "true",
        **extra,
    }


def _nst_process(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=180
    )


def test_a_black_holed_endpoint_fails_within_the_storage_timeout_naming_it(tmp_path: Path, black_hole: int) -> None:
    manifest = write_manifest(tmp_path / "m.parquet", [{"content_uri": "c.png", "style_uri": "s.png"}])
    endpoint = f"http://127.0.0.1:{black_hole}"
    env = _clean_env(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    result = _nst_process(
        [*run_args(manifest, "s3://bucket/out", PARAMS, "--weights", WEIGHTS, "--storage-timeout", "3"),
         "--storage-option", f"client_kwargs.endpoint_url={endpoint}"],
        env,
    )
    assert result.returncode == 1, result.stderr
    line = last_line(result.stderr)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert f"127.0.0.1:{black_hole}" in line and "within 3 s" in line, line


def test_missing_credentials_get_a_hint_naming_storage_option(tmp_path: Path, moto: Any) -> None:
    manifest = write_manifest(tmp_path / "m.parquet", [{"content_uri": "c.png", "style_uri": "s.png"}])
    endpoint = moto.options["client_kwargs"]["endpoint_url"]
    result = _nst_process(
        [*run_args(manifest, "s3://bucket/out", PARAMS, "--weights", WEIGHTS),
         "--storage-option", f"client_kwargs.endpoint_url={endpoint}"],
        _clean_env(),
    )
    assert result.returncode == 1, result.stderr
    assert "--storage-option" in last_line(result.stderr), result.stderr
