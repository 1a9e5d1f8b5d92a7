"""Atomic writes, URI joining and secret masking in pipeline.store."""

import os

import fsspec
import pytest

from jobs.masking import mask_options, mask_text, mask_uri
from pipeline.store.errors import InputMissing
from pipeline.store.fs import join, parse_storage_options
from pipeline.store.transfer import read_bytes, write_bytes_atomic


def test_local_atomic_write_leaves_no_temporary_files(tmp_path) -> None:
    target = tmp_path / "a" / "b.png"
    write_bytes_atomic(str(target), b"one")
    write_bytes_atomic(str(target), b"two")  # repeating a write is harmless
    assert target.read_bytes() == b"two"
    assert os.listdir(target.parent) == ["b.png"]


def test_memory_write_and_read_round_trip() -> None:
    write_bytes_atomic("memory://storage-test/x/y.bin", b"payload")
    assert read_bytes("memory://storage-test/x/y.bin") == b"payload"
    fsspec.filesystem("memory").rm("/storage-test", recursive=True)


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_unreadable_inputs_raise_input_missing_naming_the_file(tmp_path, kind: str) -> None:
    path = tmp_path / "nope.jpg"
    if kind == "directory":
        path.mkdir()
    with pytest.raises(InputMissing, match="nope.jpg"):
        read_bytes(str(path))


def test_join_uses_forward_slashes() -> None:
    assert join("s3://bucket/run/", "images", "/x.png") == "s3://bucket/run/images/x.png"


def test_masking_hides_credentials_everywhere() -> None:
    assert mask_uri("s3://AKIA:supersecret@bucket/key") == "s3://***@bucket/key"
    assert "sig=***" in mask_uri("https://host/blob?sv=1&sig=abcdef")
    options = {"key": "AKIA123", "secret": "hunter22", "client_kwargs": {"endpoint_url": "http://127.0.0.1:9"}}
    masked = mask_options(options)
    assert masked["key"] == masked["secret"] == "***"
    assert masked["client_kwargs"]["endpoint_url"] == "http://127.0.0.1:9"
    assert "hunter22" not in mask_text("failed with hunter22 at s3://u:p@b/k", options)
    assert "u:p" not in mask_text("failed with hunter22 at s3://u:p@b/k", options)


def test_storage_options_parse_nested_and_typed_values() -> None:
    parsed = parse_storage_options(["anon=true", "client_kwargs.endpoint_url=http://127.0.0.1:1", "key=abc"])
    assert parsed == {"anon": True, "client_kwargs": {"endpoint_url": "http://127.0.0.1:1"}, "key": "abc"}
    with pytest.raises(ValueError, match="key=value"):
        parse_storage_options(["novalue"])
