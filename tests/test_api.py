"""appsight.Flows, the library: the same flows, features and answers as the commands."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from appsight import Flows
from appsight.cli import main
from appsight.errors import AppsightError, UsageError
from appsight.features import FEATURE_SETS

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "examples" / "sample.pcap"
DEVICE = "10.77.0.2"


def command_json(capsys: pytest.CaptureFixture[str], *argv: str) -> list[dict[str, object]]:
    capsys.readouterr()
    assert main(list(argv)) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model trained by `appsight train` on labels written from Flows itself (TCP flows
    are "web", the others "other")."""
    folder = tmp_path_factory.mktemp("api-model")
    labels = folder / "labels.csv"
    with labels.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["capture", "proto", "src", "sport", "dst", "dport", "label"])
        for flow in Flows(SAMPLE):
            writer.writerow([flow["capture"], flow["proto"], flow["src"], flow["sport"],
                             flow["dst"], flow["dport"],
                             "web" if flow["proto"] == "tcp" else "other"])
    model = folder / "api.model"
    assert main(["train", "--labels", str(labels), "--trees", "10", "-o", str(model),
                 str(SAMPLE)]) == 0
    return model


def test_records_are_those_of_flows_json(capsys: pytest.CaptureFixture[str]) -> None:
    expected = command_json(capsys, "flows", "--json", "--device", DEVICE, str(SAMPLE))
    assert len(expected) > 10
    assert list(Flows(SAMPLE, device=DEVICE)) == expected
    # Another burst gap gives other flows, as --burst-gap does.
    by_half = command_json(capsys, "flows", "--json", "--burst-gap", "0.5", str(SAMPLE))
    assert list(Flows(str(SAMPLE), burst_gap=0.5)) == by_half


def test_features_are_those_of_the_features_command(tmp_path: Path) -> None:
    table = tmp_path / "features.csv"
    assert main(["features", "--features", "seed14", str(SAMPLE), "-o", str(table)]) == 0
    with table.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    flows = list(Flows([SAMPLE], features="seed14"))
    assert len(flows) == len(rows)
    for flow, row in zip(flows, rows, strict=True):
        for column in FEATURE_SETS["seed14"].columns:
            assert flow[column] == pytest.approx(float(row[column]), rel=1e-6, abs=1e-9)


def test_answers_are_those_of_classify(model_file: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    expected = command_json(capsys, "classify", "--json", "-m", str(model_file), str(SAMPLE))
    got = list(Flows(SAMPLE, model=model_file))
    assert got == expected
    assert {flow["app"] for flow in got} <= {"web", "other", "unknown"}
    strict = list(Flows(SAMPLE, model=model_file, threshold=1.0))
    assert all(f["app"] == "unknown" or f["confidence"] >= 1.0 for f in strict)


def test_to_pandas_has_a_column_per_key(model_file: Path) -> None:
    flows = Flows(SAMPLE, model=model_file, features="payload38")
    table = flows.to_pandas()
    assert list(table.columns) == flows.columns
    assert len(table) == len(list(flows))
    assert {"app", "confidence", "byte_ratio"} <= set(table.columns)
    assert flows.summaries and flows.summaries[0].packets > 0


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"source": "/no/such.pcap"}, "no such file"),
    ({"source": "-"}, "not standard input"),
    ({"source": str(SAMPLE), "features": "nosuchset"}, "unknown feature set"),
    ({"source": str(SAMPLE), "burst_gap": -1}, "burst-gap"),
    ({"source": str(SAMPLE), "model": "/no/such.model"}, "no such model"),
])
def test_bad_input_is_an_appsight_error(kwargs: dict[str, object], message: str) -> None:
    source = kwargs.pop("source")
    with pytest.raises(AppsightError, match=message):
        Flows(source, **kwargs)  # type: ignore[arg-type]


def test_a_model_fixes_the_feature_set(model_file: Path) -> None:
    with pytest.raises(UsageError, match="computes payload38"):
        Flows(SAMPLE, model=model_file, features="seed14")
