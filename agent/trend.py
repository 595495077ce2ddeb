"""Disk projection: days until the warning threshold, robust to the cleanup sawtooth (pure).

Method.  The cleanup job draws a sawtooth on a disk's used %: it grows, a
cleanup drops it, it grows again.  What reaches the warning threshold is the
*peaks*, so the fit runs on the upper envelope: the maximum of each UTC day
(:func:`daily_maxima`; from hourly maxima Prometheus computes at 1 min
resolution).  The line through those maxima is the Theil-Sen estimator
(:func:`theil_sen`): the slope is the median of the slopes between every pair
of points, the intercept the median of ``y - slope * x`` (H. Theil, "A
rank-invariant method of linear and polynomial regression analysis", 1950;
P. K. Sen, "Estimates of the regression coefficient based on Kendall's tau",
JASA 63 (1968) 1379-1389).  It tolerates up to ~29 % outlying points (a
day whose peak a cleanup cut short, a one-off spike) where least squares
would tilt.  A slope <= 0 is stated as "not rising" (no days given).

Units: percent 0-100, Unix seconds, days of 86,400 s.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import Any

DAY_S = 86400
#: Fewer daily maxima than this give no projection ("insufficient data").
MIN_DAYS = 3
METHOD = ("Theil-Sen line (median of pairwise slopes; Theil 1950, Sen 1968) through the "
          "daily maxima of used % (upper envelope, so cleanup drops do not pull it down)")


def daily_maxima(points: list[list[float]]) -> list[tuple[float, float]]:
    """``[(t, v)]``: per UTC day (``t // 86400``) the point with the largest ``v``, in time
    order.  ``points`` is ``[[unix_s, value], ...]``."""
    best: dict[int, tuple[float, float]] = {}
    for t, v in points:
        day = int(t // DAY_S)
        if day not in best or v > best[day][1]:
            best[day] = (t, v)
    return [best[d] for d in sorted(best)]


def theil_sen(xy: list[tuple[float, float]]) -> tuple[float, float]:
    """``(slope, intercept)`` of the Theil-Sen line through ``xy`` (see the module docstring).

    Raises ValueError with fewer than two distinct x.
    """
    slopes = [(y2 - y1) / (x2 - x1) for i, (x1, y1) in enumerate(xy)
              for x2, y2 in xy[i + 1:] if x2 != x1]
    if not slopes:
        raise ValueError("need two points with different x")
    slope = statistics.median(slopes)
    return slope, statistics.median(y - slope * x for x, y in xy)


@dataclass(frozen=True)
class MountProjection:
    """One mount: ``state`` is ``rising`` (``days_to_warn`` given), ``not rising``,
    ``above`` (already over the threshold: 0 days) or ``insufficient data``."""

    mount: str
    state: str
    days_to_warn: float | None
    slope_percent_per_day: float | None
    fitted_percent: float | None  # the line's value at the series' last point
    last_max_percent: float | None
    days_of_data: int
    text: str


def project_mount(mount: str, points: list[list[float]], warn: float) -> MountProjection:
    """The projection of one mount's used % ``points`` to ``warn`` percent."""
    maxima = daily_maxima(points)
    if len(maxima) < MIN_DAYS:
        return MountProjection(mount, "insufficient data", None, None, None,
                               maxima[-1][1] if maxima else None, len(maxima),
                               f"{mount}: {len(maxima)} day(s) of data, need {MIN_DAYS}")
    slope_s, intercept = theil_sen(maxima)
    slope = slope_s * DAY_S
    fitted = intercept + slope_s * max(t for t, _v in points)  # the line, now
    state, days, text = _verdict(mount, slope, fitted, warn)
    return MountProjection(mount, state, days, round(slope, 4), round(fitted, 3),
                           maxima[-1][1], len(maxima), text)


def _verdict(mount: str, slope: float, fitted: float,
             warn: float) -> tuple[str, float | None, str]:
    if fitted >= warn:
        return "above", 0.0, f"{mount}: at {fitted:.1f} %, already over the {warn:g} % warning"
    if slope <= 0:
        return "not rising", None, f"{mount}: not rising ({slope:+.2f} %/day)"
    days = (warn - fitted) / slope
    return "rising", round(days, 2), (f"{mount}: ~{days:.0f} days until {warn:g} % "
                                       f"(+{slope:.2f} %/day)")


def project(series: list[dict[str, Any]], warn: float | None) -> dict[str, Any]:
    """``{warn_percent, days_to_warn, text, method, basis, mounts: [MountProjection]}``.

    ``series`` is ``[{name: mount, points}]`` of used % (hourly maxima are enough);
    ``days_to_warn`` is the soonest over the mounts (None when none is rising or ``warn``
    is None: threshold disabled).
    """
    if warn is None:
        return {"warn_percent": None, "days_to_warn": None, "mounts": [],
                "text": "no projection: thresholds.disk_used_percent.warn is disabled"}
    mounts = [project_mount(s["name"], s["points"], warn) for s in series]
    soonest = min((m for m in mounts if m.days_to_warn is not None),
                  key=lambda m: m.days_to_warn or 0.0, default=None)
    text = (soonest.text if soonest else "; ".join(m.text for m in mounts)
            or "no disk series to project")
    return {"warn_percent": warn, "days_to_warn": soonest.days_to_warn if soonest else None,
            "text": text, "method": METHOD, "basis": "daily maxima of the last 30 days",
            "mounts": [asdict(m) for m in mounts]}
