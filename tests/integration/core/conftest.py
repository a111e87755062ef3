"""The core's background workers run against a real store of every backend (`tests.support.stores`)."""

from __future__ import annotations

from tests.support.stores import clock, db_path, store, store_url

__all__ = ["clock", "db_path", "store", "store_url"]  # this folder's fixtures
