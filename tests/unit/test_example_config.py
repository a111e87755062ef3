"""`examples/gateway.yaml` shows every key the gateway reads (that it loads: tests/unit/test_config.py)."""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.config import Config

EXAMPLE = Path(__file__).parents[2] / "examples" / "gateway.yaml"


def key_paths(cls: type, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every leaf key of the config schema, as (section, ..., key)."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        inner = next((a for a in typing.get_args(hint) if a is not type(None)), hint)
        if typing.get_origin(inner) is list:
            inner = typing.get_args(inner)[0]
        if dataclasses.is_dataclass(inner):
            yield from key_paths(typing.cast(type, inner), (*prefix, field.name))
        else:
            yield (*prefix, field.name)


def section(text: str, name: str) -> str:
    """The lines of a top-level section (from `name:` to the next top-level key)."""
    match = re.search(rf"^{name}:.*?(?=^[a-z_]+:|\Z)", text, re.MULTILINE | re.DOTALL)
    assert match is not None, f"examples/gateway.yaml has no {name}: section"
    return match.group()


@pytest.mark.parametrize("path", [".".join(p) for p in key_paths(Config)])
def test_the_example_shows_every_key(path: str) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    *sections, key = path.split(".")
    where = section(text, sections[0]) if sections else text
    # a secret may be shown as key_env or key_file; a key may be shown commented out
    assert re.search(rf"(^|[\s{{#,]){key}(_env|_file)?:", where, re.MULTILINE), f"{path} is not in the example"

