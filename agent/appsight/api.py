"""appsight as a library: the flows of captures as Python records or a pandas DataFrame.

::

    from appsight import Flows

    for flow in Flows("examples/sample.pcap", device="10.77.0.2"):
        print(flow["src"], flow["dst"], flow["bytes_fwd"])

    table = Flows("captures/", model="model.skops").to_pandas()   # with app and confidence

A record has the keys of ``appsight flows --json``; ``features=SET`` adds that feature set's
columns (as ``appsight features`` writes them), and ``model=`` adds ``app`` and
``confidence`` as ``appsight classify --json`` does. The pipeline settings follow the
commands' rule (:func:`pipeline_options`): what is given, else what the model was trained
with, else the defaults. Bad input raises :class:`~appsight.errors.AppsightError` with the
same one-line message the commands print.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

from .addresses import NetworkMatcher
from .bursts import DEFAULT_BURST_GAP, parse_burst_gap
from .errors import UsageError
from .features import FeatureSet, get_feature_set
from .inputs import expand_captures
from .model import AppModel, load_model
from .pipeline import CaptureSummary, PipelineOptions, iter_flow_blocks
from .report import flow_records
from .tables import ID_COLUMNS

Source = str | os.PathLike[str]


def pipeline_options(burst_gap: str | float | None = None,
                     device: str | Sequence[str] | None = None, decapsulate: bool = True,
                     model: AppModel | None = None) -> PipelineOptions:
    """The pipeline settings of a run: those given, else the model's, else the defaults.

    ``burst_gap`` is seconds or the command line's text (``"none"``: one burst per capture);
    ``None`` means not given. A model keeps the burst gap, decapsulation and devices it was
    trained with; ``device`` is one address or network, or several. The devices decide which
    direction of a flow is "forward", so its features: a model is used with its own, and a
    conflicting ``device`` is refused (models from before devices were stored take any).
    """
    if burst_gap is not None:
        gap = parse_burst_gap(str(burst_gap))
    elif model is not None:
        gap = model.burst_gap
    else:
        gap = DEFAULT_BURST_GAP
    if model is not None:
        decapsulate = decapsulate and model.metadata.get("decapsulate", True)
    devices = [device] if isinstance(device, str) else list(device or [])
    matcher = NetworkMatcher.parse(devices) if devices else None
    trained = None if model is None else model.metadata.get("device")
    if isinstance(trained, list):
        if matcher is None and trained:
            matcher = NetworkMatcher.parse([str(d) for d in trained])
        elif matcher is not None and sorted(matcher.specs) != sorted(map(str, trained)):
            fix = (f"was trained with --device {' '.join(map(str, trained))}: give the same, "
                   "or none to use the model's" if trained else
                   "was trained without --device: leave it out, or retrain with it")
            raise UsageError(
                f"--device {' '.join(matcher.specs)}: the model {fix} (the devices decide each "
                "flow's direction, so its features)")
    return PipelineOptions(burst_gap=gap, device=matcher, decapsulate=decapsulate)


class Flows:
    """The flows of capture files and folders, in capture order, burst by burst.

    Iterating reads the captures again each time; nothing is held in memory beyond one
    flow block. After a full pass, :attr:`summaries` holds what each capture's reader and
    decoder counted (packets, bursts, damaged records).
    """

    def __init__(self, source: Source | Sequence[Source], *, features: str | None = None,
                 model: Source | AppModel | None = None, burst_gap: str | float | None = None,
                 device: str | Sequence[str] | None = None, decapsulate: bool = True,
                 threshold: float | None = None) -> None:
        items = [source] if isinstance(source, str | os.PathLike) else list(source)
        if "-" in [str(item) for item in items]:
            raise UsageError("Flows reads capture files and folders, not standard input")
        self.captures = expand_captures([str(item) for item in items])
        self.model = (model if isinstance(model, AppModel) or model is None
                      else load_model(model))
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise UsageError(f"threshold must be between 0 and 1, not {threshold}")
        self.threshold = threshold
        self.feature_set: FeatureSet | None = get_feature_set(features) if features else None
        if self.model is not None and self.feature_set not in (None, self.model.feature_set):
            raise UsageError(f"the model computes {self.model.feature_set.tag} features, "
                             f"not {self.feature_set.tag}")  # type: ignore[union-attr]
        self.options = pipeline_options(burst_gap, device, decapsulate, self.model)
        self.summaries: list[CaptureSummary] = []

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self.summaries = []
        for capture in self.captures:
            for block in iter_flow_blocks(capture, self.options, self.summaries.append):
                records = list(flow_records(block))
                feature_set = self.model.feature_set if self.model else self.feature_set
                matrix = feature_set(block.flows) if feature_set is not None else None
                if self.feature_set is not None:
                    for record, row in zip(records, matrix.tolist(), strict=True):
                        record.update(zip(self.feature_set.columns, row, strict=True))
                if self.model is not None:
                    apps, confidence = self.model.predict(matrix, self.threshold)
                    for record, app, c in zip(records, apps, confidence.tolist(),
                                              strict=True):
                        record["app"], record["confidence"] = app, round(float(c), 4)
                yield from records

    @property
    def columns(self) -> list[str]:
        """The keys of every record, in order."""
        features = list(self.feature_set.columns) if self.feature_set is not None else []
        predicted = ["app", "confidence"] if self.model is not None else []
        return [*ID_COLUMNS, *features, *predicted]

    def to_pandas(self) -> Any:
        """All flows as a ``pandas.DataFrame``, one row per flow (needs pandas)."""
        try:
            import pandas as pd
        except ImportError:
            raise UsageError("to_pandas needs pandas, which is not installed: "
                             "pip install 'appsight[pandas]'") from None
        return pd.DataFrame.from_records(list(self), columns=self.columns)
