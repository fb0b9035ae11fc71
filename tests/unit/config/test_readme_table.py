"""README's configuration table and `service.config` state the same variables and defaults."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from service.config import Settings, load_settings, setting_variables

README = Path(__file__).resolve().parents[3] / "README.md"

READ_ELSEWHERE = {"OTEL_EXPORTER_OTLP_ENDPOINT": "unset"}
"""In the table but read by `service.telemetry` (OpenTelemetry's own variable), not `load_settings`."""
COMPUTED_DEFAULTS = {"PII_ACTIVE_KEY_ID": "last listed"}
"""Defaults `load_settings` derives from another variable rather than a field default."""
PROSE_ONLY = {"SERVICE_CONFIG_FILE"}
"""Described in the paragraph above the table: it names the file, it is not a setting."""


class RecordingEnv(Mapping[str, str]):
    """An empty environment that remembers every name asked for."""

    def __init__(self) -> None:
        self.asked: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.asked.add(name)
        raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        self.asked.add(str(name))
        return False

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def table(text: str) -> dict[str, str]:
    """Variable -> default cell of the configuration table (`A` / `B` rows split in two)."""
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        names = re.findall(r"`([A-Z0-9_]+)`", cells[0])
        defaults = [d.strip().strip("`") for d in cells[1].split(" / ")]
        if len(defaults) == 1:
            defaults *= len(names)
        assert len(defaults) == len(names), line
        for name, default in zip(names, defaults, strict=True):
            assert name not in rows, f"{name} is in the table twice"
            rows[name] = default
    return rows


def code_defaults() -> dict[str, str]:
    """Variable -> default, as the README writes it, from the settings dataclasses' fields."""
    found: dict[str, str] = {}

    def walk(cls: type) -> None:
        for f in dataclasses.fields(cls):
            if f.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(
                f.default_factory
            ):
                walk(f.default_factory)
            elif "env" in f.metadata:
                found[f.metadata["env"]] = COMPUTED_DEFAULTS.get(
                    f.metadata["env"], _written(f.default)
                )

    walk(Settings)
    return found


def _written(value: object) -> str:
    if value is None or value == ():
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def test_load_settings_reads_exactly_the_fields_that_name_a_variable() -> None:
    env = RecordingEnv()
    load_settings(env)
    assert env.asked == set(code_defaults()) | PROSE_ONLY
    assert env.asked == setting_variables()


def test_readme_table_lists_every_variable_and_no_other() -> None:
    documented = table(README.read_text())
    expected = set(code_defaults()) | set(READ_ELSEWHERE)
    assert sorted(expected - set(documented)) == [], "missing from README's table"
    assert sorted(set(documented) - expected) == [], "in README's table but never read"


def test_readme_table_states_the_code_defaults() -> None:
    documented = table(README.read_text())
    expected = {**code_defaults(), **READ_ELSEWHERE}
    wrong = {name: (documented[name], expected[name]) for name in expected if name in documented}
    assert {k: v for k, v in wrong.items() if v[0] != v[1]} == {}


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ("| `GRPC_LISTEN` | `127.0.0.1:50052` | x |", "default"),
        ("| `NOT_A_SETTING` | unset | x |", "extra"),
    ],
)
def test_a_table_that_drifted_is_caught(row: str, problem: str) -> None:
    text = README.read_text()
    original = next(line for line in text.splitlines() if line.startswith("| `GRPC_LISTEN` |"))
    drifted = text.replace(original, row if problem == "default" else original + "\n" + row)
    documented = table(drifted)
    expected = {**code_defaults(), **READ_ELSEWHERE}
    if problem == "default":
        assert documented["GRPC_LISTEN"] != expected["GRPC_LISTEN"]
    else:
        assert set(documented) - set(expected) == {"NOT_A_SETTING"}
