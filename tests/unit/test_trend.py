"""Trend step choice, the named query table and the disk projection (pure)."""

from __future__ import annotations

import dataclasses
import math
import statistics

import pytest

from agent import prometheus as prom
from agent.api.handlers.trend import TrendParams
from agent.api.params import parse_params
from agent.errors import BadRequest
from agent.trend import daily_maxima, project, project_mount, theil_sen

T0 = 1_700_006_400  # a UTC midnight (2023-11-15)
DAY = 86400
WARN = 80.0


def series(f: object, days: int = 30, every_s: int = 600) -> list[list[float]]:
    assert callable(f)
    return [[float(t), float(f((t - T0) / DAY))] for t in range(T0, T0 + days * DAY + 1, every_s)]


# --- step -------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "expected"), [("1h", 15), ("24h", 300), ("7d", 1800),
                                                ("30d", 7200)])
def test_step_per_range_gives_a_few_hundred_points(name: str, expected: int) -> None:
    range_s = prom.RANGES[name]
    step = prom.choose_step(range_s)
    assert step == expected
    points = range_s // step + 1  # start and end inclusive, as query_range counts them
    assert 200 <= points <= prom.TARGET_POINTS + 1 < prom.MAX_POINTS


@pytest.mark.parametrize("range_s", [1, 60, 3599, 3601, 86400 * 90, 86400 * 365 * 5])
def test_step_never_exceeds_prometheus_resolution_limit(range_s: int) -> None:
    step = prom.choose_step(range_s)
    assert step >= prom.MIN_STEP_S
    assert range_s // step + 1 <= prom.MAX_POINTS


# --- query table ------------------------------------------------------------------------


def test_every_kind_has_fixed_queries_with_the_selector() -> None:
    extra = 'instance="vm1:9100"'
    for kind in prom.KINDS:
        queries = prom.trend_queries(kind, 300, mounts=("/", "/data"), extra=extra)
        assert queries
        for q in queries:
            assert extra in q.expr and (q.name or q.label)
    disk = prom.trend_queries("disk", 300, mounts=("/", "/data"))[0].expr
    assert 'mountpoint=~"/|/data"' in disk and "node_filesystem_avail_bytes" in disk
    steal = prom.trend_queries("steal", 300, mounts=("/",), extra=extra)[0].expr
    assert steal == ('100 * avg(rate(node_cpu_seconds_total{mode="steal",instance="vm1:9100"}'
                     '[300s]))')
    assert "[7200s]" in prom.trend_queries("io", 7200, mounts=("/",))[0].expr  # window >= step
    assert "[300s]" in prom.trend_queries("io", 15, mounts=("/",))[0].expr  # 5 min floor
    names = [q.name for q in prom.trend_queries("memory", 60, mounts=("/",))]
    assert names == ["MemAvailable", "swap_used"]
    assert "vmagent_containers_unhealthy" in prom.trend_queries(
        "containers", 60, mounts=("/",))[0].expr
    with pytest.raises(KeyError):
        prom.trend_queries("up", 60, mounts=("/",))


def test_mount_names_are_regex_literals_in_a_promql_string() -> None:
    expr = prom.trend_queries("disk", 60, mounts=("/mnt/a.b", '/x"y'))[0].expr
    # re.escape gives a\.b; inside a PromQL (Go-escaped) string the backslash is doubled.
    assert r'mountpoint=~"/mnt/a\\.b|/x\"y"' in expr


def test_no_client_text_reaches_a_query() -> None:
    # Every request parameter is one of a fixed list; anything else is refused at the edge.
    for f in dataclasses.fields(TrendParams):
        assert "choices" in f.metadata, f.name
    for raw in ({"kind": 'disk"}) or vector(1'}, {"kind": "disk", "range": "5m"},
                {"kind": "disk", "query": "up"}, {"kind": "up"}):
        with pytest.raises(BadRequest):
            parse_params(TrendParams, raw, query_keys=frozenset(raw))
    ok = parse_params(TrendParams, {"kind": "io"}, query_keys=frozenset({"kind"}))
    assert (ok.kind, ok.range) == ("io", "24h")


def test_points_drop_values_json_cannot_carry() -> None:
    got = prom.points([[1, "1.5"], [2, "NaN"], [3, "+Inf"], [4, "-Inf"], [5, "0"]])
    assert got == [[1.0, 1.5], [5.0, 0.0]]


# --- projection -------------------------------------------------------------------------


def test_theil_sen_ignores_an_outlier_least_squares_would_follow() -> None:
    xy = [(float(x), 2.0 * x + 1) for x in range(11)]
    xy[5] = (5.0, 100.0)
    slope, intercept = theil_sen(xy)
    assert (slope, intercept) == (2.0, 1.0)
    with pytest.raises(ValueError):
        theil_sen([(1.0, 1.0), (1.0, 2.0)])


def test_daily_maxima_keep_the_peak_of_each_utc_day() -> None:
    pts = [[T0 + 100, 5.0], [T0 + 200, 9.0], [T0 + DAY + 5, 1.0], [T0 + DAY - 1, 2.0]]
    assert daily_maxima(pts) == [(T0 + 200, 9.0), (T0 + DAY + 5, 1.0)]


def test_rising_disk_days_until_warning() -> None:
    m = project_mount("/", series(lambda d: 50 + 0.5 * d), WARN)  # 65 % now, +0.5 %/day
    assert m.state == "rising"
    assert m.slope_percent_per_day == pytest.approx(0.5, abs=1e-6)
    assert m.days_to_warn == pytest.approx(30.0, abs=0.05)
    assert m.days_of_data == 31


def test_flat_and_falling_are_not_rising() -> None:
    for f in (lambda d: 60.0, lambda d: 70 - 0.3 * d):
        m = project_mount("/", series(f), WARN)
        assert (m.state, m.days_to_warn) == ("not rising", None)
        assert "not rising" in m.text


def _sawtooth(d: float) -> float:
    """Baseline +0.4 %/day, +10 % a day of growth wiped by a cleanup at 03:00 UTC."""
    phase = ((d * DAY - 3 * 3600) % DAY) / DAY
    return 30 + 0.4 * d + 10 * phase


def test_sawtooth_rising_projects_from_the_peaks() -> None:
    pts = series(_sawtooth)
    m = project_mount("/data", pts, WARN)
    # The peaks (10 min before each cleanup) lie on 30 + 10 * (1 - 600/DAY) + 0.4 d.
    envelope_now = 30 + 10 * (1 - 600 / DAY) + 0.4 * 30
    assert m.state == "rising"
    assert m.slope_percent_per_day == pytest.approx(0.4, abs=1e-3)
    assert m.days_to_warn == pytest.approx((WARN - envelope_now) / 0.4, abs=0.5)
    # A least-squares line through every point sits on the mean and would promise ~12 more days.
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    ls = statistics.linear_regression(xs, ys)
    naive = (WARN - (ls.intercept + ls.slope * xs[-1])) / (ls.slope * DAY)
    assert naive - m.days_to_warn > 10  # type: ignore[operator]


def test_a_one_day_spike_does_not_move_the_projection() -> None:
    pts = series(lambda d: 50 + 0.5 * d)
    pts += [[T0 + 10 * DAY + 3600, 95.0]]  # a transient spike on day 10
    m = project_mount("/", pts, WARN)
    assert m.days_to_warn == pytest.approx(30.0, abs=0.6)


def test_above_threshold_and_too_little_history() -> None:
    above = project_mount("/", series(lambda d: 79 + 0.5 * d, days=5), WARN)
    assert (above.state, above.days_to_warn) == ("above", 0.0)
    short = project_mount("/", series(lambda d: 50 + d, days=1), WARN)
    assert (short.state, short.days_to_warn, short.days_of_data) == ("insufficient data",
                                                                     None, 2)


def test_project_reports_the_soonest_mount_and_how_it_was_fitted() -> None:
    got = project([{"name": "/", "points": series(lambda d: 50 + 0.5 * d)},
                   {"name": "/data", "points": series(_sawtooth)},
                   {"name": "/flat", "points": series(lambda d: 40.0)}], WARN)
    assert got["days_to_warn"] == pytest.approx(30.0, abs=0.05)
    assert got["text"].startswith("/: ~30 days until 80 %")
    assert "Theil-Sen" in got["method"] and "daily maxima" in got["method"]
    assert [m["state"] for m in got["mounts"]] == ["rising", "rising", "not rising"]
    none = project([{"name": "/flat", "points": series(lambda d: 40.0)}], WARN)
    assert none["days_to_warn"] is None and "not rising" in none["text"]
    off = project([{"name": "/", "points": series(lambda d: 50 + d)}], None)
    assert off["days_to_warn"] is None and "disabled" in off["text"]
    assert not math.isnan(got["mounts"][1]["fitted_percent"])
