"""The model file: a random forest plus everything needed to use it right, never pickle.

The agent runs as root on a gateway, so loading a model must not run code. A model file is

    APPSIGHT-MODEL\\n
    <one line of JSON: format, metadata, payload size, and a SHA-256 of header and payload>\\n
    <payload: the forest saved by skops.io; with an ambiguity stage (format 2), a dict of
     the forest and its checker>

On load the header is parsed (bounded in size) and its values checked; the length and the
SHA-256 (over the header's other fields and the payload) are checked, so truncation or a
changed byte anywhere is refused; the payload's types are checked against an explicit list of
trusted types, and its zip directory against bounds on size and entries (a zip bomb), before
skops builds anything; the loaded trees are checked the way predict walks them (indices in
range, one tree, no cycle: :mod:`appsight.model_checks`); and the metadata must name a
feature set this version knows. The SHA-256 detects damage, not forgery: a deployment that
must trust a model pins the whole file's hash, one (``expect_sha256``) or an operator's list
(``--trusted-models``, :mod:`appsight.model_trust`). Every failure is an
:class:`AppsightError`: one line, exit status 2. skops stores plain arrays, so a model
trained on one 64-bit machine loads on any other with a compatible scikit-learn.
"""

from __future__ import annotations

import hashlib
import json
import platform
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .bursts import MAX_BURST_GAP
from .errors import AppsightError, UsageError
from .features import FEATURE_SETS, FeatureSet
from .model_checks import PayloadError, check_archive, check_forest
from .model_trust import TrustedModels
from .outputs import AtomicFile
from .version import __version__

MAGIC = b"APPSIGHT-MODEL\n"
#: 1: one forest; 2: a forest and its ambiguity checker. A model without a checker is still
#: written as format 1, so older appsight versions keep reading it.
FORMAT_VERSION = 2
MAX_HEADER = 1 << 20

#: Types a forest file may contain beyond those skops trusts by default (plain containers,
#: numpy arrays, scikit-learn estimators). Anything else in a payload is refused before skops
#: builds anything.
TRUSTED_TYPES = ("sklearn.tree._tree.Tree",)


#: Header fields the model writes itself; metadata cannot override them.
RESERVED_FIELDS = frozenset({
    "format", "payload_bytes", "sha256", "feature_set", "feature_set_version",
    "feature_columns", "classes", "threshold", "burst_gap", "versions", "ambiguity",
})


class ModelError(AppsightError):
    """A model file that cannot be used: missing, damaged, tampered with or incompatible."""


def _canonical(header: dict[str, Any]) -> bytes:
    return json.dumps(header, sort_keys=True).encode()


def header_digest(header: dict[str, Any], payload: bytes) -> str:
    """SHA-256 over the header (all fields but ``sha256`` itself) and the payload."""
    fields = {k: v for k, v in header.items() if k != "sha256"}
    return hashlib.sha256(MAGIC + _canonical(fields) + b"\n" + payload).hexdigest()


@dataclass
class AppModel:
    """The model file's content: a fitted :class:`~appsight.classifier.AppClassifier` with the
    feature set and pipeline settings it was trained with, and what training recorded.

    With an ambiguity checker (AppScanner's second stage, see
    :func:`appsight.classifier.fit_checker`), a flow's confidence is the checker's probability
    that the forest's answer is right, not the forest's top vote share.
    """

    estimator: Any
    feature_set: FeatureSet
    burst_gap: float | None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def forest(self) -> Any:
        return self.estimator.forest_

    @property
    def checker(self) -> Any:
        return self.estimator.checker_

    @property
    def threshold(self) -> float:
        return float(self.estimator.threshold_)

    @threshold.setter
    def threshold(self, value: float) -> None:
        """Re-threshold a trained model (the forest is unchanged)."""
        self.estimator.threshold = self.estimator.threshold_ = float(value)

    @property
    def classes(self) -> list[str]:
        return [str(c) for c in self.forest.classes_]

    def predict(self, features: np.ndarray, threshold: float | None = None,
                ) -> tuple[list[str], np.ndarray]:
        """(app or ``unknown``, confidence) per row; single-threaded, in small batches."""
        return self.estimator.decide(features, threshold)

    # ----------------------------------------------------------------- saving
    def save(self, path: str | Path) -> int:
        """Write the model file; returns its size in bytes."""
        import skops.io as sio

        stored = (self.forest if self.checker is None
                  else {"forest": self.forest, "checker": self.checker})
        payload = sio.dumps(stored, compression=zipfile.ZIP_DEFLATED, compresslevel=6)
        header = {
            **{k: v for k, v in self.metadata.items() if k not in RESERVED_FIELDS},
            "format": 1 if self.checker is None else 2,
            "ambiguity": self.checker is not None,
            "payload_bytes": len(payload),
            "feature_set": self.feature_set.name,
            "feature_set_version": self.feature_set.version,
            "feature_columns": list(self.feature_set.columns),
            "classes": self.classes,
            "threshold": self.threshold,
            "burst_gap": self.burst_gap,
            "versions": library_versions(),
        }
        header["sha256"] = header_digest(header, payload)
        data = MAGIC + _canonical(header) + b"\n" + payload
        try:
            with AtomicFile(path, binary=True) as output:  # renamed into place on success
                output.handle.write(data)
        except OSError as exc:
            raise ModelError(f"{path}: cannot write the model: {exc.strerror}") from None
        except UsageError as exc:  # AtomicFile's own: the folder, or the rename
            reason = str(exc).rsplit(": ", 1)[-1]
            raise ModelError(f"{path}: cannot write the model: {reason}") from None
        return len(data)


def library_versions() -> dict[str, str]:
    import sklearn
    import skops

    return {
        "appsight": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "skops": skops.__version__,
        "machine": platform.machine(),
    }


def _read_file(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise ModelError(f"{path}: no such model file") from None
    except OSError as exc:
        raise ModelError(f"{path}: cannot read the model: {exc.strerror}") from None


def read_header(path: str | Path, data: bytes | None = None) -> tuple[dict[str, Any], bytes]:
    """The checked header and payload of a model file (no skops involved yet); ``data``:
    the file's bytes, when they have been read already."""
    if data is None:
        data = _read_file(path)
    if not data.startswith(MAGIC):
        raise ModelError(f"{path}: not an appsight model file")
    end = data.find(b"\n", len(MAGIC), len(MAGIC) + MAX_HEADER)
    if end < 0:
        raise ModelError(f"{path}: damaged model file (no header)")
    try:
        header = json.loads(data[len(MAGIC) : end])
        if not isinstance(header, dict):
            raise ValueError("header is not an object")
        size, digest = int(header["payload_bytes"]), str(header["sha256"])
        fmt = int(header["format"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise ModelError(f"{path}: damaged model file (bad header)") from None
    if fmt > FORMAT_VERSION:
        raise ModelError(
            f"{path}: model format {fmt} is newer than this appsight ({__version__}) reads; "
            "upgrade appsight"
        )
    payload = data[end + 1 :]
    if len(payload) < size:
        raise ModelError(
            f"{path}: damaged model file (truncated: {len(payload)} of {size} payload bytes)"
        )
    if len(payload) > size:
        raise ModelError(f"{path}: damaged model file ({len(payload) - size} bytes too many)")
    if header_digest(header, payload) != digest:
        raise ModelError(f"{path}: model file was modified (SHA-256 mismatch); refusing it")
    _check_header_values(path, header)
    return header, payload


def _check_header_values(path: str | Path, header: dict[str, Any]) -> None:
    """Refuse header values of the wrong type or range, whatever wrote them."""
    threshold, gap = header.get("threshold"), header.get("burst_gap")
    columns, classes = header.get("feature_columns"), header.get("classes")
    problems = []
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not (
        0.0 <= threshold <= 1.0
    ):
        problems.append("threshold")
    if gap is not None and (
        isinstance(gap, bool) or not isinstance(gap, int | float) or not 0 < gap <= MAX_BURST_GAP
    ):
        problems.append("burst_gap")
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        problems.append("feature_columns")
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        problems.append("classes")
    device = header.get("device", [])
    if not isinstance(device, list) or not all(isinstance(d, str) for d in device):
        problems.append("device")
    if problems:
        raise ModelError(f"{path}: damaged model file (bad {', '.join(problems)})")


def load_model(path: str | Path, expect_sha256: str | None = None,
               trusted: TrustedModels | None = None) -> AppModel:
    """Load and verify a model file; ``expect_sha256`` pins the whole file's hash, and
    ``trusted`` (an operator's allow-list) names the hashes that may be loaded. The file is
    read once: what is hashed is what is loaded."""
    data = _read_file(path)
    actual = hashlib.sha256(data).hexdigest()
    if expect_sha256 is not None and actual != expect_sha256.lower():
        raise ModelError(f"{path}: SHA-256 is {actual}, not the expected {expect_sha256}")
    if trusted is not None:
        trusted.check(path, actual)
    header, payload = read_header(path, data)
    name, version = header.get("feature_set"), header.get("feature_set_version")
    feature_set = FEATURE_SETS.get(str(name))
    if feature_set is None or feature_set.version != version:
        raise ModelError(
            f"{path}: trained on feature set {name}/v{version}, which this appsight does not "
            "compute; retrain the model"
        )
    if list(header.get("feature_columns", [])) != list(feature_set.columns):
        raise ModelError(f"{path}: feature columns differ from {feature_set.tag}; retrain")
    forest, checker = _forest_and_checker(path, header, _unpack(path, header, payload),
                                          len(feature_set.columns))
    meta = {k: v for k, v in header.items() if k not in RESERVED_FIELDS or k == "versions"}
    from .classifier import AppClassifier

    estimator = AppClassifier.from_fitted(forest, float(header.get("threshold", 0.5)), checker)
    return AppModel(estimator, feature_set, header.get("burst_gap"), meta)


def _unpack(path: str | Path, header: dict[str, Any], payload: bytes) -> Any:
    """The payload's objects, built by skops only after the zip directory and the types in
    it passed the checks."""
    import skops.io as sio  # only now: its import costs a second or two

    try:
        check_archive(payload)
    except PayloadError as exc:
        raise ModelError(f"{path}: {exc}") from None
    try:
        untrusted = sio.get_untrusted_types(data=payload)
    except Exception as exc:  # skops raises many types on a malformed archive
        raise ModelError(f"{path}: damaged model payload ({type(exc).__name__})") from None
    refused = sorted(set(untrusted) - set(TRUSTED_TYPES))
    if refused:
        raise ModelError(f"{path}: model holds types that are not trusted: {', '.join(refused)}")
    try:
        return sio.loads(payload, trusted=list(untrusted))
    except Exception as exc:  # an incompatible scikit-learn shows up here
        trained = header.get("versions", {}).get("scikit-learn", "?")
        raise ModelError(
            f"{path}: cannot load the forest ({type(exc).__name__}: {exc}); it was trained "
            f"with scikit-learn {trained}"
        ) from None


def _forest_and_checker(path: str | Path, header: dict[str, Any], stored: Any,
                        width: int) -> tuple[Any, Any]:
    """The forest (and checker) of the unpacked payload, as the header describes them, with
    every tree checked the way predict walks it."""
    from sklearn.ensemble import RandomForestClassifier

    checker = None
    if header.get("ambiguity") is True:
        if not isinstance(stored, dict) or set(stored) != {"forest", "checker"}:
            raise ModelError(f"{path}: model payload does not match its header")
        forest, checker = stored["forest"], stored["checker"]
        outcomes = np.asarray(getattr(checker, "classes_", []))
        if not isinstance(checker, RandomForestClassifier) or outcomes.dtype != np.bool_ or (
            getattr(checker, "n_features_in_", None) != width
        ) or len(outcomes) not in (1, 2):
            raise ModelError(f"{path}: the ambiguity checker does not match the model")
    else:
        forest = stored
    if not isinstance(forest, RandomForestClassifier) or [
        str(c) for c in getattr(forest, "classes_", [])
    ] != list(header.get("classes", [])):
        raise ModelError(f"{path}: model payload does not match its header")
    if getattr(forest, "n_features_in_", None) != width:
        expects = getattr(forest, "n_features_in_", "an unknown number of")
        raise ModelError(f"{path}: forest expects {expects} features")
    try:
        check_forest(forest, width, len(forest.classes_))
        if checker is not None:
            check_forest(checker, width, len(checker.classes_), role="ambiguity checker")
    except PayloadError as exc:
        raise ModelError(f"{path}: {exc}; refusing it") from None
    return forest, checker


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
