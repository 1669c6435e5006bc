"""The status page's bar chart: deliveries and failures per hour, as inline SVG geometry."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from payhook.ops.health_reports import HourlyActivity

__all__ = ["Bar", "Chart", "hourly_chart"]

LEGEND = {"deliveries": "events stored", "failures": "failed attempts"}


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    kind: str  # "deliveries" or "failures": the CSS class that colours it
    title: str  # the hover text browsers show without any script


@dataclass(frozen=True)
class Label:
    x: float
    text: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    plot_height: int
    bars: tuple[Bar, ...]
    labels: tuple[Label, ...]
    peak: int
    deliveries: int
    failures: int


def hourly_chart(hours: Sequence[HourlyActivity], width: int = 720, height: int = 140) -> Chart:
    """Two bars per hour, side by side, scaled to the busiest hour; an hour label every six."""
    plot_height = height - 20  # room for the hour labels below
    slot = width / max(len(hours), 1)
    bar_width = max(slot / 2 - 1, 1.0)
    peak = max([1, *(h.deliveries for h in hours), *(h.failures for h in hours)])
    bars: list[Bar] = []
    labels: list[Label] = []
    for index, hour in enumerate(hours):
        left = index * slot
        stamp = hour.start.strftime("%H:00")
        for offset, kind, count in (
            (0.0, "deliveries", hour.deliveries),
            (bar_width, "failures", hour.failures),
        ):
            bar_height = plot_height * count / peak
            bars.append(
                Bar(
                    x=round(left + offset, 1),
                    y=round(plot_height - bar_height, 1),
                    width=round(bar_width, 1),
                    height=round(bar_height, 1),
                    kind=kind,
                    title=f"{stamp} UTC: {count} {LEGEND[kind]}",
                )
            )
        if index % 6 == 0:
            labels.append(Label(x=round(left, 1), text=stamp))
    return Chart(
        width=width,
        height=height,
        plot_height=plot_height,
        bars=tuple(bars),
        labels=tuple(labels),
        peak=peak,
        deliveries=sum(h.deliveries for h in hours),
        failures=sum(h.failures for h in hours),
    )
