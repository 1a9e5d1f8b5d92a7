"""warm_start: a coarse-to-fine stage starts from the previous stage's Adam moments, resized, and its step count."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from nst_core.engine import Stylizer
from nst_core.params import Init, OptimizerName, StyleParams
from nst_core.targets import Style

SCHEDULE = ((24, 3), (40, 3))
BASE = StyleParams(schedule=SCHEDULE, log_every=1, init=Init.noise, seed=3, tv_weight=1e-3)


def _rand(seed: int, h: int, w: int) -> torch.Tensor:
    return torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed))


class _RecordingAdam(torch.optim.Adam):
    """torch's Adam, keeping a copy of its state before its first step and after its last."""

    made: list[_RecordingAdam] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.first: dict[str, torch.Tensor] | None = None
        self.last: dict[str, torch.Tensor] = {}
        _RecordingAdam.made.append(self)

    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        (p,) = self.param_groups[0]["params"]
        if self.first is None:
            self.first = {k: v.clone() for k, v in self.state[p].items()}
        out = super().step(closure)
        self.last = {k: v.clone() for k, v in self.state[p].items()}
        return out


def test_second_stage_starts_from_the_first_stages_moments_resized(
    stylizer: Stylizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    _RecordingAdam.made = []
    monkeypatch.setattr(torch.optim, "Adam", _RecordingAdam)
    content, style = _rand(1, 24, 32), Style((_rand(2, 32, 32),))
    stylizer.stylize([content], style, BASE.replace(warm_start=True))
    first, second = _RecordingAdam.made
    assert first.first == {}  # the first stage starts fresh
    assert second.first is not None
    shape = tuple(second.first["exp_avg"].shape[-2:])
    assert shape == (30, 40) and tuple(first.last["exp_avg"].shape[-2:]) == (18, 24)
    for k in ("exp_avg", "exp_avg_sq"):
        desired = F.interpolate(
            first.last[k], size=shape, mode="bilinear", align_corners=False, antialias=True
        )
        torch.testing.assert_close(second.first[k], desired, atol=0, rtol=0)
    assert bool((second.first["exp_avg_sq"] >= 0).all())
    # The step count carries over (bias correction goes on from 3 instead of restarting at 1).
    assert float(first.last["step"]) == 3 and float(second.first["step"]) == 3
    assert float(second.last["step"]) == 6


def test_warm_start_off_is_the_default_and_a_no_op_where_there_is_no_state(stylizer: Stylizer) -> None:
    content, style = _rand(1, 24, 32), Style((_rand(2, 32, 32),))

    def image(params: StyleParams) -> torch.Tensor:
        return stylizer.stylize([content], style, params)[0].image

    short = BASE.replace(schedule=((24, 2), (32, 2)))
    restart = image(short)
    torch.testing.assert_close(image(short.replace(warm_start=False)), restart, atol=0, rtol=0)
    assert not torch.equal(image(short.replace(warm_start=True)), restart)
    # One stage, or plain gradient descent (no optimiser state): the same bits either way.
    single = StyleParams(size=24, steps=2, init=Init.noise, seed=3)
    torch.testing.assert_close(image(single.replace(warm_start=True)), image(single), atol=0, rtol=0)
    gd = short.replace(optimizer=OptimizerName.gd, lr=1e-3)
    torch.testing.assert_close(image(gd.replace(warm_start=True)), image(gd), atol=0, rtol=0)


@pytest.mark.parametrize("early_stop", [0.0, 0.04])
def test_a_warm_started_image_in_a_batch_does_not_depend_on_the_others(
    rows_are_independent: Callable[..., Any], early_stop: float
) -> None:
    params = BASE.replace(schedule=((24, 10), (32, 3)), lr=0.05, warm_start=True, early_stop=early_stop)
    contents = [_rand(2, 24, 32), _rand(1, 24, 32)]
    styles = [Style((_rand(11, 32, 32),)), Style((_rand(10, 32, 32),))]
    batched, others = rows_are_independent(
        (contents, styles), ([_rand(4, 24, 32)], [Style((_rand(13, 32, 32),))]), params
    )
    if early_stop > 0:
        # Row 0 stops in the first stage after 6 steps, its partner there runs all 10 and the
        # replacement stops after 4: row 0's moments must be frozen with its pixels, or they would go on
        # for as long as the rest of its batch runs, and enter its second stage.
        first_stage = [
            max(s for s, g in zip(r.curve.step, r.curve.stage, strict=True) if g == 0)
            for r in (batched[0], batched[1], others[1])
        ]
        assert first_stage == [6, 10, 4]


def test_warm_start_is_refused_with_lbfgs() -> None:
    with pytest.raises(ValueError, match="L-BFGS's curvature pairs cannot be resized") as info:
        StyleParams(optimizer="lbfgs", schedule=SCHEDULE, warm_start=True)
    assert "set warm_start=false with lbfgs" in str(info.value)
    StyleParams(optimizer="gd", warm_start=True)  # gd keeps no state: accepted, a no-op
    with pytest.raises(ValueError, match="warm_start must be true or false"):
        StyleParams(warm_start="yes")  # type: ignore[arg-type]
