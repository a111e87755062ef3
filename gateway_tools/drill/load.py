"""The drill's app clients: a steady stream of sends through the gateway, each to its own recipient.

Every send names a recipient nobody else uses, so the simulated accounts' deliveries tell, per send,
whether it arrived once, twice or never. Most sends carry an `Idempotency-Key`; every `UNKEYED_EVERY`th
does not. REST clients post `triggerEmail` JSON; SOAP clients post `mergeTriggerEmail` envelopes, as
an app with a generated SOAP stub would, after logging in to the gateway.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal
from xml.sax.saxutils import escape

import httpx

from gateway.protocols import responsys_soap as soap
from gateway.protocols.xml import parse_untrusted

UNKEYED_EVERY = 4  # one send in four goes without an Idempotency-Key
SEND_PATH = "/rest/api/v1.3/campaigns/DRILL_WELCOME/email"
RECIPIENT_DOMAIN = "drill.example"


@dataclass(frozen=True, slots=True)
class SendRecord:
    """One app send as the app saw it; `status` None means no HTTP answer reached the app."""

    phase: int
    protocol: Literal["rest", "soap"]
    keyed: bool
    recipient: str  # the simulators' recipient key, e.g. "EMAIL_ADDRESS_:rest1-17@drill.example"
    latency: float  # seconds
    status: int | None
    detail: str = ""

    @property
    def accepted(self) -> bool:
        """The gateway took responsibility for the send: answered by an account (200) or queued (202)."""
        return self.status in (200, 202)

    @property
    def queued(self) -> bool:
        return self.status == 202


def recipient_key(email: str) -> str:
    """How a simulated account records the recipient of a send (see `simulator.state.recipient_key`)."""
    return f"EMAIL_ADDRESS_:{email.lower()}"


class AppClient:
    """One app sending in a loop until told to stop; REST or SOAP."""

    def __init__(self, *, name: str, protocol: Literal["rest", "soap"], base_url: str, user: str, password: str,
                 phase: Callable[[], int], records: list[SendRecord], pace: float) -> None:
        self.name = name
        self.protocol = protocol
        self._user, self._password = user, password
        self._phase = phase
        self._records = records
        self._pace = pace
        self._credential = ""
        # A generous client timeout: the gateway answers within its deadline, or queues.
        self._http = httpx.AsyncClient(base_url=base_url, timeout=30.0, trust_env=False)
        self._seq = 0

    async def aclose(self) -> None:
        await self._http.aclose()

    async def login(self) -> None:
        """Log in to the gateway (never upstream): a REST token or a SOAP session id."""
        if self.protocol == "rest":
            response = await self._http.post("/rest/api/v1.3/auth/token", data={
                "user_name": self._user, "password": self._password, "auth_type": "password"})
            response.raise_for_status()
            self._credential = str(response.json()["authToken"])
            return
        response = await self._http.post(soap.SERVICE_PATH, content=_login_envelope(self._user, self._password),
                                         headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'})
        response.raise_for_status()
        session = parse_untrusted(response.content).findtext(f".//{{{soap.WS_NS}}}sessionId")
        if not session:
            raise RuntimeError(f"the gateway's SOAP login answered no sessionId: {response.text[:200]}")
        self._credential = session

    async def run(self, stop: asyncio.Event) -> None:
        """Send, pause `pace` seconds, repeat until `stop` is set (a send in flight is finished)."""
        while not stop.is_set():
            self._records.append(await self.send_one())
            try:
                await asyncio.wait_for(stop.wait(), timeout=self._pace)
            except TimeoutError:
                pass

    async def send_one(self) -> SendRecord:
        self._seq += 1
        email = f"{self.name}-{self._seq}@{RECIPIENT_DOMAIN}"
        keyed = self._seq % UNKEYED_EVERY != 0
        headers = {"Idempotency-Key": f"drill-{self.name}-{self._seq}"} if keyed else {}
        phase = self._phase()
        started = time.perf_counter()
        status: int | None
        try:
            response = await self._post(email, headers)
            status, detail = response.status_code, _detail(response)
        except httpx.HTTPError as exc:
            status, detail = None, f"{type(exc).__name__}: {exc}"
        return SendRecord(phase=phase, protocol=self.protocol, keyed=keyed, recipient=recipient_key(email),
                          latency=time.perf_counter() - started, status=status, detail=detail)

    async def _post(self, email: str, headers: dict[str, str]) -> httpx.Response:
        if self.protocol == "rest":
            return await self._http.post(SEND_PATH, content=_trigger_email_json(email), headers={
                **headers, "Authorization": self._credential, "Content-Type": "application/json"})
        return await self._http.post(soap.SERVICE_PATH, content=_merge_trigger_envelope(self._credential, email),
                                     headers={**headers, "Content-Type": "text/xml; charset=utf-8",
                                              "SOAPAction": '""'})


def _detail(response: httpx.Response) -> str:
    if response.status_code in (200, 202):
        return ""
    if response.headers.get("content-type", "").startswith("application/json"):
        try:
            code = json.loads(response.content).get("errorCode")
        except (ValueError, AttributeError):
            code = None
        return f"HTTP {response.status_code} {code or response.text[:120]}"
    return f"HTTP {response.status_code} {soap.fault_code(response.content) or response.text[:120]}"


def _trigger_email_json(email: str) -> bytes:
    return (b'{"recipientData":[{"recipient":{"emailAddress":"' + email.encode() +
            b'","listName":{"folderName":"Drill","objectName":"CONTACTS"},"emailFormat":"HTML_FORMAT"},'
            b'"optionalData":[{"name":"ORDER","value":"1"}]}]}')


_ENVELOPE = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    f'<soapenv:Envelope xmlns:soapenv="{soap.SOAP_ENV}" xmlns:ws="{soap.WS_NS}">'
    '{header}<soapenv:Body>{body}</soapenv:Body></soapenv:Envelope>'
)


def _login_envelope(user: str, password: str) -> bytes:
    body = (f"<ws:login><ws:username>{escape(user)}</ws:username>"
            f"<ws:password>{escape(password)}</ws:password></ws:login>")
    return _ENVELOPE.format(header="<soapenv:Header/>", body=body).encode()


def _merge_trigger_envelope(session_id: str, email: str) -> bytes:
    header = (f"<soapenv:Header><ws:SessionHeader><ws:sessionId>{escape(session_id)}</ws:sessionId>"
              "</ws:SessionHeader></soapenv:Header>")
    body = (
        "<ws:mergeTriggerEmail>"
        f"<ws:recordData><ws:fieldNames>EMAIL_ADDRESS_</ws:fieldNames>"
        f"<ws:records><ws:fieldValues>{escape(email)}</ws:fieldValues></ws:records></ws:recordData>"
        "<ws:mergeRule><ws:insertOnNoMatch>true</ws:insertOnNoMatch><ws:updateOnMatch>REPLACE_ALL</ws:updateOnMatch>"
        "<ws:matchColumnName1>EMAIL_ADDRESS_</ws:matchColumnName1><ws:matchOperator>NONE</ws:matchOperator>"
        "<ws:defaultPermissionStatus>OPTIN</ws:defaultPermissionStatus></ws:mergeRule>"
        "<ws:campaign><ws:folderName>Drill</ws:folderName><ws:objectName>DRILL_WELCOME</ws:objectName></ws:campaign>"
        "<ws:triggerData><ws:optionalData><ws:name>ORDER</ws:name><ws:value>1</ws:value></ws:optionalData>"
        "</ws:triggerData></ws:mergeTriggerEmail>"
    )
    return _ENVELOPE.format(header=header, body=body).encode()
