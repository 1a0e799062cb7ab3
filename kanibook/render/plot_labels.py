"""Where the labels of a scatter plot's points go so that no two overlap (matplotlib, before drawing).

Used by the quantization lab's figure, whose settings often sit on top of each other (fp4 and fp4-dq, nf4 and
nf4-dq have nearly the same weights and quality).
"""

from __future__ import annotations

import math

__all__ = ["label_offsets"]

# where a point's label may go, in points from the point: right-above first, then further out
_OFFSETS = [(4, 4), (4, -11), (-6, 4), (-6, -11), (4, 15), (4, -22), (-6, 15), (-6, -22), (4, 26), (4, -33),
            (-6, 26), (-6, -33), (4, 37), (4, -44)]  # fmt: skip


def label_offsets(ax, points: list[tuple[str, float, float]], ax_w: float, ax_h: float) -> list[tuple[int, int]]:
    """One offset (in points) per ``(label, x, y)`` so that no two labels' boxes overlap (greedy, in reading order
    of the points). Data are mapped to points with the axes' limits and an approximate axes size, so this works
    before the figure is drawn; a label is about 4.8 points per character wide and 9 points high (fontsize 8).
    """
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    log_y = ax.get_yscale() == "log"

    def to_points(x: float, y: float) -> tuple[float, float]:
        fy = (math.log10(y) - math.log10(y0)) / (math.log10(y1) - math.log10(y0)) if log_y and y > 0 else (
            (y - y0) / ((y1 - y0) or 1.0))
        return (x - x0) / ((x1 - x0) or 1.0) * ax_w, fy * ax_h

    placed: list[tuple[float, float, float, float]] = []
    out = []
    for label, x, y in points:
        px, py = to_points(x, y)
        w, h = 4.8 * len(label) + 2, 9.0
        for dx, dy in _OFFSETS:
            left = px + dx if dx >= 0 else px + dx - w
            box = (left, py + dy, left + w, py + dy + h)
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed):
                break
        placed.append(box)
        out.append((dx if dx >= 0 else int(dx - w), dy))
    return out
