"""Responsys SOAP as a dialect of the forward loop, and the service's documents (WSDL and schemas).

Each account is called with one of its own pooled sessions (`gateway.upstreams.sessions.SoapSessions`:
one call at a time on each, because the vendor may invalidate a session used from two places at once).
The app's envelope is re-serialised with that session; an account set for the AFTM HA operations gets
the HA twin of a trigger operation, and its answer is renamed back to the operation the app called.

The WSDL and every document it references are served from a `DocumentCache` the runtime builds on
`SoapDocuments`: fetched from the first account that answers, every `soap:address` and absolute
reference to the account pointing at the gateway. Only documents under `/webservices/` on the account
itself are followed (`served_references`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import httpx

from gateway.config import Account
from gateway.core.loop import Call, Lease
from gateway.errors import BadEnvelope, UnsafeTarget, UpstreamError
from gateway.protocols import responsys_soap as soap
from gateway.protocols.targets import checked_path
from gateway.upstreams.cluster import Cluster
from gateway.upstreams.sessions import SoapSessions, SoapSlot
from gateway.upstreams.upstream import Upstream
from policies.outcome import Outcome

log = logging.getLogger("aftm.soap")

XML = "text/xml; charset=utf-8"


class SoapDialect:
    """SOAP's answers to the forward loop: pooled sessions, the rewritten envelope, verdicts."""

    def __init__(self, sessions: SoapSessions) -> None:
        self._sessions = sessions

    def serves(self, account: Account) -> bool:
        """A REST-only account (no `soap_url`) is passed over, never counted as failing."""
        return account.soap_url is not None

    @contextlib.asynccontextmanager
    async def session(self, account: Account, *, within: float) -> AsyncIterator[Lease]:
        async with self._sessions.lease(account, within=within) as slot:
            yield slot

    def upstream_request(self, account: Account, call: Call, lease: Lease) -> httpx.Request:
        assert isinstance(lease, SoapSlot) and lease.session_id is not None and account.soap_url is not None
        envelope = soap.parse_envelope(call.body)
        operation = soap.HA_OPERATIONS.get(envelope.operation) if account.soap_ha_operations else None
        # The envelope is re-serialised as UTF-8 whatever the app wrote, so its Content-Type is the
        # gateway's: the app's (say ISO-8859-1, or one queued by an older gateway) would mislabel it.
        headers = [(k, v) for k, v in call.headers if k.lower() != "content-type"] + [("content-type", XML)]
        if operation is not None:  # the SOAPAction names the operation sent, never the one renamed away
            headers = [(k, soap.soap_action_for(v, app_operation=envelope.operation, operation=operation)
                        if k.lower() == "soapaction" else v) for k, v in headers]
        return httpx.Request("POST", account.soap_url, headers=headers,
                             content=envelope.with_session(lease.session_id, operation=operation))

    def classify(self, response: httpx.Response, retry_after: float | None) -> Outcome:
        return soap.classify(response.status_code, response.content, retry_after=retry_after)

    def answer(self, account: Account, call: Call, response: httpx.Response) -> httpx.Response:
        """An HA twin's answer is renamed back to the operation the app called."""
        if not account.soap_ha_operations:
            return response
        operation = soap.parse_envelope(call.body).operation
        twin = soap.HA_OPERATIONS.get(operation)
        if twin is None or response.status_code != 200:
            return response
        body = soap.rename_response(response.content, upstream_operation=twin, app_operation=operation)
        content_type = response.headers.get("content-type", XML)
        return httpx.Response(response.status_code, headers={"content-type": content_type}, content=body)



# The documents the cache starts from; the rest it learns from their references (served_references).
ROOT_DOCUMENTS = (soap.WSDL_PATH,)
DOCUMENT_TREE = "/webservices/"
# Each fetched document is read up to this many raw bytes, within this many seconds; a longer or slower
# one is not served (the last good copy stays). The vendor's largest, the types schema, is about 200 KB;
# 32 documents at the bound keep the cache's worst case at 128 MiB of memory.
MAX_DOCUMENT_BYTES = 4 * 1024 * 1024
DOCUMENT_FETCH_SECONDS = 30.0


def served_references(public_url: str, path: str, body: bytes) -> list[str]:
    """The paths a served document at `path` refers to that the gateway fetches and serves too.

    References resolve against the document's URL at the gateway (the account's absolute ones were
    rewritten to it); followed only when they land on the gateway, under `/webservices/`, as a plain
    path that names what it seems (no dot segments or structural escapes, no query). Anything else (a
    W3C schema, another host) is left for the client to fetch as the vendor's document says.
    """
    base = public_url.rstrip("/")
    paths = []
    for url in soap.document_references(body, base + path):
        target = url[len(base):] if url.startswith(base + "/") and soap.same_origin(url, base) else None
        try:
            if target is None or "?" in target or not target.startswith(DOCUMENT_TREE):
                raise UnsafeTarget("outside the service's documents")
            paths.append(checked_path(target.encode("ascii")))
        except (UnsafeTarget, UnicodeEncodeError) as exc:
            log.warning("not following a document reference", extra={"document": path, "reason": str(exc)})
    return paths


def _fit_to_serve(public_url: str, account: Account, body: bytes) -> bytes:
    assert account.soap_url is not None
    base = public_url.rstrip("/")

    def relocate(location: str) -> str:
        if not soap.same_origin(location, account.soap_url or ""):
            return location
        parts = httpx.URL(location)
        return base + parts.raw_path.decode("ascii")

    return soap.rewrite_document(body, service_url=base + soap.SERVICE_PATH, relocate=relocate)


class SoapDocuments:
    """The WSDL and the documents it references, fetched for `gateway.upstreams.documents.DocumentCache`."""

    def __init__(self, *, public_url: str, accounts: Cluster[Account], upstream: Upstream) -> None:
        self._public_url = public_url
        self._accounts = accounts
        self._upstream = upstream

    @property
    def roots(self) -> tuple[str, ...]:
        """The documents the cache starts from: the WSDL, when any account speaks SOAP."""
        return ROOT_DOCUMENTS if any(a.soap_url for a in self._accounts.members) else ()

    def references(self, path: str, body: bytes) -> list[str]:
        return served_references(self._public_url, path, body)

    async def fetch(self, path: str) -> bytes | None:
        return await fetch_document(self._public_url, self._accounts, self._upstream, path)


async def fetch_document(public_url: str, accounts: Cluster[Account], upstream: Upstream,
                         path: str) -> bytes | None:
    """The document at `path` from the first account that serves it, made fit to serve; None if none does."""
    for account in accounts.candidates():
        if account.soap_url is None:
            continue
        url = httpx.URL(account.soap_url).copy_with(path=path, query=None)
        try:  # bounded: an account (or whoever answers for it) may send an endless or huge document
            response = await upstream.send(httpx.Request("GET", url), max_answer_bytes=MAX_DOCUMENT_BYTES,
                                           total_timeout=DOCUMENT_FETCH_SECONDS)
        except UpstreamError:
            continue
        encoding = str(response.extensions.get("raw_content_encoding") or "identity").strip().lower()
        if response.extensions.get("answer_truncated") or encoding != "identity":
            # Too long, or compressed (asked for identity; never inflated: a small answer could be a bomb).
            log.warning("not serving a vendor document: too long or compressed",
                        extra={"path": path, "account": account.name, "max_bytes": MAX_DOCUMENT_BYTES})
            continue
        if response.status_code == 200:
            try:
                return _fit_to_serve(public_url, account, response.content)
            except BadEnvelope:
                continue
    return None
