"""What a model payload may hold before skops unpacks it, and what its trees must be after.

skops refuses types it does not trust, but a random forest of trusted types can still hold
any numbers. scikit-learn's tree walk trusts them: it indexes the sample's row with a node's
feature and follows child indices without bounds checks, so

* a feature or child index out of range reads outside an array (a segfault as root),
* a child that points back to an earlier node makes the walk loop for ever, in C code that
  no signal interrupts,
* and a few hundred kB of deflated zeros unpack to gigabytes before any shape is checked.

:func:`check_archive` bounds the unpacked size and the number of entries from the zip's own
directory (zipfile never unpacks more than an entry declares); :func:`check_forest` checks a
loaded forest the way its predict will use it. Both raise :class:`PayloadError` with one
line, which :mod:`appsight.model` names the file in.

Every tree scikit-learn builds, depth first or best first, adds a node after its parent, so
a child's index is always larger than its parent's; checking that, and that every node but
the root has exactly one parent, proves the arrays are one tree with no cycle.
"""

from __future__ import annotations

import io
import zipfile
from typing import Any

import numpy as np

#: Unpacked bytes a payload may hold. The default forest (150 trees of at most 2 048 leaves)
#: of 53 apps unpacks to about 0.3 GB; this leaves room for a few hundred apps.
MAX_UNPACKED_BYTES = 2 << 30
#: Unpacked over packed size, for the payload as a whole. Forests saved by appsight deflate
#: 5-20 times (53 FG-Net apps: 5.6; the embedded sample's two classes: 18; no entry past 51);
#: zeros alone deflate about 1 000 times.
MAX_EXPANSION = 200
#: Entries in the payload: skops writes about 5 per tree.
MAX_ENTRIES = 100_000
TREE_LEAF = -1  # scikit-learn's child index of a leaf


class PayloadError(ValueError):
    """A payload or a forest that must not be loaded or used; the message is one line."""


def check_archive(payload: bytes) -> None:
    """Refuse a payload whose zip directory promises too much before anything unpacks."""
    try:
        with zipfile.ZipFile(io.BytesIO(payload)) as archive:
            entries = archive.infolist()
    except Exception as exc:  # zipfile raises many types on a crafted directory
        raise PayloadError(f"damaged model payload ({type(exc).__name__}: {exc})") from None
    if len(entries) > MAX_ENTRIES:
        raise PayloadError(f"model payload has {len(entries)} entries (at most {MAX_ENTRIES})")
    unpacked = sum(entry.file_size for entry in entries)
    if unpacked > MAX_UNPACKED_BYTES:
        raise PayloadError(f"model payload unpacks to {unpacked / 2**30:.1f} GiB "
                           f"(at most {MAX_UNPACKED_BYTES / 2**30:.0f} GiB)")
    if unpacked > MAX_EXPANSION * max(len(payload), 1):
        raise PayloadError(f"model payload unpacks {unpacked // max(len(payload), 1)} times its "
                           f"size (at most {MAX_EXPANSION}): a zip bomb, not a forest")


def check_forest(forest: Any, n_features: int, n_classes: int, role: str = "forest") -> None:
    """Refuse a RandomForestClassifier that predict could not walk safely.

    ``n_features`` and ``n_classes`` are what the model's header promises; every tree must
    agree with them, and every tree's arrays must form one tree.
    """
    from sklearn.ensemble import RandomForestClassifier

    if type(forest) is not RandomForestClassifier:
        raise PayloadError(f"the {role} is not a random forest")
    trees = getattr(forest, "estimators_", None)
    if not isinstance(trees, list) or not trees:
        raise PayloadError(f"the {role} was never fitted")
    expected = {"n_features_in_": n_features, "n_outputs_": 1, "n_classes_": n_classes}
    for name, value in expected.items():
        if getattr(forest, name, None) != value:
            raise PayloadError(f"the {role}'s {name.strip('_')} is not {value}")
    if len(np.asarray(forest.classes_).ravel()) != n_classes:
        raise PayloadError(f"the {role} does not have {n_classes} classes")
    for index, tree in enumerate(trees):
        problem = _tree_problem(tree, n_features, n_classes)
        if problem:
            raise PayloadError(f"tree {index} of the {role}: {problem}")


def _tree_problem(estimator: Any, n_features: int, n_classes: int) -> str | None:
    """What is wrong with one fitted DecisionTreeClassifier, or None."""
    from sklearn.tree import DecisionTreeClassifier
    from sklearn.tree._tree import Tree

    if type(estimator) is not DecisionTreeClassifier:
        return "not a decision tree"
    tree = getattr(estimator, "tree_", None)
    if type(tree) is not Tree:
        return "never fitted"
    for name, value in {"n_features_in_": n_features, "n_outputs_": 1,
                        "n_classes_": n_classes}.items():
        if getattr(estimator, name, None) != value:
            return f"its {name.strip('_')} is not {value}"
    if tree.n_features != n_features or tree.n_outputs != 1 or list(tree.n_classes) != [
        n_classes
    ]:
        return "its arrays are not shaped for this model"
    count = int(tree.node_count)
    if count < 1:
        return "no nodes"
    left, right = np.asarray(tree.children_left), np.asarray(tree.children_right)
    feature, value = np.asarray(tree.feature), np.asarray(tree.value)
    if value.shape != (count, 1, n_classes) or not np.isfinite(value).all() or (value < 0).any():
        return "its leaf values are not class shares"
    leaf = left == TREE_LEAF
    if not np.array_equal(leaf, right == TREE_LEAF):
        return "a node with one child"
    inner = ~leaf
    nodes = np.arange(count)
    if ((left[inner] <= nodes[inner]) | (right[inner] <= nodes[inner])
            | (left[inner] >= count) | (right[inner] >= count)).any():
        return "a child index out of range or pointing back (a cycle)"
    if ((feature[inner] < 0) | (feature[inner] >= n_features)).any():
        return "a feature index out of range"
    parents = np.bincount(np.concatenate([left[inner], right[inner]]), minlength=count)
    if parents[0] != 0 or (parents[1:] != 1).any():
        return "a node with no parent or with two"
    return None
