"""The results folder of ``appsight evaluate``: results.json (settings, measures, per-app
tables) beside the two plots a reader looks at first, the confusion matrix and the
accuracy-coverage curve."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import UsageError


def json_safe(value: object) -> object:
    """NaN (an undefined measure, e.g. accuracy with nothing classified) becomes null."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def make_results_folder(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{path}: cannot create the results folder: {exc.strerror}") from None
    return path


def write_plots(out_dir: Path, result: dict[str, Any], tag: str, title: str) -> dict[str, str]:
    """confusion.png and coverage.png of one summary; returns their paths by name."""
    from .plots import Curve, confusion_png, coverage_png

    files = {"confusion": str(out_dir / "confusion.png"),
             "coverage": str(out_dir / "coverage.png")}
    confusion_png(files["confusion"], result["confusion"],
                  f"Confusion matrix ({title}; row-normalised %)")
    chosen = (result["chosen"]["classified"], result["chosen"]["accuracy"])
    coverage_png(files["coverage"], [Curve(tag, **result["curve"], chosen=chosen)],
                 f"Accuracy versus coverage ({title})")
    return files


def write_results_json(out_dir: Path, document: dict[str, Any]) -> str:
    """Writes results.json; returns the document as one line of JSON, for --json."""
    text = json.dumps(json_safe(document), indent=1)
    try:
        (out_dir / "results.json").write_text(text + "\n", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{out_dir}: cannot write results.json: {exc.strerror}") from None
    return json.dumps(json_safe(document))
