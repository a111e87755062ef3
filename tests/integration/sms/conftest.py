"""SMS on loopback: the deployment and its fixtures live in `tests.support.sms`."""

from __future__ import annotations

from tests.support.sms import make_sms, sms

__all__ = ["make_sms", "sms"]  # this folder's fixtures
