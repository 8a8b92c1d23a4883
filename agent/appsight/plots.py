"""Pictures of an evaluation: the confusion matrix and the accuracy-versus-coverage curve.

Figures are drawn on matplotlib's Agg canvas directly (no ``pyplot``): no display is needed on
a gateway or in CI, and no global backend state is changed for a program that imports us.
matplotlib is the ``plots`` extra: a gateway that only classifies does without it.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .classifier import UNKNOWN
from .errors import UsageError
from .evaluation import CHECKPOINTS


def require_matplotlib() -> None:
    """Refuse, before any work is done, to evaluate where the figures cannot be drawn."""
    if importlib.util.find_spec("matplotlib") is None:
        raise UsageError("evaluate draws its figures with matplotlib, which is not installed: "
                         "pip install 'appsight[plots]'")


@dataclass
class Curve:
    """One accuracy-versus-coverage curve (values in %), as :func:`coverage_curve` gives it."""

    name: str
    threshold: Sequence[float]
    coverage: Sequence[float]
    accuracy: Sequence[float]
    chosen: tuple[float, float] | None = None  # (coverage, accuracy) at the chosen threshold


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Any, path: str | Path, dpi: int) -> None:
    try:
        figure.savefig(path, dpi=dpi)
    except OSError as exc:
        raise UsageError(f"{path}: cannot write the plot: {exc.strerror}") from None


def confusion_png(path: str | Path, matrix: dict[str, Any], title: str = "") -> None:
    """The confusion matrix as a heat map, each row normalised to the true app's flows.

    Normalising per true app lets a rare app's errors show as clearly as a common one's; the
    row labels carry the flow counts so the reader still sees how much each row weighs.
    The size grows with the number of apps so that ~40 apps keep legible labels.
    """
    rows: list[str] = list(matrix["rows"])
    columns: list[str] = list(matrix["columns"])
    counts = np.asarray(matrix["counts"], dtype=float).reshape(len(rows), len(columns))
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    n = max(len(rows), len(columns))
    cell = 0.24 if n > 25 else 0.34
    font = 6.5 if n > 30 else 7.5 if n > 15 else 9
    figure = _figure(max(5.5, 2.8 + cell * len(columns)), max(4.5, 2.4 + cell * len(rows)))
    axes = figure.add_subplot()
    image = axes.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto",
                        interpolation="nearest")
    axes.set_xticks(range(len(columns)), columns, rotation=90, fontsize=font)
    axes.set_yticks(range(len(rows)),
                    [f"{app} ({int(t)})" for app, t in zip(rows, totals[:, 0], strict=True)],
                    fontsize=font)
    axes.set_xlabel("answer", fontsize=font + 1)
    axes.set_ylabel("true app (flows)", fontsize=font + 1)
    axes.tick_params(length=2)
    if UNKNOWN in columns:  # keep "no answer" visibly apart from the apps
        axes.axvline(columns.index(UNKNOWN) - 0.5, color="0.4", linewidth=0.8)
    for i, app in enumerate(rows):  # outline the diagonal: where right answers land
        if app in columns:
            axes.add_patch(_square(columns.index(app), i))
    annotate = 5.0 if n > 30 else 6.5 if n > 15 else 8.0
    for i in range(len(rows)):
        for j in range(len(columns)):
            if share[i, j] >= 0.1:
                axes.text(j, i, f"{100 * share[i, j]:.0f}", ha="center", va="center",
                          fontsize=annotate, color="white" if share[i, j] > 0.6 else "black")
    colorbar = figure.colorbar(image, ax=axes, shrink=0.6, pad=0.01)
    colorbar.set_label("share of the true app's flows", fontsize=font)
    colorbar.ax.tick_params(labelsize=font)
    if title:
        # The title is centred over the matrix, which leaves the colour bar about a third.
        width = figure.get_figwidth() * 0.65
        axes.set_title(_wrap(title, width, font + 2), fontsize=font + 2)
    _save(figure, path, dpi=130)


def _wrap(text: str, width_inches: float, points: float) -> str:
    """Break a title into lines that fit the figure (about 0.55 em per character)."""
    import textwrap

    return textwrap.fill(text, max(20, int(width_inches * 72 / (0.55 * points))))


def _square(x: int, y: int) -> Any:
    from matplotlib.patches import Rectangle

    return Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, edgecolor="0.25", linewidth=0.5)


def coverage_png(path: str | Path, curves: Sequence[Curve], title: str = "",
                 marks: Sequence[float] = CHECKPOINTS) -> None:
    """Accuracy over the flows answered versus the share answered, one line per curve.

    Every threshold from 0 to 1 is a point; AppScanner's thresholds (0.5, 0.7, 0.9) are
    marked and labelled, and so is the chosen threshold when known, so the trade-off a
    threshold buys is read off directly rather than from a single number.
    """
    figure = _figure(7.0, 5.0)
    axes = figure.add_subplot()
    shapes = ("o", "s", "^", "D", "v", "P")  # one shape per marked threshold
    lowest = 100.0
    for curve in curves:
        coverage = np.asarray(curve.coverage, dtype=float)
        accuracy = np.asarray(curve.accuracy, dtype=float)
        defined = ~np.isnan(accuracy)
        if defined.any():
            lowest = min(lowest, float(np.nanmin(accuracy)))
        (line,) = axes.plot(coverage[defined], accuracy[defined], linewidth=1.6,
                            label=curve.name)
        thresholds = np.asarray(curve.threshold, dtype=float)
        for k, mark in enumerate(marks):
            i = int(np.argmin(np.abs(thresholds - mark)))
            if math.isnan(accuracy[i]):
                continue
            axes.plot(coverage[i], accuracy[i], shapes[k % len(shapes)],
                      color=line.get_color(), markersize=6, markeredgecolor="black",
                      markeredgewidth=0.5)
            if len(curves) == 1:  # with several curves, the legend's shapes say which is which
                axes.annotate(f"{mark:g}", (coverage[i], accuracy[i]),
                              textcoords="offset points", xytext=(5, -11), fontsize=7,
                              color=line.get_color())
        if curve.chosen is not None and not any(math.isnan(v) for v in curve.chosen):
            axes.plot(*curve.chosen, "*", color=line.get_color(), markersize=12,
                      markeredgecolor="black", markeredgewidth=0.6)
    for k, mark in enumerate(marks):
        axes.plot([], [], shapes[k % len(shapes)], color="white", markeredgecolor="black",
                  label=f"threshold {mark:g}")
    if any(c.chosen is not None for c in curves):
        axes.plot([], [], "*", color="white", markeredgecolor="black", markersize=10,
                  label="chosen threshold")
    axes.set_xlim(0, 101)
    axes.set_ylim(max(0.0, math.floor(lowest / 10) * 10 - 5), 101)
    axes.set_xlabel("flows classified (%)  -  a higher threshold moves left")
    axes.set_ylabel("accuracy over the flows classified (%)")
    axes.grid(True, linewidth=0.4, alpha=0.6)
    axes.legend(fontsize=8, loc="best", ncols=2 if len(curves) > 3 else 1)
    axes.set_title(_wrap(title or "Accuracy versus coverage over thresholds 0 to 1", 7.0, 10),
                   fontsize=10)
    _save(figure, path, dpi=130)
