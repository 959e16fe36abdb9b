"""Bar charts for the console, drawn by the server as SVG: no chart library, no script.

A bar's length is its share of the chart's largest value, so a glance compares them; the
figure itself is always printed beside it."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    shown: str  # the figure as printed beside the bar
    length: float  # 0 to 100: a share of the chart's widest bar
    tone: str  # "good", "bad", "warn" or "plain": the bar's colour


def bars(
    rows: Iterable[tuple[str, float, str]], shown: Callable[[float], str] = lambda v: f"{v:g}"
) -> list[Bar]:
    """(label, value, tone) rows as bars scaled to the largest value (all zero: no length)."""
    rows = list(rows)
    widest = max((abs(value) for _, value, _ in rows), default=0)
    return [
        Bar(
            label=label,
            value=value,
            shown=shown(value),
            length=round(100 * abs(value) / widest, 1) if widest else 0.0,
            tone=tone,
        )
        for label, value, tone in rows
    ]


def seconds(value: float | None) -> str:
    """A lag or a wait as a person reads it: 850 ms, 12.5 s, 3 min, 2.0 h."""
    if value is None:
        return "n/a"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.0f} min"
    return f"{value / 3600:.1f} h"
