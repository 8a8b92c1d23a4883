"""The Ansible roles stand on their own: literal defaults, lab.yml mapped in group_vars, and
a README that documents every variable with the usual sections."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from jinja2 import Environment

REPO = Path(__file__).resolve().parent.parent
ROLES = sorted(p.name for p in (REPO / "ansible" / "roles").iterdir() if p.is_dir())
LAB = yaml.safe_load((REPO / "lab" / "lab.yml").read_text())
MAPPING = yaml.safe_load((REPO / "ansible" / "group_vars" / "all" / "roles.yml").read_text())
SECTIONS = ("## Requirements", "## Role Variables", "## Dependencies", "## Example Playbook")


def defaults(role: str) -> dict[str, object]:
    return yaml.safe_load((REPO / "ansible" / "roles" / role / "defaults" / "main.yml")
                          .read_text()) or {}


def test_every_role_is_checked() -> None:
    assert {"lab_base", "gateway", "agent", "synthetic_apps"} <= set(ROLES)


@pytest.mark.parametrize("role", ROLES)
def test_defaults_do_not_read_lab_yml(role: str) -> None:
    """A role used outside this project has no lab.yml: its defaults name no lab.yml key."""
    sections = "|".join(map(re.escape, LAB))
    for name, value in defaults(role).items():
        assert not re.search(rf"\{{\{{\s*({sections})\.", str(value)), name


def test_group_vars_map_lab_yml_onto_the_defaults_it_replaces() -> None:
    """Each mapped variable is a role default, and lab.yml's value equals that literal
    default, so the roles behave the same with or without the mapping."""
    every_default = {k: v for role in ROLES for k, v in defaults(role).items()}
    env = Environment(autoescape=False)
    for name, template in MAPPING.items():
        assert name in every_default, f"{name} is mapped but no role has it"
        rendered = env.from_string(str(template)).render(**LAB)
        expected = every_default[name]
        assert yaml.safe_load(rendered) == expected or rendered == str(expected), name


@pytest.mark.parametrize("role", ROLES)
def test_readme_has_the_usual_sections_and_every_variable(role: str) -> None:
    readme = (REPO / "ansible" / "roles" / role / "README.md").read_text()
    positions = [readme.find(section) for section in SECTIONS]
    assert all(p >= 0 for p in positions), f"{role}: missing {SECTIONS}"
    assert positions == sorted(positions), f"{role}: sections out of order"
    variables = readme[positions[1]:positions[2]]
    for name, value in defaults(role).items():
        assert f"`{name}`" in variables, f"{role}: {name} is not documented"
        if isinstance(value, int | float | str) and not isinstance(value, bool) and value != "" \
                and "{{" not in str(value):
            row = next(line for line in variables.splitlines() if f"`{name}`" in line)
            assert str(value) in row, f"{role}: {name}'s default is not {value}"
