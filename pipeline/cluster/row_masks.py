"""The region masks of one batch's rows (Gatys et al. 2017 spatial control): read, decoded and checked per
row while the batch loads, so a bad mask fails only its own row; used by `batch_run.BatchRun.load`.

Rows of one batch share their style image but may differ in masks: each distinct style mask gets its own
`Style` (one identity per style image and style mask, which the engine's target cache keys on), and rows
without a style mask share the unmasked one.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

import torch

from jobs.masking import mask_text
from nst_core.masks import check_masks
from nst_core.targets import Style
from pipeline.cluster.row_checks import describe
from pipeline.cluster.tasks import RowTask


class MaskHost(Protocol):
    io: ThreadPoolExecutor

    def read_mask(self, uri: str) -> torch.Tensor: ...

    def style_mask(self, uri: str) -> torch.Tensor: ...


class MaskFailure(Exception):
    """A row's masks cannot be used; `cause` is classified like an input read failure (bad_input for a
    bad or missing mask, retried for a storage error)."""

    def __init__(self, message: str, cause: BaseException) -> None:
        super().__init__(message)
        self.cause = cause


class RowMasks:
    """Content-mask reads start at construction (overlapping the content reads); style masks are read on
    first use through the worker's cache."""

    def __init__(self, host: MaskHost, rows: Sequence[RowTask], plain: Style) -> None:
        self.host = host
        self.plain = plain
        self.futures: dict[str, Future[torch.Tensor]] = {
            t.row_id: host.io.submit(host.read_mask, t.content_mask_uri) for t in rows if t.content_mask_uri
        }
        self.styles: dict[str, Style | BaseException] = {}

    def for_row(self, task: RowTask, content: torch.Tensor) -> tuple[torch.Tensor | None, Style]:
        """(content mask or None, the row's Style), checked against the row's content image; raises
        MaskFailure naming the mask URI."""
        mask = self._content_mask(task)
        style = self._style(task)
        names = (mask_text(task.content_mask_uri or ""), mask_text(task.style_mask_uri or ""))
        try:
            check_masks((int(content.shape[-2]), int(content.shape[-1])), mask, style, names=names)
        except Exception as exc:  # noqa: BLE001 - MaskError (bad_input), or a bug reported as such
            raise MaskFailure(f"masks: {describe(exc)}", exc) from None
        return mask, style

    def _content_mask(self, task: RowTask) -> torch.Tensor | None:
        future = self.futures.get(task.row_id)
        if future is None:
            return None
        try:
            return future.result()
        except Exception as exc:  # noqa: BLE001 - this row's own mask
            raise MaskFailure(_read_message("content", exc), exc) from None

    def _style(self, task: RowTask) -> Style:
        uri = task.style_mask_uri
        if uri is None:
            return self.plain
        if uri not in self.styles:
            try:
                mask = self.host.style_mask(uri)
                self.styles[uri] = Style(images=self.plain.images, key=self.plain.key, masks=(mask,))
            except Exception as exc:  # noqa: BLE001 - fails the rows that use this style mask only
                self.styles[uri] = exc
        got = self.styles[uri]
        if isinstance(got, BaseException):
            raise MaskFailure(_read_message("style", got), got)
        return got


def _read_message(which: str, exc: BaseException) -> str:
    """`content mask <uri>: 17 distinct colours…` (decode messages already start with `mask <uri>`), or
    `content mask file not found: <uri>`."""
    text = describe(exc)
    return f"{which} {text}" if text.startswith("mask ") else f"{which} mask {text}"
