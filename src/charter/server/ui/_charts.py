"""Charts as inline SVG, drawn on the server: line charts over time and sparklines.

No chart library and no script: a chart is markup the page carries, readable with
JavaScript off and admitted by the strict Content-Security-Policy (colours and strokes
come from the stylesheet through classes; no `style=` attribute anywhere). Each chart
names itself for assistive technology (`role="img"`, a `<title>` and a `<desc>` that
says in words what the lines show), and the page puts its numbers in a table beside it.

Every piece of text that goes into the markup is escaped here; values that are None
(an empty sample) are gaps in a line, never zeros.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from markupsafe import Markup, escape

from charter.server.ui._format import parse_time

__all__ = [
    "Chart",
    "Line",
    "Threshold",
    "format_number",
    "format_percent",
    "format_seconds",
    "line_chart",
    "nice_ceiling",
    "sparkline",
]

#: The drawing's own coordinates; the stylesheet scales it to the page's width. A wide
#: chart (a row of its own) is twice as wide, so its text comes out the same size.
WIDTH, WIDE, HEIGHT = 640, 1296, 210
_LEFT, _RIGHT, _TOP, _BOTTOM = 52, 14, 14, 30
#: How many distinct line colours the stylesheet defines (`series-0` ...).
COLOURS = 6


def format_percent(value: float | None) -> str:
    """`42%` (`4.2%` under ten); `—` for no value."""
    if value is None:
        return "—"
    share = value * 100
    if share and abs(share) < 10 and round(share) != share:
        return f"{share:.1f}%"
    return f"{round(share)}%"


def format_seconds(value: float | None) -> str:
    """`45s`, `3m 20s`, `2h 05m`; `—` for no value."""
    if value is None:
        return "—"
    if value < 10:
        return f"{value:.1f}s" if value != int(value) else f"{int(value)}s"
    seconds = round(value)
    if seconds < 60:
        return f"{seconds}s"
    minutes, rest = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {rest:02d}s" if rest else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if minutes else f"{hours}h"


def format_number(value: float | None) -> str:
    """A figure such as a PSI or an ECE to two or three places; `—` for no value."""
    if value is None:
        return "—"
    if value and abs(value) < 0.01:
        return f"{value:.3f}"
    return f"{value:.2f}"


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 4 and 8 times a power of ten that is at least `value`.

    Those split into four round quarters: the chart's grid lines.
    """
    if value <= 0 or not math.isfinite(value):
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    for step in (1.0, 2.0, 4.0, 8.0, 10.0):
        if value <= step * power * (1 + 1e-9):
            return step * power
    return 10 * power  # pragma: no cover - the loop always returns


@dataclass(frozen=True, slots=True)
class Line:
    """One line of a chart: its name and a value (or None, a gap) per time."""

    label: str
    values: Sequence[float | None]


@dataclass(frozen=True, slots=True)
class Threshold:
    """A level marked across a chart, such as the PSI of 0.25 that means drift."""

    value: float
    label: str
    tone: str = "bad"  # `bad` (red) or `warn` (amber)


@dataclass(frozen=True, slots=True)
class Chart:
    """A drawn chart with what the page shows beside it.

    `svg` is the drawing; `summary` is its text alternative in one or two sentences;
    `columns` and `rows` are the accessible data table (a time, then one cell per line).
    """

    id: str
    title: str
    summary: str
    svg: Markup
    lines: tuple[str, ...]
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    empty: bool
    thresholds: tuple[Threshold, ...] = field(default=())
    #: Values above this were drawn at the top edge (None: nothing was cut off).
    clipped_above: float | None = None
    #: Drawn to take a row of its own.
    wide: bool = False


def _clock(text: str, long: bool) -> str:
    moment = parse_time(text)
    if moment is None:
        return text
    return moment.strftime("%d %b %H:%M" if long else "%H:%M")


def _path(
    points: Sequence[tuple[float, float] | None],
) -> tuple[list[str], list[tuple[float, float]]]:
    """SVG path data for runs of points (None breaks a line), and the isolated points."""
    runs: list[list[tuple[float, float]]] = [[]]
    for point in points:
        if point is None:
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append(point)
    paths, dots = [], []
    for run in runs:
        if len(run) == 1:
            dots.append(run[0])
        elif run:
            head, *rest = run
            steps = " ".join(f"L{x:.1f} {y:.1f}" for x, y in rest)
            paths.append(f"M{head[0]:.1f} {head[1]:.1f} {steps}")
    return paths, dots


def _describe(
    title: str,
    lines: Sequence[Line],
    times: Sequence[str],
    fmt: Callable[[float | None], str],
    span: str,
) -> str:
    """The chart in words: per line, its latest value and its highest, and when."""
    parts = []
    for line in lines:
        known = [(v, t) for v, t in zip(line.values, times, strict=True) if v is not None]
        name = f"{line.label}: " if len(lines) > 1 else ""
        if not known:
            parts.append(f"{name}no data")
            continue
        latest, at = known[-1]
        peak, peak_at = max(known, key=lambda item: item[0])
        parts.append(
            f"{name}latest {fmt(latest)} at {_clock(at, False)} UTC, "
            f"highest {fmt(peak)} at {_clock(peak_at, False)} UTC, "
            f"{len(known)} of {len(times)} steps with data"
        )
    if not lines:
        parts.append("no data")
    return f"{title} over {span}: " + "; ".join(parts) + "."


def line_chart(
    chart_id: str,
    title: str,
    times: Sequence[str],
    lines: Sequence[Line],
    *,
    fmt: Callable[[float | None], str] = format_number,
    y_max: float | None = None,
    y_floor: float = 0.0,
    y_cap: float | None = None,
    thresholds: Sequence[Threshold] = (),
    span: str = "the period shown",
    wide: bool = False,
) -> Chart:
    """A line chart of `lines` over `times` (the end of each step, RFC 3339), oldest first.

    The y axis runs from 0 to `y_max` (fixed, for rates), else to a round number above
    the highest value, the thresholds, and `y_floor`, but no higher than `y_cap`: values
    above the cap are drawn at the top edge (the text and the table keep them whole), so
    one extreme value does not flatten the lines and thresholds near zero.
    """
    width = WIDE if wide else WIDTH
    count = len(times)
    known = [v for line in lines for v in line.values if v is not None]
    top = y_max
    if top is None:
        highest = max([*known, *(t.value for t in thresholds), y_floor], default=0.0)
        top = nice_ceiling(highest * 1.05) if highest > 0 else 1.0
        if y_cap is not None:
            top = min(top, y_cap)
    clipped = top if any(v > top for v in known) else None
    plot_w = width - _LEFT - _RIGHT
    plot_h = HEIGHT - _TOP - _BOTTOM

    def x_of(k: int) -> float:
        return _LEFT + (plot_w * k / (count - 1) if count > 1 else plot_w / 2)

    def y_of(value: float) -> float:
        share = min(max(value / top, 0.0), 1.0) if top else 0.0
        return _TOP + plot_h * (1 - share)

    summary = _describe(title, lines, times, fmt, span)
    out = [
        f'<svg class="chart" viewBox="0 0 {width} {HEIGHT}" role="img" '
        f'aria-labelledby="{chart_id}-title {chart_id}-desc" '
        f'preserveAspectRatio="xMidYMid meet" data-testid="chart-{chart_id}">',
        f'<title id="{chart_id}-title">{escape(title)}</title>',
        f'<desc id="{chart_id}-desc">{escape(summary)}</desc>',
    ]
    # the y grid and its labels: 0, a quarter ... the top
    for k in range(5):
        value = top * k / 4
        y = y_of(value)
        out.append(
            f'<line class="grid" x1="{_LEFT}" y1="{y:.1f}" x2="{width - _RIGHT}" y2="{y:.1f}"/>'
        )
        out.append(
            f'<text class="axis" x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{escape(fmt(value))}</text>"
        )
    # the x labels: the first, the last and three (seven when wide) between
    if count:
        long = _long_span(times)
        parts = 8 if wide else 4
        ticks = sorted({round((count - 1) * k / parts) for k in range(parts + 1)})
        for k in ticks:
            anchor = "start" if k == 0 and count > 1 else "end" if k == count - 1 else "middle"
            out.append(
                f'<text class="axis" x="{x_of(k):.1f}" y="{HEIGHT - 8}" text-anchor="{anchor}">'
                f"{escape(_clock(times[k], long))}</text>"
            )
    out.append(
        f'<line class="axis-line" x1="{_LEFT}" y1="{_TOP + plot_h}" '
        f'x2="{width - _RIGHT}" y2="{_TOP + plot_h}"/>'
    )
    for threshold in thresholds:
        y = y_of(threshold.value)
        out.append(
            f'<line class="threshold threshold-{threshold.tone}" x1="{_LEFT}" y1="{y:.1f}" '
            f'x2="{width - _RIGHT}" y2="{y:.1f}"/>'
        )
        out.append(
            f'<text class="threshold-label threshold-label-{threshold.tone}" '
            f'x="{width - _RIGHT - 4}" y="{y - 4:.1f}" text-anchor="end">'
            f"{escape(threshold.label)}</text>"
        )
    for index, line in enumerate(lines):
        tone = f"series-{index % COLOURS}"
        points = [None if v is None else (x_of(k), y_of(v)) for k, v in enumerate(line.values)]
        paths, _ = _path(points)
        out.append(f'<g class="series {tone}"><title>{escape(line.label)}</title>')
        out.extend(f'<path class="line" d="{d}"/>' for d in paths)
        out.extend(
            f'<circle class="dot" cx="{p[0]:.1f}" cy="{p[1]:.1f}" r="2.6"/>'
            for p in points
            if p is not None
        )
        out.append("</g>")
    if not known:
        out.append(
            f'<text class="no-data" x="{_LEFT + plot_w / 2:.1f}" y="{_TOP + plot_h / 2:.1f}" '
            f'text-anchor="middle">no data in this period</text>'
        )
    out.append("</svg>")
    long = _long_span(times)
    rows = tuple(
        (
            _clock(t, long) + " UTC",
            *(fmt(line.values[k]) for line in lines),
        )
        for k, t in enumerate(times)
    )
    return Chart(
        id=chart_id,
        title=title,
        summary=summary,
        svg=Markup("".join(out)),  # noqa: S704 - built above, every text escaped
        lines=tuple(line.label for line in lines),
        columns=("Step ending", *(line.label for line in lines)),
        rows=rows,
        empty=not known,
        thresholds=tuple(thresholds),
        clipped_above=clipped,
        wide=wide,
    )


def _long_span(times: Sequence[str]) -> bool:
    """Whether the times span more than a day's clock (labels then carry the date)."""
    if len(times) < 2:
        return False
    first, last = parse_time(times[0]), parse_time(times[-1])
    return first is not None and last is not None and first.date() != last.date()


def sparkline(values: Sequence[float | None], label: str, *, top: float = 1.0) -> Markup:
    """A small line of `values` (0 to `top`, oldest first) named `label` for readers.

    Gaps for None; the last value with data is marked with a dot.
    """
    width, height, pad = 96.0, 24.0, 2.5
    count = len(values)

    def point(k: int, value: float) -> tuple[float, float]:
        x = pad + (width - 2 * pad) * (k / (count - 1) if count > 1 else 0.5)
        share = min(max(value / top, 0.0), 1.0) if top else 0.0
        return x, pad + (height - 2 * pad) * (1 - share)

    points = [None if v is None else point(k, v) for k, v in enumerate(values)]
    paths, _ = _path(points)
    last = next((p for p in reversed(points) if p is not None), None)
    body = [
        f'<svg class="spark" viewBox="0 0 {width:.0f} {height:.0f}" role="img" '
        f'aria-label="{escape(label)}" data-testid="sparkline">',
        f"<title>{escape(label)}</title>",
        f'<line class="spark-base" x1="{pad}" y1="{height - pad}" '
        f'x2="{width - pad}" y2="{height - pad}"/>',
    ]
    body.extend(f'<path class="spark-line" d="{d}"/>' for d in paths)
    if last is not None:
        body.append(f'<circle class="spark-dot" cx="{last[0]:.1f}" cy="{last[1]:.1f}" r="2.2"/>')
    body.append("</svg>")
    return Markup("".join(body))  # noqa: S704 - built above, every text escaped
