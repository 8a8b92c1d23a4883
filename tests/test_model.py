"""The model file: what is saved comes back identical, and nothing else is ever loaded.

The agent loads models as root on a gateway, so a model file is an attack surface as much as
a data format. These tests train a real (small) forest on the embedded sample capture, save
it, and then check three things:

* fidelity: a round trip, in this process or another one, gives the same forest, settings
  and predictions;
* refusal: damaged, truncated, foreign, too-new and tampered files end in one
  :class:`~appsight.model.ModelError` naming the problem, never in another exception, and
  a payload holding an untrusted type is refused *before* skops builds anything (a canary
  object proves that nothing of it ran);
* the command line turns all of this into one ``appsight: error:`` line and exit status 2.

What the container does *not* protect is documented here too: the SHA-256 in the header
covers only the payload, so an edited header value (the threshold, say) is caught only
by pinning the whole file's hash (``expect_sha256``).
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skops.io as sio
from appsight.classifier import UNKNOWN
from appsight.cli import main
from appsight.errors import AppsightError
from appsight.features import APPSCANNER54, FEATURE_SETS, SEED14, FeatureSet
from appsight.model import (
    MAGIC,
    TRUSTED_TYPES,
    AppModel,
    ModelError,
    file_sha256,
    header_digest,
    library_versions,
    load_model,
    read_header,
)
from appsight.pipeline import PipelineOptions, iter_flow_blocks
from appsight.report import flow_records
from appsight.training import Dataset, train_model

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "examples" / "sample.pcap"
PACKAGE = REPO / "agent" / "appsight"
OPTIONS = PipelineOptions()  # the default burst gap, as `appsight train` uses it


# --------------------------------------------------------------------------- helpers
def sample_label(record: dict[str, object]) -> str | None:
    """Labels for the sample capture: the phone's TLS flows are 'web', UDP/5000 'udp-app'."""
    ports = (record["sport"], record["dport"])
    if record["proto"] == "tcp" and 443 in ports:
        return "web"
    if record["proto"] == "udp" and 5000 in ports:
        return "udp-app"
    return None


def sample_features(feature_set: FeatureSet = APPSCANNER54) -> tuple[np.ndarray, list[str | None]]:
    """Features of every flow of the sample capture and its label (None: unlabelled)."""
    chunks, labels = [], []
    for block in iter_flow_blocks(SAMPLE, OPTIONS):
        chunks.append(feature_set(block.flows))
        labels.extend(sample_label(r) for r in flow_records(block))
    return np.vstack(chunks), labels


def train_sample(feature_set: FeatureSet = APPSCANNER54, trees: int = 20) -> AppModel:
    """A real forest on the sample capture's labelled flows (two classes)."""
    features, labels = sample_features(feature_set)
    keep = [i for i, label in enumerate(labels) if label is not None]
    dataset = Dataset(
        features=features[keep],
        labels=np.array([labels[i] for i in keep], dtype=object),
        captures=np.array(["sample.pcap"] * len(keep), dtype=object),
        feature_set=feature_set,
        unlabelled=len(labels) - len(keep),
    )
    return train_model(dataset, OPTIONS, trees=trees, seed=1)


def probe_rows(feature_set: FeatureSet = APPSCANNER54) -> np.ndarray:
    """The sample's flows plus scaled and random rows, so predictions cover more than training."""
    features, _ = sample_features(feature_set)
    rng = np.random.default_rng(7)
    noise = rng.uniform(0, 1500, size=(40, features.shape[1]))
    return np.vstack([features, features * 0.5, noise])


def split_file(data: bytes) -> tuple[dict[str, Any], bytes]:
    """(header, payload) of model file bytes, parsed without appsight's checks."""
    end = data.index(b"\n", len(MAGIC))
    return json.loads(data[len(MAGIC) : end]), data[end + 1 :]


def assemble(header: dict[str, Any], payload: bytes, rehash: bool = True) -> bytes:
    """Model file bytes; ``rehash`` makes size and SHA-256 match the payload (a forger would)."""
    header = dict(header)
    if rehash:
        header["payload_bytes"] = len(payload)
        header["sha256"] = header_digest(header, payload)
    return MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + payload


def refused(path: Path, *fragments: str) -> str:
    """Load ``path``, expect a ModelError whose one-line message has every fragment."""
    with pytest.raises(ModelError) as info:
        load_model(path)
    message = str(info.value)
    assert "\n" not in message, message
    assert str(path) in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


class Canary:
    """An object that leaves a file behind when it is built: proof that loading ran code.

    skops builds a plain object with ``cls.__new__`` and then ``__setstate__``; a real attack
    would put ``os.system`` where this writes a file.
    """

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __getstate__(self) -> dict[str, str]:
        return {"marker": self.marker}

    def __setstate__(self, state: dict[str, str]) -> None:
        Path(state["marker"]).write_text("the payload ran code\n")
        self.marker = state["marker"]


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def model() -> AppModel:
    return train_sample()


@pytest.fixture(scope="module")
def model_file(model: AppModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "sample.model"
    model.save(path)
    return path


@pytest.fixture
def good(model_file: Path) -> bytes:
    return model_file.read_bytes()


# --------------------------------------------------------------------------- round trip
def test_round_trip_gives_the_same_model(model: AppModel, model_file: Path) -> None:
    """Everything `classify` relies on comes back: forest, classes, settings, metadata."""
    loaded = load_model(model_file)
    assert loaded.classes == model.classes == ["udp-app", "web"]
    assert loaded.threshold == model.threshold
    assert 0.0 <= loaded.threshold <= 1.0
    assert loaded.burst_gap == model.burst_gap == OPTIONS.burst_gap
    assert loaded.feature_set is APPSCANNER54
    assert loaded.metadata["training"] == model.metadata["training"]
    assert loaded.metadata["training"]["flows_per_class"] == {"udp-app": 3, "web": 10}
    assert loaded.metadata["training"]["trees"] == 20
    assert loaded.metadata["decapsulate"] is True
    assert loaded.metadata["versions"] == library_versions()
    assert loaded.feature_set.columns == APPSCANNER54.columns
    assert not hasattr(loaded.forest, "oob_decision_function_")  # no training data inside

    rows = probe_rows()
    apps, confidence = model.predict(rows)
    loaded_apps, loaded_confidence = loaded.predict(rows)
    assert loaded_apps == apps
    assert np.array_equal(loaded_confidence, confidence)
    assert np.array_equal(loaded.forest.predict_proba(rows), model.forest.predict_proba(rows))
    assert set(apps) <= {*model.classes, UNKNOWN}
    assert {"web", "udp-app"} <= set(apps)  # the probe really exercises both classes


@pytest.mark.parametrize("feature_set", [SEED14, FEATURE_SETS["timing39"]], ids=lambda f: f.name)
def test_round_trip_other_feature_sets(feature_set: FeatureSet, tmp_path: Path) -> None:
    """The file names its feature set; loading hands back that set, not the default one."""
    model = train_sample(feature_set, trees=5)
    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert loaded.feature_set is feature_set
    rows = probe_rows(feature_set)
    assert np.array_equal(loaded.forest.predict_proba(rows), model.forest.predict_proba(rows))


def test_loaded_in_another_process_predicts_the_same(
    model: AppModel, model_file: Path, tmp_path: Path
) -> None:
    """No state of the training process leaks into the file: a fresh interpreter agrees."""
    rows = probe_rows()
    np.save(tmp_path / "rows.npy", rows, allow_pickle=False)
    script = (
        "import json, sys\n"
        "import numpy as np\n"
        "from appsight.model import load_model\n"
        "m = load_model(sys.argv[1])\n"
        "x = np.load(sys.argv[2], allow_pickle=False)\n"
        "apps, confidence = m.predict(x)\n"
        "print(json.dumps({'apps': apps, 'confidence': confidence.tolist(),\n"
        "                  'proba': m.forest.predict_proba(x).tolist(), 'classes': m.classes,\n"
        "                  'threshold': m.threshold, 'features': m.feature_set.tag}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(model_file), str(tmp_path / "rows.npy")],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    other = json.loads(done.stdout)
    apps, confidence = model.predict(rows)
    assert other["apps"] == apps
    assert other["confidence"] == confidence.tolist()
    assert other["proba"] == model.forest.predict_proba(rows).tolist()
    assert other["classes"] == model.classes
    assert other["threshold"] == model.threshold
    assert other["features"] == APPSCANNER54.tag


def test_save_replaces_atomically_and_reports_size(model: AppModel, tmp_path: Path) -> None:
    """save() returns the bytes written and leaves no temporary file behind."""
    path = tmp_path / "m.model"
    path.write_text("an older model")
    size = model.save(path)
    assert size == path.stat().st_size
    assert [p.name for p in tmp_path.iterdir()] == ["m.model"]
    header, payload = read_header(path)
    assert header["format"] == 1  # no checker: readable by appsight before format 2
    assert header["payload_bytes"] == len(payload)


def test_save_into_missing_folder_is_a_model_error(model: AppModel, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="cannot write the model"):
        model.save(tmp_path / "no" / "such" / "m.model")
    assert list(tmp_path.iterdir()) == []


def test_resaving_a_loaded_model_keeps_its_changes(model_file: Path, tmp_path: Path) -> None:
    """load -> change the threshold -> save -> load must give the new threshold."""
    loaded = load_model(model_file)
    loaded.threshold = 0.85 if loaded.threshold != 0.85 else 0.35
    loaded.save(tmp_path / "retuned.model")
    assert load_model(tmp_path / "retuned.model").threshold == loaded.threshold


# --------------------------------------------------------------------------- damage
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_flipped_payload_byte_is_refused(good: bytes, tmp_path: Path, where: str) -> None:
    _, payload = split_file(good)
    at = {"first": len(good) - len(payload), "middle": len(good) - len(payload) // 2,
          "last": len(good) - 1}[where]
    data = bytearray(good)
    data[at] ^= 0x01
    path = tmp_path / "flipped.model"
    path.write_bytes(bytes(data))
    refused(path, "SHA-256 mismatch")


# One byte of the header changed: (text before, text after, words the message must hold).
# The SHA-256 covers the header, so a changed byte is caught; structural damage (magic, JSON,
# format, size) is named before the hash is even checked.
HEADER_BYTE_EDITS = {
    "magic": (b"APPSIGHT-MODEL", b"APPSIGHT-MODEl", ("not an appsight model file",)),
    "json": (b'{"ambiguity"', b'["ambiguity"', ("bad header",)),
    "format": (b'"format": 1', b'"format": 7', ("format 7 is newer", "upgrade")),
    "sha": (b'"sha256": "', None, ("SHA-256 mismatch",)),
    "size": (b'"payload_bytes": ', None, ("damaged model file",)),
    "feature_set": (b'"appscanner54"', b'"appscanner55"', ("SHA-256 mismatch",)),
    "feature_set_version": (b'"feature_set_version": 1', b'"feature_set_version": 2',
                            ("SHA-256 mismatch",)),
    "feature_column": (b'"in_min"', b'"in_mIn"', ("SHA-256 mismatch",)),
    "class": (b'"web"', b'"wep"', ("SHA-256 mismatch",)),
}

# The same edits made by someone who also recomputes the hash: each is caught by its own check.
FORGED_HEADER_EDITS = {
    "feature_set": ("feature_set", "appscanner55", ("appscanner55/v1", "retrain")),
    "feature_set_version": ("feature_set_version", 2, ("appscanner54/v2", "retrain")),
    "class": ("classes", ["udp-app", "wep"], ("does not match its header",)),
    "device": ("device", "10.0.0.0/8", ("damaged model file (bad device)",)),
    "device item": ("device", [42], ("damaged model file (bad device)",)),
}


@pytest.mark.parametrize("case", HEADER_BYTE_EDITS)
def test_changed_header_byte_is_refused(good: bytes, tmp_path: Path, case: str) -> None:
    old, new, fragments = HEADER_BYTE_EDITS[case]
    header_end = good.index(b"\n", len(MAGIC))
    at = good.index(old)
    assert at < header_end
    data = bytearray(good)
    if new is None:  # change the first digit/hex character after the key
        k = at + len(old)
        data[k] = ord("7") if data[k] != ord("7") else ord("3")
    else:
        assert len(old) == len(new) and sum(a != b for a, b in zip(old, new, strict=True)) == 1
        data[at : at + len(old)] = new
    assert sum(a != b for a, b in zip(good, data, strict=True)) == 1
    path = tmp_path / f"{case}.model"
    path.write_bytes(bytes(data))
    refused(path, *fragments)


@pytest.mark.parametrize("case", FORGED_HEADER_EDITS)
def test_forged_header_edit_is_refused(good: bytes, tmp_path: Path, case: str) -> None:
    key, value, fragments = FORGED_HEADER_EDITS[case]
    header, payload = split_file(good)
    header[key] = value
    path = tmp_path / f"forged-{case}.model"
    path.write_bytes(assemble(header, payload))
    refused(path, *fragments)


def test_header_edit_is_refused_and_a_forgery_is_caught_by_pinning(
    good: bytes, tmp_path: Path
) -> None:
    """The SHA-256 covers the header too: an edited threshold is refused as a modification.

    The hash detects damage, not forgery: whoever recomputes it gets an edited model loaded,
    which is why deployments that must trust a model pin the whole file's hash.
    """
    header, payload = split_file(good)
    header["threshold"] = 0.99 if header["threshold"] != 0.99 else 0.01
    path = tmp_path / "edited.model"
    path.write_bytes(assemble(header, payload, rehash=False))
    refused(path, "modified")
    path.write_bytes(assemble(header, payload, rehash=True))
    assert load_model(path).threshold == header["threshold"]
    with pytest.raises(ModelError, match="not the expected"):
        load_model(path, expect_sha256=hashlib.sha256(good).hexdigest())


# Header values of the wrong type or range: the file is damaged, so the error must be a
# ModelError (one line, exit 2), not a ValueError/TypeError traceback or a silently odd model.
BAD_HEADER_VALUES = {
    "threshold-text": ("threshold", "high"),
    "threshold-null": ("threshold", None),
    "threshold-above-1": ("threshold", 7.5),
    "feature-columns-number": ("feature_columns", 5),
    "burst-gap-text": ("burst_gap", "1s"),
}


@pytest.mark.parametrize("case", BAD_HEADER_VALUES)
def test_header_values_of_the_wrong_type_are_model_errors(
    good: bytes, tmp_path: Path, case: str
) -> None:
    key, value = BAD_HEADER_VALUES[case]
    header, payload = split_file(good)
    header[key] = value
    path = tmp_path / f"{case}.model"
    path.write_bytes(assemble(header, payload))
    refused(path, "damaged")


def cut_points(data: bytes) -> dict[str, int]:
    """Where to truncate a model file: in the magic, the header, and the payload."""
    header_end = data.index(b"\n", len(MAGIC))
    return {
        "empty": 0,
        "in-magic": 5,
        "after-magic": len(MAGIC),
        "in-header": len(MAGIC) + 40,
        "before-header-newline": header_end,
        "no-payload": header_end + 1,
        "in-payload": header_end + 1 + (len(data) - header_end) // 2,
        "last-byte-missing": len(data) - 1,
    }


@pytest.mark.parametrize(
    "cut", ["empty", "in-magic", "after-magic", "in-header", "before-header-newline",
            "no-payload", "in-payload", "last-byte-missing"]
)
def test_truncated_file_is_refused(good: bytes, tmp_path: Path, cut: str) -> None:
    at = cut_points(good)[cut]
    path = tmp_path / "cut.model"
    path.write_bytes(good[:at])
    message = refused(path)
    if len(MAGIC) <= at <= good.index(b"\n", len(MAGIC)):
        assert "no header" in message
    elif at > len(MAGIC):
        assert "truncated" in message and f"of {len(split_file(good)[1])}" in message


def test_appended_bytes_are_refused(good: bytes, tmp_path: Path) -> None:
    path = tmp_path / "longer.model"
    path.write_bytes(good + b"\0")
    refused(path, "damaged")


# --------------------------------------------------------------------------- not a model
def test_text_empty_skops_folder_and_missing_are_not_models(
    model: AppModel, tmp_path: Path
) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("this is not a model\n")
    refused(text, "not an appsight model file")
    empty = tmp_path / "empty.model"
    empty.write_bytes(b"")
    refused(empty, "not an appsight model file")
    raw = tmp_path / "raw.skops"
    raw.write_bytes(sio.dumps(model.forest))  # the forest alone, without the checked header
    refused(raw, "not an appsight model file")
    refused(tmp_path, "cannot read the model")
    refused(tmp_path / "absent.model", "no such model file")


def test_format_99_is_refused_with_upgrade_hint(good: bytes, tmp_path: Path) -> None:
    header, payload = split_file(good)
    header["format"] = 99
    path = tmp_path / "future.model"
    path.write_bytes(assemble(header, payload))
    refused(path, "model format 99 is newer", "upgrade appsight")


def test_garbage_payload_with_matching_hash_is_refused(good: bytes, tmp_path: Path) -> None:
    """A correct hash proves nothing about the content: skops must not choke on garbage."""
    header, _ = split_file(good)
    for name, payload in (("garbage", os.urandom(4096)), ("empty-zip", _empty_zip())):
        path = tmp_path / f"{name}.model"
        path.write_bytes(assemble(header, payload))
        refused(path, "damaged model payload")


def _empty_zip() -> bytes:
    import io

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("schema.json", "{not json")
    return buffer.getvalue()


# --------------------------------------------------------------------------- untrusted types
def test_trusted_types_are_only_scikit_learn_and_numpy() -> None:
    """The extra trust list is short and names no callable that could run code."""
    assert TRUSTED_TYPES
    assert all(t.startswith(("sklearn.", "numpy.")) for t in TRUSTED_TYPES), TRUSTED_TYPES


def test_function_transformer_calling_os_system_is_refused(good: bytes, tmp_path: Path) -> None:
    """A pipeline whose function is ``os.system`` behind a perfectly valid header."""
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    payload = sio.dumps(Pipeline([("run", FunctionTransformer(func=os.system))]))
    untrusted = sio.get_untrusted_types(data=payload)
    assert any("system" in t for t in untrusted), untrusted
    header, _ = split_file(good)
    path = tmp_path / "pipeline.model"
    path.write_bytes(assemble(header, payload))
    message = refused(path, "not trusted")
    for name in set(untrusted) - set(TRUSTED_TYPES):
        assert name in message


def test_forest_with_injected_object_is_refused_before_anything_is_built(
    model: AppModel, good: bytes, tmp_path: Path
) -> None:
    """The real forest plus one foreign object: refused, naming it, and the object never ran."""
    import copy

    marker = tmp_path / "canary-ran"
    forest = copy.deepcopy(model.forest)
    forest.extra_ = Canary(str(marker))
    payload = sio.dumps(forest)
    untrusted = sio.get_untrusted_types(data=payload)
    canary_type = f"{Canary.__module__}.Canary"
    assert canary_type in untrusted
    header, _ = split_file(good)
    path = tmp_path / "injected.model"
    path.write_bytes(assemble(header, payload))
    message = refused(path, "not trusted", canary_type)
    assert "sklearn.tree._tree.Tree" not in message  # only the foreign type is named
    assert not marker.exists()

    # The canary is live: had the payload been loaded, it would have left its marker.
    sio.loads(payload, trusted=untrusted)
    assert marker.exists()


def test_foreign_but_trusted_estimator_is_refused(good: bytes, tmp_path: Path) -> None:
    """A trusted scikit-learn type that is not a forest does not pass as the model."""
    from sklearn.tree import DecisionTreeClassifier

    features, labels = sample_features()
    keep = [i for i, label in enumerate(labels) if label]
    tree = DecisionTreeClassifier(random_state=0).fit(
        features[keep], [labels[i] for i in keep]
    )
    header, _ = split_file(good)
    path = tmp_path / "tree.model"
    path.write_bytes(assemble(header, sio.dumps(tree)))
    refused(path, "does not match its header")


def test_forest_of_another_width_is_refused(good: bytes, tmp_path: Path) -> None:
    """Header says appscanner54, the forest was fitted on 14 columns: refused on load."""
    narrow = train_sample(SEED14, trees=3)
    header, _ = split_file(good)
    path = tmp_path / "narrow.model"
    path.write_bytes(assemble(header, sio.dumps(narrow.forest)))
    refused(path, "forest expects 14 features")


def test_wrong_feature_columns_are_refused(good: bytes, tmp_path: Path) -> None:
    header, payload = split_file(good)
    header["feature_columns"] = list(reversed(header["feature_columns"]))
    path = tmp_path / "columns.model"
    path.write_bytes(assemble(header, payload))
    refused(path, "feature columns differ from appscanner54/v1")


# --------------------------------------------------------------------------- pinning
def test_expect_sha256_pins_the_whole_file(model_file: Path) -> None:
    digest = hashlib.sha256(model_file.read_bytes()).hexdigest()
    assert file_sha256(model_file) == digest
    assert load_model(model_file, expect_sha256=digest).classes == ["udp-app", "web"]
    assert load_model(model_file, expect_sha256=digest.upper()).classes == ["udp-app", "web"]
    wrong = "0" * 64
    with pytest.raises(ModelError) as info:
        load_model(model_file, expect_sha256=wrong)
    assert digest in str(info.value) and wrong in str(info.value)


def test_expect_sha256_on_missing_file_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no such model file"):
        load_model(tmp_path / "absent.model", expect_sha256="0" * 64)


# --------------------------------------------------------------------------- command line
def bad_model_files(good: bytes, model: AppModel, folder: Path) -> dict[str, Path]:
    """One file per way a model can be unusable, for the command-line checks."""
    header, payload = split_file(good)
    files: dict[str, bytes] = {
        "flipped": good[:-1] + bytes([good[-1] ^ 0x01]),
        "format-99": assemble({**header, "format": 99}, payload),
        "untrusted": assemble(header, _untrusted_payload(model, folder)),
    }
    paths = {}
    for name, data in files.items():
        paths[name] = folder / f"{name}.model"
        paths[name].write_bytes(data)
    paths["missing"] = folder / "missing.model"
    return paths


def _untrusted_payload(model: AppModel, folder: Path) -> bytes:
    import copy

    forest = copy.deepcopy(model.forest)
    forest.extra_ = Canary(str(folder / "canary-ran"))
    return sio.dumps(forest)


def run_parallel(commands: dict[str, list[str]]) -> dict[str, subprocess.CompletedProcess[str]]:
    """Run the commands at the same time (each pays Python's start-up) and collect them."""
    started = {
        name: subprocess.Popen(
            [sys.executable, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, cwd=REPO,
        )
        for name, argv in commands.items()
    }
    done = {}
    for name, process in started.items():
        out, err = process.communicate(timeout=120)
        done[name] = subprocess.CompletedProcess(process.args, process.returncode, out, err)
    return done


# One case per layer of checks (file, payload hash, header, payload types): each process pays
# ~2 s of scikit-learn imports, so the finer distinctions are checked in-process above.
CLI_CASES = {
    "missing": "no such model file",
    "flipped": "SHA-256 mismatch",
    "format-99": "model format 99",
    "untrusted": "Canary",
}


@pytest.fixture(scope="module")
def cli_results(
    model: AppModel, model_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, dict[str, subprocess.CompletedProcess[str]]]]:
    folder = tmp_path_factory.mktemp("bad-models")
    paths = bad_model_files(model_file.read_bytes(), model, folder)
    commands = {
        name: ["-m", "appsight", "classify", "-m", str(path), str(SAMPLE)]
        for name, path in paths.items()
    }
    yield folder, run_parallel(commands)


@pytest.mark.parametrize("case", CLI_CASES)
def test_classify_with_bad_model_exits_2_with_one_line(
    cli_results: tuple[Path, dict[str, subprocess.CompletedProcess[str]]], case: str
) -> None:
    folder, results = cli_results
    done = results[case]
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("appsight: error:"), done.stderr
    assert "Traceback" not in done.stderr
    assert CLI_CASES[case] in lines[0]
    assert not (folder / "canary-ran").exists()


def test_classify_with_text_threshold_exits_2(
    good: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """In-process: the ValueError reaching main() is what a user sees as a traceback."""
    header, payload = split_file(good)
    path = tmp_path / "threshold.model"
    path.write_bytes(assemble({**header, "threshold": "high"}, payload))
    status = main(["classify", "-m", str(path), str(SAMPLE)])
    assert status == 2
    assert capsys.readouterr().err.startswith("appsight: error:")


def test_model_error_is_an_appsight_error() -> None:
    """The command line's catch-all for user errors covers model errors (exit status 2)."""
    assert issubclass(ModelError, AppsightError)
    assert ModelError("x").exit_status == 2


# --------------------------------------------------------------------------- source audit
def _calls(tree: ast.AST) -> Iterator[ast.Call]:
    return (node for node in ast.walk(tree) if isinstance(node, ast.Call))


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    if isinstance(node, ast.Name):
        return node.id
    return "?"


def test_no_module_can_unpickle() -> None:
    """No source of the package imports pickle-like loaders or calls skops without trust.

    Read from the source (not by importing), so a future module is covered as soon as it
    exists: pickle, cPickle, dill, cloudpickle and shelve are never imported, joblib.load and
    numpy's allow_pickle=True are never used, and every skops load names ``trusted=`` (and
    not ``trusted=True``).
    """
    sources = sorted(PACKAGE.rglob("*.py"))
    assert len(sources) > 10
    unpicklers = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "shelve"}
    problems: list[str] = []
    skops_loads = 0
    for source in sources:
        tree = ast.parse(source.read_text(encoding="utf-8"), filename=str(source))
        where = source.relative_to(REPO)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] in unpicklers:
                        problems.append(f"{where}:{node.lineno}: import {alias.name}")
            elif isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if module.split(".")[0] in unpicklers:
                    problems.append(f"{where}:{node.lineno}: from {module} import ...")
                if module.startswith("joblib") and any(a.name == "load" for a in node.names):
                    problems.append(f"{where}:{node.lineno}: from joblib import load")
                if module.startswith("skops") and any(a.name in ("load", "loads")
                                                      for a in node.names):
                    problems.append(f"{where}:{node.lineno}: bare skops load import")
        for call in _calls(tree):
            name = _dotted(call.func)
            keywords = {k.arg: k.value for k in call.keywords}
            if name.endswith("joblib.load"):
                problems.append(f"{where}:{call.lineno}: {name}()")
            if name in ("sio.load", "sio.loads", "skops.io.load", "skops.io.loads", "io.loads"):
                skops_loads += 1
                trusted = keywords.get("trusted")
                if trusted is None or (isinstance(trusted, ast.Constant) and trusted.value):
                    problems.append(f"{where}:{call.lineno}: {name}() without a trusted list")
            allow = keywords.get("allow_pickle")
            if isinstance(allow, ast.Constant) and allow.value is True:
                problems.append(f"{where}:{call.lineno}: allow_pickle=True")
        text = source.read_text(encoding="utf-8")
        for needle in ("joblib.load", "pickle.load", "read_pickle"):
            if needle in text:
                problems.append(f"{where}: mentions {needle}")
    assert skops_loads >= 1  # the audit does see the one real load in model.py
    assert problems == []


# --------------------------------------------------------------------------- ambiguity checker
def with_checker(model: AppModel, trees: int = 5) -> AppModel:
    """The model plus a real checker forest (right/wrong labels from a fixed rule), as
    ``train --ambiguity`` stores it."""
    from appsight.classifier import AppClassifier, make_forest

    features, labels = sample_features(model.feature_set)
    keep = [i for i, label in enumerate(labels) if label]
    right = np.arange(len(keep)) % 3 != 0
    checker = make_forest(trees, seed=3).fit(features[keep], right)
    return AppModel(AppClassifier.from_fitted(model.forest, 0.5, checker), model.feature_set,
                    model.burst_gap, dict(model.metadata))


def test_model_with_checker_round_trips_as_format_2(model: AppModel, tmp_path: Path) -> None:
    """The checker travels in the payload, the header says so, and the loaded model's
    confidences are the checker's probability of being right, identical after loading."""
    checked = with_checker(model)
    path = tmp_path / "checked.model"
    checked.save(path)
    header, _ = split_file(path.read_bytes())
    assert header["format"] == 2 and header["ambiguity"] is True
    loaded = load_model(path)
    assert loaded.checker is not None
    rows = probe_rows()
    apps, confidence = checked.predict(rows)
    loaded_apps, loaded_confidence = loaded.predict(rows)
    assert loaded_apps == apps
    assert np.array_equal(loaded_confidence, confidence)
    right = checked.checker.predict_proba(rows)[:, list(checked.checker.classes_).index(True)]
    assert np.array_equal(confidence, right)
    plain_apps, _ = model.predict(rows, threshold=0.0)
    assert loaded.predict(rows, threshold=0.0)[0] == plain_apps


def test_model_without_checker_stays_format_1(good: bytes) -> None:
    header, _ = split_file(good)
    assert header["format"] == 1 and header["ambiguity"] is False


def test_checker_payload_under_a_plain_header_is_refused(
    model: AppModel, good: bytes, tmp_path: Path
) -> None:
    """Header and payload must agree on whether there is a checker, both ways."""
    checked = with_checker(model)
    source = tmp_path / "checked.model"
    checked.save(source)
    checked_header, checked_payload = split_file(source.read_bytes())
    plain_header, plain_payload = split_file(good)
    path = tmp_path / "mixed.model"
    path.write_bytes(assemble({**plain_header, "format": 2}, checked_payload))
    refused(path, "does not match its header")
    path.write_bytes(assemble(checked_header, plain_payload))
    refused(path, "does not match its header")


def test_checker_that_is_not_a_right_or_wrong_forest_is_refused(
    model: AppModel, tmp_path: Path
) -> None:
    """A checker must be a forest over the same columns whose classes are True/False."""
    source = tmp_path / "checked.model"
    with_checker(model).save(source)
    header, _ = split_file(source.read_bytes())
    path = tmp_path / "bad-checker.model"
    path.write_bytes(assemble(header, sio.dumps({"forest": model.forest,
                                                 "checker": model.forest})))
    refused(path, "ambiguity checker does not match")


def test_right_probability_of_a_one_sided_checker() -> None:
    """A checker that only ever saw right answers says 'right' with certainty; one that only
    saw wrong answers, 'wrong'."""
    from appsight.classifier import make_forest, right_probability

    rows = np.arange(12, dtype=np.float64).reshape(6, 2)
    always = make_forest(3, seed=0).fit(rows, np.ones(6, dtype=bool))
    never = make_forest(3, seed=0).fit(rows, np.zeros(6, dtype=bool))
    assert right_probability(always, rows).tolist() == [1.0] * 6
    assert right_probability(never, rows).tolist() == [0.0] * 6


def test_skops_floor_excludes_the_trusted_type_bypass() -> None:
    """skops before 0.12 let crafted files through the trusted-type check (CVE-2025-54412):
    the declared floor and the installed version are both past it."""
    import importlib.metadata
    import re

    import tomllib
    from packaging.version import Version

    project = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml")
                            .read_text())["project"]
    [spec] = [d for d in project["dependencies"] if d.startswith("skops")]
    floor = re.search(r">=\s*([0-9.]+)", spec)
    assert floor is not None, spec
    assert Version(floor.group(1)) >= Version("0.12")
    assert Version(importlib.metadata.version("skops")) >= Version("0.12")
