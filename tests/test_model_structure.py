"""Crafted forests: trusted types, hostile numbers. Each is refused before anything walks it.

A model of only trusted types (skops lets it through) can still carry tree arrays that make
scikit-learn's C tree walk read out of bounds or loop for ever, or a payload that unpacks a
thousand times its size. These tests take a real forest trained on the embedded sample,
change one number in one tree the way an attacker who can write the model file would, save
it through appsight's own writer (so header and SHA-256 are right), and check that:

* ``load_model`` raises one ModelError line naming the problem;
* ``appsight classify -m`` exits 2 with one line: not 139 (a segfault), not a hang (the
  subprocess has a timeout), not a traceback;
* a zip bomb is refused from the zip directory, before skops unpacks anything.

Before these checks the same files segfaulted ``classify`` or hung it in a loop that ignored
SIGTERM; each case here is one of those files.
"""

from __future__ import annotations

import copy
import io
import subprocess
import sys
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from appsight import model_checks
from appsight.model import AppModel, ModelError, load_model
from test_model import assemble, refused, split_file, train_sample, with_checker

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "examples" / "sample.pcap"
APPSIGHT = [sys.executable, "-m", "appsight"]
CLI_TIMEOUT = 120  # generous: a hang is what this catches, not a slow machine

NodeEdit = Callable[[np.ndarray], None]


@pytest.fixture(scope="module")
def model() -> AppModel:
    return train_sample()


def inner_nodes(nodes: np.ndarray) -> np.ndarray:
    return np.flatnonzero(nodes["left_child"] != -1)


def _feature_out_of_range(nodes: np.ndarray) -> None:
    nodes["feature"][0] = 1_000_000


def _negative_feature(nodes: np.ndarray) -> None:
    nodes["feature"][0] = -7


def _child_out_of_range(nodes: np.ndarray) -> None:
    nodes["left_child"][0] = 10_000_000


def _child_back_to_root(nodes: np.ndarray) -> None:
    nodes["right_child"][inner_nodes(nodes)[-1]] = 0


def _child_is_itself(nodes: np.ndarray) -> None:
    node = inner_nodes(nodes)[0]
    nodes["left_child"][node] = node


def _one_child(nodes: np.ndarray) -> None:
    nodes["right_child"][0] = -1


def _shared_child(nodes: np.ndarray) -> None:
    node = inner_nodes(nodes)[-1]
    nodes["right_child"][node] = nodes["left_child"][node]


EDITS: dict[str, tuple[NodeEdit, str]] = {
    "feature out of range": (_feature_out_of_range, "feature index out of range"),
    "negative feature": (_negative_feature, "feature index out of range"),
    "child out of range": (_child_out_of_range, "child index out of range"),
    "child back to the root": (_child_back_to_root, "a cycle"),
    "child is itself": (_child_is_itself, "a cycle"),
    "one child": (_one_child, "one child"),
    "two parents": (_shared_child, "two"),
}


def edited_forest(forest: object, edit: NodeEdit, tree: int = 0) -> object:
    """A copy of ``forest`` whose tree ``tree`` has its node array changed by ``edit``."""
    forest = copy.deepcopy(forest)
    target = forest.estimators_[tree].tree_  # type: ignore[attr-defined]
    state = target.__getstate__()
    nodes = state["nodes"].copy()
    edit(nodes)
    state["nodes"] = nodes
    target.__setstate__(state)
    return forest


def saved(model: AppModel, path: Path, forest: object | None = None,
          checker: object | None = None) -> Path:
    """``model`` with another forest or checker, written by appsight's own writer."""
    crafted = copy.copy(model)
    crafted.estimator = copy.copy(model.estimator)
    if forest is not None:
        crafted.estimator.forest_ = forest
    if checker is not None:
        crafted.estimator.checker_ = checker
    crafted.save(path)
    return path


def classify_refuses(path: Path, *fragments: str) -> None:
    result = subprocess.run([*APPSIGHT, "classify", str(SAMPLE), "-m", str(path)],
                            capture_output=True, text=True, timeout=CLI_TIMEOUT, cwd=REPO,
                            check=False)
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("appsight: error:"), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert result.stdout == ""


def test_the_untouched_forest_passes_the_checks(model: AppModel, tmp_path: Path) -> None:
    """The control: what appsight trains loads and classifies (the checks refuse only edits)."""
    path = saved(model, tmp_path / "good.model")
    assert load_model(path).classes == model.classes
    result = subprocess.run([*APPSIGHT, "classify", str(SAMPLE), "-m", str(path)],
                            capture_output=True, text=True, timeout=CLI_TIMEOUT, cwd=REPO,
                            check=False)
    assert result.returncode == 0, result.stderr


def test_trees_built_best_first_and_depth_first_pass(tmp_path: Path) -> None:
    """The one-tree argument holds for both of scikit-learn's builders, and many classes."""
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(600, 6)), rng.integers(0, 9, 600)
    for leaves in (None, 16):
        forest = RandomForestClassifier(n_estimators=5, max_leaf_nodes=leaves,
                                        random_state=0).fit(X, y)
        model_checks.check_forest(forest, 6, 9)


@pytest.mark.parametrize("case", EDITS)
def test_crafted_tree_is_refused_on_load(model: AppModel, tmp_path: Path, case: str) -> None:
    edit, problem = EDITS[case]
    path = saved(model, tmp_path / "crafted.model", edited_forest(model.forest, edit, tree=3))
    message = refused(path, "tree 3 of the forest", problem)
    assert message.endswith("refusing it")


@pytest.mark.parametrize("case", ["feature out of range", "child out of range",
                                  "child back to the root"])
def test_crafted_tree_gives_one_line_not_a_crash_or_a_hang(
    model: AppModel, tmp_path: Path, case: str
) -> None:
    """The cases that segfaulted (exit 139) or looped for ever inside predict."""
    edit, problem = EDITS[case]
    path = saved(model, tmp_path / "crafted.model", edited_forest(model.forest, edit))
    classify_refuses(path, "tree 0 of the forest", problem)


def test_crafted_checker_tree_is_refused(model: AppModel, tmp_path: Path) -> None:
    checked = with_checker(model)
    path = saved(checked, tmp_path / "checker.model",
                 checker=edited_forest(checked.checker, _child_back_to_root))
    refused(path, "tree 0 of the ambiguity checker", "a cycle")


def test_leaf_values_that_are_not_shares_are_refused(model: AppModel, tmp_path: Path) -> None:
    forest = copy.deepcopy(model.forest)
    tree = forest.estimators_[0].tree_
    state = tree.__getstate__()
    state["values"] = np.full_like(state["values"], np.nan)
    tree.__setstate__(state)
    refused(saved(model, tmp_path / "nan.model", forest), "leaf values")


def test_unfitted_forest_is_refused(model: AppModel, tmp_path: Path) -> None:
    """Fitted-looking attributes without trees: an AttributeError traceback before."""
    from sklearn.ensemble import RandomForestClassifier

    forest = RandomForestClassifier(n_estimators=3)
    forest.classes_ = model.forest.classes_
    forest.n_features_in_ = model.forest.n_features_in_
    forest.n_outputs_, forest.n_classes_ = 1, len(model.classes)
    path = saved(model, tmp_path / "unfitted.model", forest)
    refused(path, "never fitted")
    classify_refuses(path, "never fitted")


def test_unfitted_checker_is_refused(model: AppModel, tmp_path: Path) -> None:
    from sklearn.ensemble import RandomForestClassifier

    checked = with_checker(model)
    checker = RandomForestClassifier(n_estimators=3)
    checker.classes_ = np.array([False, True])
    checker.n_features_in_ = model.forest.n_features_in_
    path = saved(checked, tmp_path / "unfitted-checker.model", checker=checker)
    refused(path, "ambiguity checker")


def test_tree_of_another_width_inside_a_right_forest_is_refused(
    model: AppModel, tmp_path: Path
) -> None:
    """One tree trained on fewer columns than the forest claims: it would read past a row."""
    from sklearn.tree import DecisionTreeClassifier

    forest = copy.deepcopy(model.forest)
    rng = np.random.default_rng(0)
    narrow = DecisionTreeClassifier(random_state=0).fit(
        rng.normal(size=(50, 3)), np.arange(50) % len(model.classes))
    forest.estimators_[1] = narrow
    refused(saved(model, tmp_path / "narrow.model", forest), "tree 1 of the forest")


# ------------------------------------------------------------------------- zip bombs
def replace_largest_entry(payload: bytes, data: bytes) -> bytes:
    """The payload with its largest entry (a tree's node array) replaced by ``data``."""
    with zipfile.ZipFile(io.BytesIO(payload)) as source:
        entries = source.infolist()
        largest = max(entries, key=lambda e: e.file_size).filename
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as target:
            for entry in entries:
                target.writestr(entry.filename,
                                data if entry.filename == largest else source.read(entry))
    return out.getvalue()


def bomb_file(model: AppModel, tmp_path: Path, megabytes: int = 64) -> Path:
    """A model whose payload deflates ``megabytes`` MB of zeros: an array skops would unpack."""
    good = saved(model, tmp_path / "good.model").read_bytes()
    header, payload = split_file(good)
    zeros = io.BytesIO()
    np.save(zeros, np.zeros(megabytes << 17))  # float64: 8 bytes each
    path = tmp_path / "bomb.model"
    path.write_bytes(assemble(header, replace_largest_entry(payload, zeros.getvalue())))
    return path


def test_zip_bomb_is_refused_before_anything_unpacks(model: AppModel, tmp_path: Path) -> None:
    path = bomb_file(model, tmp_path)
    assert path.stat().st_size < 1 << 20  # under 1 MB on disk, 64 MB unpacked
    tracemalloc.start()
    try:
        with pytest.raises(ModelError, match="zip bomb"):
            load_model(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, peak  # the 64 MB array was never built
    classify_refuses(path, "zip bomb")


def test_zip_of_an_unknown_version_is_a_damaged_payload(model: AppModel, tmp_path: Path) -> None:
    """Found by benchmarks/fuzz.py: a central directory asking for zip version 25.5 raised
    NotImplementedError from zipfile (a traceback) instead of a refusal."""
    header, payload = split_file(saved(model, tmp_path / "good.model").read_bytes())
    crafted = bytearray(payload)
    directory = crafted.index(b"PK\x01\x02")
    crafted[directory + 6] = 255  # version needed to extract
    path = tmp_path / "version.model"
    path.write_bytes(assemble(header, bytes(crafted)))
    refused(path, "damaged model payload", "NotImplementedError")
    classify_refuses(path, "damaged model payload")


def test_unpacked_size_and_entry_count_are_bounded(
    model: AppModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The absolute bounds, shown on a real model with the limits set just below it."""
    path = saved(model, tmp_path / "good.model")
    _, payload = split_file(path.read_bytes())
    with zipfile.ZipFile(io.BytesIO(payload)) as archive:
        entries = archive.infolist()
    monkeypatch.setattr(model_checks, "MAX_ENTRIES", len(entries) - 1)
    refused(path, f"{len(entries)} entries")
    monkeypatch.setattr(model_checks, "MAX_ENTRIES", len(entries))
    monkeypatch.setattr(model_checks, "MAX_UNPACKED_BYTES",
                        sum(e.file_size for e in entries) - 1)
    refused(path, "unpacks to")


def test_expansion_bound_is_far_above_what_appsight_writes(
    model: AppModel, tmp_path: Path
) -> None:
    """A real forest deflates well under MAX_EXPANSION (the sample's: about 20 times)."""
    _, payload = split_file(saved(model, tmp_path / "good.model").read_bytes())
    with zipfile.ZipFile(io.BytesIO(payload)) as archive:
        unpacked = sum(e.file_size for e in archive.infolist())
    assert unpacked / len(payload) < model_checks.MAX_EXPANSION / 4
