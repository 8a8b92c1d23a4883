"""Copies of the project's lab.yml with some values changed, for tests of labctl."""

from __future__ import annotations

from pathlib import Path

import yaml
from labctl.config import find_config

REPO = Path(__file__).resolve().parent.parent


def lab_yml_copy(tmp_path: Path, **changes: object) -> Path:
    """A copy of lab.yml under ``tmp_path/lab/``; ``a__b=value`` sets key ``a.b``."""
    data = yaml.safe_load(find_config(REPO).read_text())
    for key, value in changes.items():
        node = data
        *parents, last = key.split("__")
        for part in parents:
            node = node[part]
        node[last] = value
    path = tmp_path / "lab" / "lab.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path
