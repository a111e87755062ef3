"""Versioned schema migrations, one ordered list per backend.

Migrations are Python data rather than `.sql` files so they ship in every wheel without package-data
rules. A step is never edited once released: change the schema by appending a new version. The
runner records each applied version in `schema_version` in the same transaction as its statements,
so a step is applied exactly once even when two processes open the store together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step; its statements run in one transaction with the version bump."""

    version: int
    name: str
    statements: tuple[str, ...]


def check_sequence(migrations: Sequence[Migration]) -> None:
    """Raise ValueError unless versions are 1, 2, 3, ... in order (a gap is a lost migration)."""
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"migration versions must be 1..N in order, got {versions}")
