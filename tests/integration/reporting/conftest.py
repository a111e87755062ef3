"""Failure reporting is watched through an SMS deployment (`tests.support.sms`): its failures are the richest."""

from __future__ import annotations

from tests.support.sms import make_sms, sms

__all__ = ["make_sms", "sms"]  # this folder's fixtures
