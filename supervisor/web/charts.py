"""Throughput and failure charts: rows of finished jobs per time bucket and type, turned into
a drawing model (bars, grid lines, labels) that ``templates/_chart.html`` renders as inline SVG.

Nothing here touches user text except job type names, which only ever reach the page through
the (autoescaping) template.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

# Colours for job types in stacking order, then one for everything beyond them.
PALETTE = ("#2563eb", "#14b8a6", "#8b5cf6", "#f59e0b", "#ec4899", "#64748b")
OTHER_COLOUR = "#cbd5e1"
OTHER = "other types"


@dataclass(frozen=True)
class Window:
    name: str
    label: str
    seconds: int
    bucket: int  # seconds per bar
    tick_every: int  # seconds between x-axis labels


WINDOWS = {
    "hour": Window("hour", "Last hour", 3600, 60, 600),
    "day": Window("day", "Last 24 hours", 86400, 900, 3 * 3600),
}

# Geometry of one chart, in SVG user units (the SVG scales to its container's width).
WIDTH, HEIGHT = 640, 200
LEFT, RIGHT, TOP, BOTTOM = 44, 8, 10, 24


@dataclass
class Bar:
    x: float
    y: float
    w: float
    h: float
    colour: str
    title: str


@dataclass
class Chart:
    key: str
    title: str
    unit: str
    bars: list[Bar] = field(default_factory=list)
    grid: list[tuple[float, str]] = field(default_factory=list)  # (y, label)
    ticks: list[tuple[float, str]] = field(default_factory=list)  # (x, label)
    total: int = 0
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    right_edge: int = WIDTH - RIGHT
    top: int = TOP
    baseline: int = HEIGHT - BOTTOM


@dataclass
class Charts:
    window: Window
    throughput: Chart
    failures: Chart
    legend: list[tuple[str, str]]  # (colour, job type)
    succeeded: int
    failed: int

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed

    @property
    def failure_rate(self) -> float | None:
        return self.failed / self.finished if self.finished else None


def nice_step(value: float) -> float:
    """The smallest 1, 2 or 5 × 10^n at or above ``value``: a grid step people read easily."""
    if value <= 0:
        return 1.0
    exponent = math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        candidate = step * 10.0 ** exponent
        if candidate >= value * (1 - 1e-9):
            return candidate
    return 10.0 ** (exponent + 1)


def _format_tick(value: float, step: float) -> str:
    decimals = max(0, -math.floor(math.log10(step))) if step < 1 else 0
    return f"{value:,.{decimals}f}"


def _format_rate(value: float) -> str:
    if value >= 10:
        return f"{value:,.0f}"
    return f"{value:.2f}".rstrip("0").rstrip(".") or "0"


def _clock(epoch: float, with_day: bool) -> str:
    fmt = "%a %H:%M" if with_day else "%H:%M"
    return time.strftime(fmt, time.gmtime(epoch))


def build(rows: Iterable[dict[str, Any]], *, now: float, window: Window, max_types: int = len(PALETTE)) -> Charts:
    """Lay out the two charts of ``window`` from ``jobs_finished_per_bucket`` rows.

    Bars are jobs per minute (a bucket's count divided by its length in minutes), stacked by
    job type: the busiest ``max_types`` types get their own colour, the rest share one.
    """
    bucket = window.bucket
    count = window.seconds // bucket
    last = math.floor(now / bucket) * bucket
    first = last - (count - 1) * bucket
    per_minute = 60.0 / bucket

    cells: dict[tuple[float, str], tuple[int, int]] = {}
    totals: dict[str, int] = {}
    succeeded = failed = 0
    for row in rows:
        start = float(row["bucket"])
        if start < first or start > last:
            continue
        ok, bad = int(row["succeeded"]), int(row["failed"])
        job_type = row["job_type"]
        prev_ok, prev_bad = cells.get((start, job_type), (0, 0))
        cells[(start, job_type)] = (prev_ok + ok, prev_bad + bad)
        totals[job_type] = totals.get(job_type, 0) + ok + bad
        succeeded += ok
        failed += bad

    ranked = sorted(totals, key=lambda t: (-totals[t], t))
    named = ranked[:max_types] if len(ranked) <= max_types else ranked[:max_types - 1]
    colour = {t: PALETTE[i] for i, t in enumerate(named)}
    order = named + ([OTHER] if len(ranked) > len(named) else [])
    legend = [(colour.get(t, OTHER_COLOUR), t) for t in order]

    def group(job_type: str) -> str:
        return job_type if job_type in colour else OTHER

    # values[chart][bucket index][group] = jobs per minute
    stacks: dict[str, list[dict[str, float]]] = {"throughput": [{} for _ in range(count)],
                                                 "failures": [{} for _ in range(count)]}
    for (start, job_type), (ok, bad) in cells.items():
        index = int(round((start - first) / bucket))
        g = group(job_type)
        through = stacks["throughput"][index]
        through[g] = through.get(g, 0.0) + (ok + bad) * per_minute
        if bad:
            fails = stacks["failures"][index]
            fails[g] = fails.get(g, 0.0) + bad * per_minute

    with_day = window.seconds > 3600
    bucket_label = "minute" if bucket == 60 else f"{bucket // 60} minutes"
    charts = {}
    for key, title, total in (("throughput", "Throughput", succeeded + failed), ("failures", "Failures", failed)):
        chart = Chart(key=key, title=title, unit="jobs/min", total=total)
        plot_w = chart.right_edge - chart.left
        plot_h = chart.baseline - chart.top
        peak = max((sum(stack.values()) for stack in stacks[key]), default=0.0)
        step = nice_step(peak / 4) if peak else 1.0
        if bucket == 60:  # whole jobs per minute: no fractional grid lines
            step = max(step, 1.0)
        lines = max(1, math.ceil(peak / step - 1e-9)) if peak else 4
        top_value = step * lines
        for i in range(lines + 1):
            chart.grid.append((round(chart.baseline - plot_h * i / lines, 2), _format_tick(step * i, step)))
        slot = plot_w / count
        gap = min(2.0, slot * 0.2)
        for index, stack in enumerate(stacks[key]):
            x = chart.left + index * slot + gap / 2
            y = float(chart.baseline)
            start = first + index * bucket
            when = _clock(start, with_day)
            for g in order:
                value = stack.get(g, 0.0)
                if value <= 0:
                    continue
                h = plot_h * value / top_value
                y -= h
                jobs = round(value / per_minute)
                noun = "failed" if key == "failures" else "finished"
                chart.bars.append(Bar(x=round(x, 2), y=round(y, 2), w=round(max(slot - gap, 0.5), 2),
                                      h=round(max(h, 0.5), 2), colour=colour.get(g, OTHER_COLOUR),
                                      title=f"{when} UTC ({bucket_label}): {g}: {jobs} {noun}, "
                                            f"{_format_rate(value)} jobs/min"))
        tick = window.tick_every
        t = math.ceil(first / tick) * tick
        while t <= last + bucket:
            x = chart.left + (t - first) / bucket * slot
            if chart.left <= x <= chart.right_edge:
                chart.ticks.append((round(x, 2), _clock(t, with_day)))
            t += tick
        charts[key] = chart
    return Charts(window=window, throughput=charts["throughput"], failures=charts["failures"],
                  legend=legend, succeeded=succeeded, failed=failed)
