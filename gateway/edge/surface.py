"""What every app-facing route needs from the running gateway, handed over when the routes are built.

Routes never look the gateway up (`request.app.state`): `gateway.edge.app.build_app` builds each
surface with the parts it uses, so what a handler can reach is what its constructor was given.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from gateway.core.reports import FailureReports
from gateway.edge.app_certificates import AppCertificates
from gateway.edge.bodies import read_body
from gateway.edge.clients import Credentials
from gateway.telemetry.otel import Metrics


@dataclass(frozen=True, slots=True, kw_only=True)
class Surface:
    public_url: str
    credentials: Credentials
    certificates: AppCertificates
    metrics: Metrics
    reports: FailureReports
    max_body_bytes: int  # requests.max_body_bytes
    body_timeout: float  # requests.body_timeout

    async def read_body(self, request: Request, *, limit: int | None = None) -> bytes:
        """The request body through the one bounded reader (gateway.edge.bodies): `limit` bytes, default
        `requests.max_body_bytes`, within `requests.body_timeout`; raises BodyRefused otherwise."""
        return await read_body(request, limit=self.max_body_bytes if limit is None else limit,
                               within=self.body_timeout)
