"""What the fleet, agent and runbook pages show, gathered from the service.

Blocking (the service takes its locks and may read the store): the handlers run these
in a worker thread. Nothing here renders HTML except the charts (`_charts`) and the
runbook's Markdown, which is rendered with raw HTML turned off so markup written in a
runbook shows as text.

The figures are the monitors' (`charter.monitors.Figures`): rates are None when their
sample is empty and are shown as `—`, and every rate names its sample
(`FIGURE_FIELDS`), which the pages show as a tooltip.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from markdown_it import MarkdownIt
from markupsafe import Markup

from charter.model import AgentProfile, Halt
from charter.monitors import FIGURE_FIELDS, Figures, Series
from charter.server.ui._charts import (
    Chart,
    Line,
    Threshold,
    format_number,
    format_percent,
    format_seconds,
    line_chart,
    sparkline,
)
from charter.service import Charter

__all__ = [
    "DRIFT",
    "DRIFT_WATCH",
    "HOURS",
    "AgentPage",
    "FigureRow",
    "FleetPage",
    "FleetRow",
    "Rate",
    "agent_page",
    "circuits_of",
    "fleet_page",
    "hours_of",
    "render_runbook",
    "runbook_title",
    "show_figure",
    "where",
]

#: The PSI at which inputs have drifted (red), and at which they are worth a look (amber).
DRIFT, DRIFT_WATCH = 0.25, 0.1
#: The rates a fleet row shows, in order, with their column names.
_ROW_RATES = (
    ("autonomous_rate", "Alone"),
    ("approval_rate", "Approval"),
    ("escalation_rate", "Escalated"),
    ("rejection_rate", "Rejected"),
    ("success_rate", "Success"),
)
#: The figures table of the agent page: (figure, column, format).
_TABLE_FIGURES = (
    ("autonomous_rate", "Alone", "percent"),
    ("approval_rate", "Approval", "percent"),
    ("escalation_rate", "Escalated", "percent"),
    ("deny_rate", "Denied", "percent"),
    ("rejection_rate", "Rejected", "percent"),
    ("success_rate", "Success", "percent"),
    ("reviewer_latency_p50_seconds", "Review p50", "seconds"),
    ("reviewer_latency_p95_seconds", "Review p95", "seconds"),
    ("expected_calibration_error", "ECE", "number"),
)
_FORMATS = {"percent": format_percent, "seconds": format_seconds, "number": format_number}
#: The fleet page's window for its rates: the last hour.
HOUR = 3600
#: The hours the agent page's charts may cover (`?hours=`), and the default.
HOURS = (1, 6, 12, 24)
DEFAULT_HOURS = 24
#: Points of the agent page's charts (fewer when a step would be under a bucket).
_CHART_POINTS = 60
#: The fleet rows' sparkline: the success rate per hour over the last day.
_SPARK_POINTS, _SPARK_STEP = 24, 3600
_SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


@dataclass(frozen=True, slots=True)
class Rate:
    """One rate as a cell shows it: its value (None: empty sample) and what it is of."""

    name: str
    label: str
    value: float | None
    sample: int
    kind: str = "percent"

    @property
    def text(self) -> str:
        """The value as shown: `42%`, `3m 20s`, `0.12`, or `—`."""
        return _FORMATS[self.kind](self.value)

    @property
    def title(self) -> str:
        """What the rate means and the sample it is of: the cell's tooltip."""
        described = FIGURE_FIELDS.get(self.name)
        sample = described.sample if described is not None else None
        meaning = described.help if described is not None else self.name
        if sample is None:
            return meaning
        return f"{meaning}; sample: {self.sample} {sample.replace('_', ' ')}"


def _rate(figures: Figures | None, name: str, label: str, kind: str = "percent") -> Rate:
    if figures is None:
        return Rate(name, label, None, 0, kind)
    described = FIGURE_FIELDS.get(name)
    sample_name = described.sample if described is not None else None
    sample = int(getattr(figures, sample_name)) if sample_name else 0
    return Rate(name, label, getattr(figures, name), sample, kind)


def where(alert: Mapping[str, Any]) -> str:
    """Where an alert fires, in words: `support-bot · payments.refund`, or `the fleet`."""
    agent, action = alert.get("agent"), alert.get("action")
    if agent is None and action is None:
        return "the fleet"
    return " · ".join(str(p) for p in (agent, action) if p is not None)


@dataclass(frozen=True, slots=True)
class FleetRow:
    """One agent as the fleet page shows it, with what makes it a problem."""

    profile: AgentProfile
    level: int | None
    demotion: Mapping[str, Any] | None
    halts: tuple[Halt, ...]
    action_halts: tuple[Halt, ...]
    figures: Figures | None
    rates: tuple[Rate, ...]
    spark: Markup
    circuits: tuple[Mapping[str, Any], ...]
    drift_field: str | None
    drift_psi: float | None
    alerts: tuple[Mapping[str, Any], ...]
    proposal: Mapping[str, Any] | None

    @property
    def id(self) -> str:
        """The agent's id."""
        return self.profile.id

    @property
    def halted(self) -> bool:
        """Whether a halt stops everything the agent asks."""
        return bool(self.halts)

    @property
    def open_circuits(self) -> tuple[Mapping[str, Any], ...]:
        """The circuits over its actions that are not closed."""
        return tuple(c for c in self.circuits if c["status"] != "closed")

    @property
    def demoted(self) -> bool:
        """Whether its level in force is below the level its profile gives it."""
        return self.level is not None and self.level < self.profile.autonomy

    @property
    def drift_tone(self) -> str | None:
        """`bad` at a PSI of 0.25 and more, `warn` from 0.1, else None."""
        if self.drift_psi is None:
            return None
        if self.drift_psi >= DRIFT:
            return "bad"
        return "warn" if self.drift_psi >= DRIFT_WATCH else None

    @property
    def alert_severity(self) -> str | None:
        """The gravest severity among its alerts firing."""
        if not self.alerts:
            return None
        return min(
            (str(a.get("severity", "")) for a in self.alerts),
            key=lambda s: _SEVERITY_ORDER.get(s, 9),
        )

    @property
    def decisions(self) -> int:
        """Decisions in the fleet page's window."""
        return self.figures.decisions if self.figures is not None else 0

    def order(self) -> tuple[bool, bool, bool, bool, str]:
        """Problems first (halted, alerts, open breakers, demoted), then by id."""
        return (
            not self.halted,
            not self.alerts,
            not self.open_circuits,
            not (self.demoted or self.demotion is not None),
            self.id,
        )


@dataclass(frozen=True, slots=True)
class FleetPage:
    """Every agent, the alerts firing and the controller's open proposals."""

    rows: tuple[FleetRow, ...]
    alerts: tuple[Mapping[str, Any], ...]
    proposals: tuple[Mapping[str, Any], ...]
    halts: tuple[Halt, ...]
    fleet: Figures | None
    window_seconds: int


def _halts_of(
    halts: Iterable[Halt], profile: AgentProfile, actions: Sequence[str]
) -> tuple[tuple[Halt, ...], tuple[Halt, ...]]:
    """The halts stopping the agent outright, and those stopping some of its actions."""
    whole, partial = [], []
    for halt in halts:
        if halt.scope == "action":
            if halt.target in actions:
                partial.append(halt)
        elif halt.applies_to(profile.id, "", profile.role):
            whole.append(halt)
    return tuple(whole), tuple(partial)


def circuits_of(
    charter: Charter, circuits: Iterable[Mapping[str, Any]], profile: AgentProfile
) -> tuple[Mapping[str, Any], ...]:
    """The circuits over what `profile`'s agent does: its own, and shared ones it feeds.

    `circuits` are `Charter.circuits()` as JSON.
    """
    bundle = charter.bundle
    out = []
    for circuit in circuits:
        if circuit["agent"] is not None:
            if circuit["agent"] == profile.id:
                out.append(circuit)
            continue
        plan = bundle.plan_for(profile.id, profile.role, str(circuit["action"]))
        if plan is not None and any(b.id == circuit["breaker"] for b in plan.breakers):
            out.append(circuit)
    return tuple(out)


def _actions(charter: Charter, profile: AgentProfile) -> tuple[str, ...]:
    return tuple(charter.bundle.roles.get(profile.role, ()))


def _window(charter: Charter, seconds: int) -> int:
    """`seconds`, or less if the monitors keep less history than that."""
    return max(1, min(seconds, charter.bundle.monitors.horizon_seconds))


def _worst_drift(figures: Figures | None) -> tuple[str | None, float | None]:
    if figures is None:
        return None, None
    psi = figures.max_psi()
    if not psi:
        return None, None
    name = max(sorted(psi), key=lambda k: psi[k])
    return name, psi[name]


def _spark(charter: Charter, agent: str) -> Markup:
    config = charter.bundle.monitors
    bucket = config.bucket_seconds
    horizon = config.buckets(config.horizon_seconds) * bucket
    step = max(bucket, min(_SPARK_STEP, horizon) // bucket * bucket)
    points = max(1, min(_SPARK_POINTS, horizon // step))
    series = charter.monitors.series(agent, points=points, step_seconds=step)
    values = [p.success_rate for p in series.points]
    known = [v for v in values if v is not None]
    hours = points * step // 3600
    if known:
        label = (
            f"success rate per hour over the last {hours} h: latest {format_percent(known[-1])}, "
            f"lowest {format_percent(min(known))}"
        )
    else:
        label = f"success rate per hour over the last {hours} h: no outcomes"
    return sparkline(values, label)


def _row(
    charter: Charter,
    profile: AgentProfile,
    figures: Figures | None,
    halts: Sequence[Halt],
    circuits: Sequence[Mapping[str, Any]],
    alerts: Sequence[Mapping[str, Any]],
    proposals: Mapping[str, Mapping[str, Any]],
) -> FleetRow:
    whole, partial = _halts_of(halts, profile, _actions(charter, profile))
    drift_field, drift_psi = _worst_drift(figures)
    return FleetRow(
        profile=profile,
        level=charter.autonomy(profile.id),
        demotion=charter.monitors.demotion(profile.id),
        halts=whole,
        action_halts=partial,
        figures=figures,
        rates=tuple(_rate(figures, name, label) for name, label in _ROW_RATES),
        spark=_spark(charter, profile.id),
        circuits=circuits_of(charter, circuits, profile),
        drift_field=drift_field,
        drift_psi=drift_psi,
        alerts=tuple(a for a in alerts if a.get("agent") == profile.id),
        proposal=proposals.get(profile.id),
    )


def _alert_order(alert: Mapping[str, Any]) -> tuple[int, str, str]:
    return (
        _SEVERITY_ORDER.get(str(alert.get("severity")), 9),
        str(alert.get("alert")),
        where(alert),
    )


def fleet_page(charter: Charter) -> FleetPage:
    """The fleet as it stands: one row per agent, problems first."""
    monitors = charter.monitors
    monitors.catch_up()  # what was recorded a moment ago (here or elsewhere) shows
    window = _window(charter, HOUR)
    by_agent = {f.agent: f for f in monitors.figures(level="agent", window=window)}
    (fleet,) = monitors.figures(level="fleet", window=window)
    halts = charter.halts
    circuits = [c.to_json() for c in charter.circuits()]
    alerts = sorted(monitors.alerts(), key=_alert_order)
    proposals = {str(p["agent"]): p for p in monitors.proposals()}
    rows = [
        _row(charter, p, by_agent.get(p.id), halts, circuits, alerts, proposals)
        for p in charter.agents()
    ]
    rows.sort(key=FleetRow.order)
    return FleetPage(
        rows=tuple(rows),
        alerts=tuple(alerts),
        proposals=tuple(proposals[a] for a in sorted(proposals)),
        halts=tuple(halts),
        fleet=fleet,
        window_seconds=window,
    )


@dataclass(frozen=True, slots=True)
class FigureRow:
    """One line of a figures table: the group's name and its figures as cells."""

    name: str
    decisions: int
    outcomes: int
    cells: tuple[Rate, ...]
    drift_field: str | None
    drift_psi: float | None


def _figure_row(name: str, figures: Figures) -> FigureRow:
    field, psi = _worst_drift(figures)
    return FigureRow(
        name=name,
        decisions=figures.decisions,
        outcomes=figures.outcomes,
        cells=tuple(_rate(figures, n, label, kind) for n, label, kind in _TABLE_FIGURES),
        drift_field=field,
        drift_psi=psi,
    )


@dataclass(frozen=True, slots=True)
class AgentPage:
    """One agent: who it is, where it stands, and its figures over time."""

    row: FleetRow
    hours: int
    step_seconds: int
    charts: tuple[Chart, ...]
    by_action: tuple[FigureRow, ...]
    by_model: tuple[FigureRow, ...]
    figures: Figures | None
    window_seconds: int


def _step(charter: Charter, hours: int) -> tuple[int, int]:
    """The step (whole buckets) and the number of points covering `hours`."""
    config = charter.bundle.monitors
    bucket = config.bucket_seconds
    horizon = config.buckets(config.horizon_seconds) * bucket
    seconds = min(hours * 3600, horizon)  # no further back than the monitors keep
    step = max(bucket, -(-seconds // _CHART_POINTS))
    step = -(-step // bucket) * bucket
    points = max(1, min(seconds // step, horizon // step))
    return step, points


def _charts(series: Series, hours: int) -> tuple[Chart, ...]:
    points = series.points
    times = [p.end for p in points]
    span = f"the last {hours} h"
    fields = sorted({name for p in points for name in p.max_psi})
    drift_lines = [Line(name, [p.max_psi.get(name) for p in points]) for name in fields]
    return (
        line_chart(
            "escalation",
            "Escalation rate",
            times,
            [Line("escalated", [p.escalation_rate for p in points])],
            fmt=format_percent,
            y_max=1.0,
            span=span,
        ),
        line_chart(
            "latency",
            "Reviewer latency (median)",
            times,
            [Line("p50", [p.reviewer_latency_p50_seconds for p in points])],
            fmt=format_seconds,
            y_floor=60.0,
            span=span,
        ),
        line_chart(
            "success",
            "Success rate",
            times,
            [Line("succeeded", [p.success_rate for p in points])],
            fmt=format_percent,
            y_max=1.0,
            span=span,
        ),
        line_chart(
            "calibration",
            "Calibration error (ECE)",
            times,
            [Line("ECE", [p.expected_calibration_error for p in points])],
            fmt=format_number,
            y_floor=0.2,
            span=span,
        ),
        line_chart(
            "drift",
            "Input drift (PSI per watched field)",
            times,
            drift_lines,
            fmt=format_number,
            y_floor=0.5,
            y_cap=1.0,
            thresholds=(
                Threshold(DRIFT, "0.25 drifted", "bad"),
                Threshold(DRIFT_WATCH, "0.1", "warn"),
            ),
            span=span,
            wide=True,
        ),
    )


def agent_page(charter: Charter, agent_id: str, hours: int) -> AgentPage | None:
    """The agent page of `agent_id` over the last `hours`; None for an unknown agent."""
    profile = charter.get_agent(agent_id)
    if profile is None:
        return None
    monitors = charter.monitors
    monitors.catch_up()
    window = _window(charter, HOUR)
    found = monitors.figures(agent=agent_id, level="agent", window=window)
    figures = found[0] if found else None
    halts = charter.halts
    alerts = sorted(monitors.alerts(), key=_alert_order)
    proposals = {str(p["agent"]): p for p in monitors.proposals()}
    circuits = [c.to_json() for c in charter.circuits()]
    row = _row(charter, profile, figures, halts, circuits, alerts, proposals)
    step, points = _step(charter, hours)
    series = monitors.series(agent_id, points=points, step_seconds=step)
    by_action = tuple(
        _figure_row(str(f.action), f)
        for f in monitors.figures(agent=agent_id, level="action", window=window)
    )
    by_model = tuple(
        _figure_row(f"{f.action} · {f.model_id or '?'} {f.model_version or ''}".strip(), f)
        for f in monitors.figures(agent=agent_id, level="model", window=window)
    )
    return AgentPage(
        row=row,
        hours=hours,
        step_seconds=step,
        charts=_charts(series, hours),
        by_action=by_action,
        by_model=by_model,
        figures=figures,
        window_seconds=window,
    )


def hours_of(text: str | None) -> int:
    """The `?hours=` of the agent page: a whole number from 1 to 24, else the default."""
    try:
        value = int(text or DEFAULT_HOURS)
    except ValueError:
        return DEFAULT_HOURS
    return min(max(value, 1), 24)


_MARKDOWN = MarkdownIt("commonmark", {"html": False})


def render_runbook(text: str) -> Markup:
    """A runbook's Markdown as HTML: raw HTML in it is escaped, unsafe links dropped."""
    return Markup(_MARKDOWN.render(text))  # noqa: S704 - markdown-it escapes with html off


def runbook_title(path: str, text: str) -> str:
    """The runbook's first heading, else its file name."""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            return stripped.lstrip("#").strip() or path
    return path.rsplit("/", 1)[-1]


def show_figure(value: object, figure: object) -> str:
    """A figure's value as its kind reads: a rate as `42%`, seconds as `3m 20s`, else `0.31`."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "—"
    name = str(figure)
    if name.endswith("_rate"):
        return format_percent(value)
    if name.endswith("_seconds"):
        return format_seconds(value)
    return format_number(value)
