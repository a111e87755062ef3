"""The vendor's WSDL imports its schemas by relative location: the gateway serves every document it references.

A client that loads the WSDL from the gateway resolves the imports against the gateway. Each test's
client may fetch only from the gateway: anything else it tries is refused and fails the test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
import zeep
from lxml import etree
from zeep.transports import Transport

from gateway_tools.simulator.soap import load_schema
from tests.integration.gateway.conftest import APP_PASSWORD, APP_USER, Deployment
from tests.support.raw_http import exchange, request_head
from tests.support.responsys_clients import merge_trigger_email_args as merge_args
from tests.support.responsys_clients import soap_session_header as header
from tests.support.servers import wait_until

WSDL = "/webservices/wsdl/ResponsysWS_Level1.wsdl"
XSD_DIR = "/webservices/services/ResponsysWSService/_resources_/xsd/"
TYPES, FAULTS = XSD_DIR + "ResponsysWSTypes_Schema.xsd", XSD_DIR + "ResponsysWSFaults_Schema.xsd"
XSD_NS = "http://www.w3.org/2001/XMLSchema"


class GatewayOnlySession(requests.Session):
    """A requests session that refuses any URL but the gateway's, and records each one it fetched."""

    def __init__(self, gateway_url: str) -> None:
        super().__init__()
        self.trust_env = False
        self.gateway_url = gateway_url
        self.fetched: list[str] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        url = request.url or ""
        if not url.startswith(self.gateway_url + "/"):
            raise AssertionError(f"the client fetched {url} from somewhere other than the gateway")
        self.fetched.append(f"{request.method} {url.removeprefix(self.gateway_url)}")
        return super().send(request, **kwargs)


@pytest.fixture
def gateway_only(ha_deployment: Deployment) -> Iterator[GatewayOnlySession]:
    with GatewayOnlySession(ha_deployment.url) as session:
        yield session


def soap_deliveries(deployment: Deployment, email: str) -> list[tuple[str, str]]:
    return [(account.name, d.operation) for account in (deployment.primary, deployment.failover)
            for d in account.deliveries() if d.protocol == "soap" and email in d.recipient]


def test_zeep_loads_wsdl_and_schemas_only_from_the_gateway_and_sends_through_invalidation_and_a_dead_primary(
        ha_deployment: Deployment, gateway_only: GatewayOnlySession) -> None:
    deployment = ha_deployment
    client = zeep.Client(deployment.url + WSDL,
                         transport=Transport(session=gateway_only, timeout=15, operation_timeout=15))
    assert {f"GET {WSDL}", f"GET {TYPES}", f"GET {FAULTS}"} <= set(gateway_only.fetched)
    assert client.service._binding_options["address"] == deployment.url + "/webservices/services/ResponsysWSService"
    session_id = client.service.login(username=APP_USER, password=APP_PASSWORD)

    assert client.service.mergeTriggerEmail(**merge_args("z1@example.com"), _soapheaders=header(session_id))[0].success
    deployment.primary.invalidate()  # the gateway's upstream session dies: the app must not notice
    assert client.service.mergeTriggerEmail(**merge_args("z2@example.com"), _soapheaders=header(session_id))[0].success
    deployment.primary.set_mode("refuse")  # the primary dies: the failover account's HA twin takes the send
    assert client.service.mergeTriggerEmail(**merge_args("z3@example.com"), _soapheaders=header(session_id))[0].success

    assert soap_deliveries(deployment, "z1@") == [("primary", "mergeTriggerEmail")]
    assert soap_deliveries(deployment, "z2@") == [("primary", "mergeTriggerEmail")]
    assert soap_deliveries(deployment, "z3@") == [("failover", "HaMergeTriggerEmail")]
    assert deployment.primary.stats()["soap_logins"] == 2  # the warm session, then one after the invalidation
    assert all(line.startswith(("GET /webservices/", "POST /webservices/services/ResponsysWSService"))
               for line in gateway_only.fetched)


def test_served_documents_name_no_account(ha_deployment: Deployment, gateway_only: GatewayOnlySession) -> None:
    for path in (WSDL, TYPES, FAULTS, "/webservices/services/ResponsysWSService?wsdl"):
        response = gateway_only.get(ha_deployment.url + path, timeout=10)
        assert response.status_code == 200, path
        etree.fromstring(response.content)  # well-formed
        assert b"primary.test" not in response.content and b"failover.test" not in response.content


def _schema_importing(*locations: str) -> bytes:
    """The packaged types schema with `xsd:import`s of these locations added."""
    root = etree.fromstring(load_schema("ResponsysWSTypes_Schema.xsd"))
    for index, location in enumerate(locations):
        node = etree.Element(f"{{{XSD_NS}}}import", namespace=f"urn:extra:{index}", schemaLocation=location)
        root.insert(index, node)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def _extra_schema(namespace: str, *imports: str) -> bytes:
    nodes = "".join(f'<xsd:import namespace="urn:more" schemaLocation="{location}"/>' for location in imports)
    return (f'<?xml version="1.0"?><xsd:schema xmlns:xsd="{XSD_NS}" targetNamespace="{namespace}">{nodes}'
            f'<xsd:element name="extra" type="xsd:string"/></xsd:schema>').encode()


def test_imports_of_imports_are_served_and_references_outside_the_service_documents_are_not_followed(
        make_deployment: Callable[..., Deployment]) -> None:
    deployment = make_deployment(start=False)
    for account in (deployment.primary, deployment.failover):
        origin = f"https://{'primary' if account is deployment.primary else 'failover'}.test:{account.port}"
        account.set_schema("ResponsysWSTypes_Schema.xsd", _schema_importing(
            "common/Extra.xsd",  # relative, in the tree: followed
            f"{origin}{XSD_DIR}Absolute.xsd",  # absolute to the account: rewritten to the gateway, followed
            "../../../../../../etc/Outside.xsd",  # resolves outside /webservices/: not followed
            "https://elsewhere.example/Other.xsd",  # another host: left as it is, not followed
        ))
        account.set_schema("common/Extra.xsd", _extra_schema("urn:extra:0", "../Deeper.xsd"))
        account.set_schema("Absolute.xsd", _extra_schema("urn:extra:1"))
        account.set_schema("Deeper.xsd", _extra_schema("urn:more"))
    deployment.start_gateway()
    expected = {WSDL, TYPES, FAULTS, XSD_DIR + "common/Extra.xsd", XSD_DIR + "Absolute.xsd", XSD_DIR + "Deeper.xsd"}
    with deployment.http() as http:
        assert http.get(WSDL).status_code == 200
        wait_until(lambda: set(deployment.runtime.documents.paths) == expected, timeout=10,
                   message="every document reachable from the WSDL known to the cache")
        for path in expected:
            assert http.get(path).status_code == 200, path
        types = http.get(TYPES).text
    assert f'schemaLocation="{deployment.url}{XSD_DIR}Absolute.xsd"' in types
    assert 'schemaLocation="https://elsewhere.example/Other.xsd"' in types
    targets = [t for _m, t in deployment.primary.received() + deployment.failover.received()]
    assert not [t for t in targets if b"Outside" in t or b"Other" in t]  # never asked for, of any account


@pytest.mark.parametrize("target", [
    b"/webservices/services/ResponsysWSService/_resources_/xsd/Unknown.xsd",
    b"/webservices/wsdl/Other.wsdl",
    b"/webservices/wsdl/../services/ResponsysWSService/_resources_/xsd/ResponsysWSTypes_Schema.xsd",
    b"/webservices/services/ResponsysWSService/_resources_/xsd/%2e%2e/%2e%2e/%2e%2e/%2e%2e/admin/status",
    b"/webservices/services/ResponsysWSService/_resources_/xsd/..%2f..%2f..%2fResponsysWS_Level1.wsdl",
    b"/webservices/services/ResponsysWSService/_resources_/xsd/%252e%252e/x.xsd",
])
def test_unknown_or_traversing_document_paths_are_refused_without_reaching_an_account(
        deployment: Deployment, target: bytes) -> None:
    with deployment.http() as http:
        assert http.get(WSDL).status_code == 200
    before = len(deployment.primary.received()) + len(deployment.failover.received())
    response = exchange(deployment.url, request_head("GET", target))
    assert response.status in (400, 404), (target, response)
    assert b"faultcode" in response.body  # the SOAP surface's shape
    after = deployment.primary.received() + deployment.failover.received()
    assert not [t for _m, t in after[before:] if b"Unknown" in t or b"Other" in t or b"%" in t or b".." in t]


def test_schemas_are_served_from_the_cache_not_fetched_per_get(deployment: Deployment) -> None:
    with deployment.http() as http:
        assert http.get(WSDL).status_code == 200
        wait_until(lambda: deployment.runtime.documents.serves(TYPES), timeout=10, message="the schemas known")
        bodies = {http.get(path).content for path in (TYPES, FAULTS) * 20}
    assert len(bodies) == 2
    fetched = deployment.primary.stats()["schema_fetches"] + deployment.failover.stats()["schema_fetches"]
    assert fetched == 2  # one fetch of each schema (the refresh interval is 900 s), none per GET


def test_a_document_longer_than_the_bound_is_not_served_and_the_rest_still_are(
        make_deployment: Callable[..., Deployment]) -> None:
    deployment = make_deployment(start=False)
    padding = b"<!-- " + b"x" * (5 * 1024 * 1024) + b" -->"  # past the 4 MiB bound (MAX_DOCUMENT_BYTES)
    huge = _extra_schema("urn:extra:0").replace(b"<xsd:element", padding + b"<xsd:element")
    for account in (deployment.primary, deployment.failover):
        account.set_schema("ResponsysWSTypes_Schema.xsd", _schema_importing("Huge.xsd"))
        account.set_schema("Huge.xsd", huge)
    deployment.start_gateway()
    with deployment.http() as http:
        assert http.get(WSDL).status_code == 200
        wait_until(lambda: deployment.runtime.documents.serves(XSD_DIR + "Huge.xsd"), timeout=10,
                   message="the huge schema's reference learned")
        response = http.get(XSD_DIR + "Huge.xsd")  # waits for the fetch under way, if any
        assert response.status_code == 503 and b"faultcode" in response.content
        assert len(response.content) < 4096
        assert http.get(TYPES).status_code == 200
