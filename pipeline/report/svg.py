"""Loss curves as SVG polylines (log-scaled losses against steps); called by the HTML report builder.

The report embeds only the polylines' point lists (small integers in a fixed viewBox) and the axis
range; the page wraps them in an <svg> when a row is opened. No plotting library is needed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from nst_core.names import LOSS_TERMS

WIDTH = 300
HEIGHT = 150
SERIES = LOSS_TERMS


def curve_plot(curve: Mapping[str, Sequence[float]], *, width: int = WIDTH, height: int = HEIGHT) -> dict[str, Any] | None:
    """{"x": [first step, last step], "y": [min, max] (losses), "lines": {series: "x,y x,y …"}} or None.

    Y is log10 of the loss over the shared range of every positive value; a series with no positive
    value (e.g. tv when its weight is 0) is left out. Points with a non-positive value are skipped.
    """
    steps = [float(s) for s in curve.get("step", [])]
    if not steps:
        return None
    values = [
        v for name in SERIES for v in curve.get(name, []) if isinstance(v, (int, float)) and math.isfinite(v) and v > 0
    ]
    if not values:
        return None
    lo, hi = math.log10(min(values)), math.log10(max(values))
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    x0, x1 = steps[0], steps[-1]
    span = (x1 - x0) or 1.0
    lines: dict[str, str] = {}
    for name in SERIES:
        series = curve.get(name)
        if series is None:
            continue
        points = []
        for step, v in zip(steps, series, strict=False):
            if isinstance(v, (int, float)) and math.isfinite(v) and v > 0:
                x = round((step - x0) / span * width)
                y = round(height - (math.log10(v) - lo) / (hi - lo) * height)
                points.append(f"{x},{y}")
        if points:
            lines[name] = " ".join(points)
    return {"x": [int(x0), int(x1)], "y": [10**lo, 10**hi], "lines": lines, "w": width, "h": height}
