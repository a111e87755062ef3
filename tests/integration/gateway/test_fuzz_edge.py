"""Odd headers and content types on every route: a 4xx (or the route's own answer), never a 500."""

from __future__ import annotations

from tests.integration.gateway.conftest import ADMIN_TOKEN, EMAIL_PATH, Deployment
from tests.support.raw_http import exchange, request_head

SOAP_PATH = "/webservices/services/ResponsysWSService"
ROUTES = ["/healthz", "/readyz", "/metrics", "/admin/status", "/admin/override", "/rest/api/v1.3/auth/token",
          EMAIL_PATH, "/rest/haApi/v1.3/lists/x/members", SOAP_PATH, "/webservices/wsdl/ResponsysWS_Level1.wsdl",
          "/sms/v1/messages", "/sms/v1/messages/abc", "/sms/v1/receipts/a/b", "/portal", "/portal/login",
          "/portal/logout", "/portal/failures", "/portal/failures.csv", "/portal/failures/1", "/api/failures",
          "/nowhere"]
CONTENT_TYPES = ["", "application/json; charset=\xff\xfe", "x" * 8000, "multipart/form-data",
                 "application/x-www-form-urlencoded; boundary=;;;", "text/xml; charset=ebcdic"]


def test_absurd_content_types_and_credentials_on_every_route_are_never_a_server_error(
        deployment: Deployment) -> None:
    token = deployment.rest_token()
    for path in ROUTES:
        for content_type in CONTENT_TYPES:
            for auth in (token, f"Bearer {ADMIN_TOKEN}", "Basic YXBwOmFwcC1wYXNzd29yZA==", "\xff\xfe"):
                response = exchange(deployment.url, request_head("POST", path.encode(), [
                    ("Authorization", auth), ("Content-Type", content_type), ("Content-Length", "2")]) + b"{}")
                assert response.status < 500, f"{path} {content_type[:40]!r}: {response.status} {response.text[:200]}"


def test_non_ascii_header_the_gateway_would_forward_is_a_vendor_400(deployment: Deployment) -> None:
    token = deployment.rest_token()
    rest = exchange(deployment.url, request_head("POST", EMAIL_PATH.encode(), [
        ("Authorization", token), ("Content-Type", "application/json"), ("Idempotency-Key", "k\xe9y"),
        ("Content-Length", "2")]) + b"{}")
    assert rest.status == 400 and b"INVALID_REQUEST" in rest.body, rest
    assert deployment.primary.forwarded() == []
