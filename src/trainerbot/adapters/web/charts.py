"""Charts drawn as inline SVG: sharp at any size, no image to fetch, and text a screen reader can read."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from markupsafe import Markup, escape

WIDTH = 640
BAR = 22  # height of one bar, with its gap


def _svg(height: int, title: str, body: str) -> Markup:
    return Markup(
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{escape(title)}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>{body}</svg>'
    )


def bars(labels: Sequence[str], values: Sequence[int], *, title: str) -> Markup | None:
    """Horizontal bars, one a label (cut to fit), longest first as given."""
    if not values:
        return None
    top = max(max(values), 1)
    label_width, space = 260, WIDTH - 260 - 50
    rows = []
    for index, (label, value) in enumerate(zip(labels, values, strict=True)):
        y = index * BAR + 4
        shown = label if len(label) <= 38 else label[:37] + "…"
        width = max(2, round(space * value / top))
        rows.append(
            f'<text x="{label_width - 8}" y="{y + 14}" text-anchor="end">{escape(shown)}</text>'
            f'<rect x="{label_width}" y="{y}" width="{width}" height="{BAR - 6}" rx="3" class="bar"/>'
            f'<text x="{label_width + width + 6}" y="{y + 14}">{value}</text>'
        )
    return _svg(len(values) * BAR + 8, title, "".join(rows))


def _line(points: list[tuple[float, float]]) -> str:
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in points)


def over_time(
    names: Sequence[str], series: Sequence[tuple[str, str, Sequence[float | None]]], *, title: str
) -> Markup | None:
    """Lines of values from 0 to 1 (shown as %), one point per name along the x axis; gaps where None."""
    if not names:
        return None
    height, left, right, top, bottom = 220, 44, 16, 12, 36
    inner_w, inner_h = WIDTH - left - right, height - top - bottom

    def x(index: int) -> float:
        return left + (inner_w * index / (len(names) - 1) if len(names) > 1 else inner_w / 2)

    def y(value: float) -> float:
        return top + inner_h * (1 - value)

    parts = []
    for tick in (0, 0.25, 0.5, 0.75, 1):
        parts.append(
            f'<line x1="{left}" x2="{WIDTH - right}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" class="grid"/>'
            f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{tick:.0%}</text>'
        )
    step = max(1, len(names) // 10)
    for index in range(0, len(names), step):
        parts.append(f'<text x="{x(index):.1f}" y="{height - 14}" text-anchor="middle">{escape(names[index])}</text>')
    for legend, (label, css, values) in enumerate(series):
        points = [(x(i), y(v)) for i, v in enumerate(values) if v is not None]
        if len(points) > 1:
            parts.append(f'<polyline points="{_line(points)}" class="{css}" fill="none"/>')
        parts.extend(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="4" class="{css}"/>' for px, py in points)
        parts.append(
            f'<circle cx="{left + 10 + legend * 170}" cy="{height - 4}" r="4" class="{css}"/>'
            f'<text x="{left + 18 + legend * 170}" y="{height}">{escape(label)}</text>'
        )
    return _svg(height + 4, title, "".join(parts))


def versions(versions: Sequence[Any]) -> Markup | None:
    """Held-out accuracy and the chosen confidence threshold of each model version, oldest first."""
    return over_time(
        [f"v{v.id}" for v in versions],
        [
            ("held-out accuracy", "series-a", [v.holdout_accuracy for v in versions]),
            ("confidence threshold", "series-b", [v.report.get("threshold") for v in versions]),
        ],
        title="Model versions: held-out accuracy and confidence threshold",
    )


def runs(runs: Sequence[dict[str, Any]]) -> Markup | None:
    """The share of cases passed in each test run, oldest first."""
    return over_time(
        [f"#{run['id']}" for run in runs],
        [("passed", "series-a", [run["accuracy"] for run in runs])],
        title="Test runs: share of cases passed",
    )
