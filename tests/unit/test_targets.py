"""Queued REST targets are checked again before they go upstream, old decoded ones encoded first."""

from __future__ import annotations

import pytest

from gateway.errors import UnsafeTarget
from gateway.protocols import targets


@pytest.mark.parametrize(("stored", "sent"), [
    ("/rest/api/v1.3/campaigns/wel%20come/email", "/rest/api/v1.3/campaigns/wel%20come/email"),
    # queued by a gateway before migration 6: the decoded path, as httpx would have encoded it
    ("/rest/api/v1.3/campaigns/wel come/email", "/rest/api/v1.3/campaigns/wel%20come/email"),
    ("/rest/api/v1.3/campaigns/café/email?x=1", "/rest/api/v1.3/campaigns/caf%C3%A9/email?x=1"),
    ("/rest/api/v1.3/campaigns/50%off/email", "/rest/api/v1.3/campaigns/50%25off/email"),
    ("/rest/api/v1.3/campaigns/50%25off/email", "/rest/api/v1.3/campaigns/50%25off/email"),
])
def test_a_queued_target_is_sent_as_the_app_meant_it(stored: str, sent: str) -> None:
    assert targets.queued_target(stored) == sent


@pytest.mark.parametrize("stored", [
    "/rest/api/v1.3/../../admin/secret",
    "/rest/api/v1.3/campaigns/%2e%2e/x",
    "/rest/api/v1.3/campaigns/a%2fb/email",
    "/rest/api/v1.3/campaigns/%252e%252e/email",
    "/rest/api/v1.3/campaigns/welcome%c0%ae%c0%ae/email",  # overlong UTF-8 for "..", for lenient decoders
    "/rest/api/v1.3/campaigns/caf%E9/email",  # Latin-1, not UTF-8
    "/rest/api/v1.3/campaigns/a b/email?q=\u00e9",
])
def test_a_queued_target_that_could_leave_its_api_is_refused(stored: str) -> None:
    with pytest.raises(UnsafeTarget):
        targets.queued_target(stored)
