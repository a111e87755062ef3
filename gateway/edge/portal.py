"""The failure portal (`/portal/failures`, server-rendered) and its JSON twin (`/api/failures`).

Who sees what: a client (an app from `clients`, with its own password) sees only its own failures;
the operator (user `admin`, the admin token as password) sees every client's and may filter by
client. The portal keeps a signed session cookie (HttpOnly, SameSite=Strict); the JSON API takes
HTTP Basic with the same credentials. Every value on the page is escaped by the templates (error
texts come from outside); CSV cells that a spreadsheet would run as a formula are quoted.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from gateway.edge.bodies import FORM_LIMIT
from gateway.edge.clients import ADMIN_PRINCIPAL, basic_credentials, source_of
from gateway.edge.surface import Surface
from gateway.errors import BadInput, StoreError, TooManyFailedLogins
from gateway.protocols.inputs import bounded_int, finite_float
from gateway.reporting.codes import FailCode, flag_names
from gateway.reporting.fdxml import fail_date
from gateway.store import FailureQuery, FailureRecord, Store

COOKIE = "aftm_portal"
PAGE_SIZE = 50
CSV_LIMIT = 10_000
DEFAULT_WINDOW = 86_400.0  # the page shows the last 24 hours unless a range is given
_TEMPLATES = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                         autoescape=select_autoescape(default=True, default_for_string=True))
# Distinct colours for the chart, by flag (lowest set flag of an entry's code).
COLOURS = {FailCode.REQUEST: "#8c564b", FailCode.NOT_SENT_DIRECT: "#d62728", FailCode.NOT_SENT_BULK: "#ff9896",
           FailCode.POST_OUT: "#9467bd", FailCode.VOICE: "#c5b0d5", FailCode.CARRIER_SUBMISSION_DIRECT: "#1f77b4",
           FailCode.CARRIER_SUBMISSION_REDIRECT: "#aec7e8", FailCode.CARRIER_SUBMISSION_QUEUED: "#ff7f0e",
           FailCode.CARRIER_SUBMISSION_BULK: "#ffbb78", FailCode.CARRIER_DEFERRED: "#bcbd22",
           FailCode.CARRIER: "#2ca02c", FailCode.OTHER: "#7f7f7f"}


@dataclass(frozen=True)
class Viewer:
    principal: str  # a client's user_name, or ADMIN_PRINCIPAL

    @property
    def is_admin(self) -> bool:
        return self.principal == ADMIN_PRINCIPAL


def _render(name: str, status: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(_TEMPLATES.get_template(name).render(**context), status_code=status,
                        headers={"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                                                            "img-src 'self'; form-action 'self'",
                                 "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"})


def _safe_next(target: str | None) -> str:
    """Only a path on this portal: never an open redirect to another site."""
    if target and target.startswith("/portal/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/portal/failures"


# --- filters --------------------------------------------------------------------------------------


BadFilter = BadInput  # a filter the portal will not run; its message is shown to the user

MAX_EPOCH = 253_402_300_799.0  # 9999-12-31T23:59:59Z: the last moment datetime can show
MAX_PAGE = 1_000_000
MAX_CODE = 2**31 - 1
MAX_ENTRY_ID = 2**63 - 1  # the store's integer ids; a longer number in the URL names no entry


def _time(value: str | None) -> float | None:
    """`2026-11-25T13:05` (the form's datetime-local, read as UTC) or epoch seconds."""
    if not value:
        return None
    if "-" not in value[1:]:  # epoch seconds (a date has a dash after its year)
        return finite_float(value, name="a time in epoch seconds", low=0.0, high=MAX_EPOCH)
    try:
        return datetime.fromisoformat(value).replace(tzinfo=UTC).timestamp()
    except (ValueError, OverflowError):
        raise BadFilter(f"not a time: {value[:40]!r} (use YYYY-MM-DDTHH:MM, UTC)") from None


def query_from(request: Request, viewer: Viewer, *, limit: int, now: float) -> FailureQuery:
    params = request.query_params
    codes = [bounded_int(c, name="code", low=0, high=MAX_CODE) for c in params.getlist("code") if c]
    page = bounded_int(params.get("page") or "1", name="page", low=1, high=MAX_PAGE)
    since, until = _time(params.get("from")), _time(params.get("to"))
    if since is not None and until is not None and since > until:
        raise BadFilter("from must not be later than to")
    if since is None and until is None:
        since = now - DEFAULT_WINDOW
    mask = 0
    for code in codes:
        mask |= code
    client = params.get("client") or None
    if not viewer.is_admin:
        client = viewer.principal  # a client sees only its own failures, whatever it asks for
    return FailureQuery(since=since, until=until, code_mask=mask, client=client,
                        account=params.get("account") or None, recipient=params.get("recipient") or None,
                        limit=limit, offset=(page - 1) * limit)


def entry_view(record: FailureRecord) -> dict[str, Any]:
    return {"id": record.id, "client": record.client, "account": record.account or "", "keyword": record.keyword,
            "code": record.code, "flags": flag_names(record.code), "numbers": record.numbers,
            "send_id": record.send_id, "kind": record.kind,
            "primary_date": fail_date(record.primary_at), "primary_error": record.primary_error,
            "secondary_date": fail_date(record.secondary_at), "secondary_error": record.secondary_error}


def entry_json(record: FailureRecord) -> dict[str, Any]:
    return {"id": record.id, "client": record.client, "account": record.account, "keyword": record.keyword,
            "failCode": record.code, "flags": flag_names(record.code), "kind": record.kind,
            "numbers": record.numbers, "sendId": record.send_id,
            "primaryFailDate": _iso(record.primary_at), "primaryError": record.primary_error,
            "secondaryFailDate": _iso(record.secondary_at), "secondaryError": record.secondary_error}


def _iso(epoch: float | None) -> str | None:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds") if epoch is not None else None


def chart(hours: list[tuple[float, int, int]], since: float, until: float) -> dict[str, Any]:
    """Bars per hour, stacked by the lowest flag of each code, as SVG rectangles."""
    first, last = math.floor(since / 3600) * 3600, math.floor(until / 3600) * 3600
    slots = int((last - first) // 3600) + 1
    if slots > 24 * 31:  # a month of hours at most: wider ranges show their last month
        first, slots = last - (24 * 31 - 1) * 3600, 24 * 31
    stacks: dict[int, dict[FailCode, int]] = {}
    for hour, code, count in hours:
        slot = int((hour - first) // 3600)
        if 0 <= slot < slots:
            flag = next((f for f in FailCode if code & f.value), FailCode.OTHER)
            stacks.setdefault(slot, {}).setdefault(flag, 0)
            stacks[slot][flag] += count
    peak = max((sum(s.values()) for s in stacks.values()), default=0)
    width, height = 720, 120
    bar = width / slots
    rects = []
    for slot, stack in sorted(stacks.items()):
        y = float(height)
        for flag, count in sorted(stack.items(), key=lambda item: item[0].value):
            h = height * count / peak
            y -= h
            rects.append({"x": round(slot * bar, 2), "y": round(y, 2), "w": round(max(bar - 1, 1), 2),
                          "h": round(h, 2), "colour": COLOURS[flag],
                          "title": f"{fail_date(first + slot * 3600)}: {count} {flag.name}"})
    legend = sorted({(f.name or "", COLOURS[f]) for s in stacks.values() for f in s})
    return {"width": width, "height": height, "rects": rects, "peak": peak, "legend": legend,
            "start": fail_date(first), "end": fail_date(first + slots * 3600)}


# --- pages ----------------------------------------------------------------------------------------


def _login_redirect(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/portal/login?next={quote(target, safe='')}", status_code=303)


def _cell(value: object) -> str:
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


# --- the routes -----------------------------------------------------------------------------------


class Portal:
    """The failure portal and its JSON twin, given the credentials and the store they read."""

    def __init__(self, *, surface: Surface, store: Callable[[], Store]) -> None:
        self._surface = surface
        self._store = store

    def routes(self) -> list[Route]:
        return [
            Route("/portal", self._to_failures, methods=["GET"]),
            Route("/portal/login", self.login_page, methods=["GET"]),
            Route("/portal/login", self.login, methods=["POST"]),
            Route("/portal/logout", self.logout, methods=["POST"]),
            Route("/portal/failures", self.failures_page, methods=["GET"]),
            Route("/portal/failures.csv", self.failures_csv, methods=["GET"]),
            Route("/portal/failures/{entry_id:int}", self.failure_page, methods=["GET"]),
            Route("/api/failures", self.failures_api, methods=["GET"]),
        ]

    # --- identity ---------------------------------------------------------------------------------

    async def _check(self, request: Request, user: str, password: str) -> Viewer | None:
        """The viewer these credentials log in as, or None; raises TooManyFailedLogins while the source must wait."""
        credentials, source = self._surface.credentials, source_of(request)
        if credentials.admin_login(user, password, source=source):
            return Viewer(ADMIN_PRINCIPAL)
        if await credentials.login(user, password, source=source):
            return Viewer(user)
        return None

    async def _viewer(self, request: Request) -> Viewer | None:
        try:
            identity = await self._surface.credentials.verify(request.cookies.get(COOKIE), "portal")
        except StoreError:  # fail closed: a cookie logged out on another replica must not get in meanwhile
            raise HTTPException(503, "The gateway cannot check portal sessions right now; try again shortly.") from None
        return Viewer(identity.client) if identity is not None else None

    async def _basic(self, request: Request) -> Viewer | None:
        given = basic_credentials(request.headers.get("authorization"))
        return await self._check(request, *given) if given is not None else None

    async def _to_failures(self, request: Request) -> Response:
        return RedirectResponse("/portal/failures", status_code=303)

    async def login_page(self, request: Request) -> Response:
        return _render("login.html", error=None, next=_safe_next(request.query_params.get("next")))

    async def _form(self, request: Request) -> dict[str, str]:
        """An urlencoded form body (the login form; bounded, so no multipart parser is needed)."""
        body = await self._surface.read_body(request, limit=FORM_LIMIT)
        return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))

    async def login(self, request: Request) -> Response:
        form = await self._form(request)
        user, password = str(form.get("user_name", "")), str(form.get("password", ""))
        try:
            viewer = await self._check(request, user, password)
        except TooManyFailedLogins as exc:
            page = _render("login.html", status=429, error="Too many failed logins: try again later.",
                           next=_safe_next(str(form.get("next", ""))))
            page.headers["Retry-After"] = exc.retry_after_header
            return page
        if viewer is None:
            self._surface.metrics.credential_failures.labels("portal").inc()
            return _render("login.html", status=401, error="Unknown user name or wrong password.",
                           next=_safe_next(str(form.get("next", ""))))
        response = RedirectResponse(_safe_next(str(form.get("next", ""))), status_code=303)
        response.set_cookie(COOKIE, self._surface.credentials.issue(viewer.principal, "portal"), httponly=True,
                            samesite="strict", secure=self._surface.public_url.startswith("https:"), path="/")
        return response

    async def logout(self, request: Request) -> Response:
        if (cookie := request.cookies.get(COOKIE)) is not None:
            try:
                await self._surface.credentials.revoke(cookie)  # on every replica, before the answer
            except StoreError:  # not logged out: say so rather than pretend
                raise HTTPException(503, "The gateway cannot log out right now; try again shortly.") from None
        response = RedirectResponse("/portal/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    async def failures_page(self, request: Request) -> Response:
        viewer = await self._viewer(request)
        if viewer is None:
            return _login_redirect(request)
        now = time.time()
        try:
            query = query_from(request, viewer, limit=PAGE_SIZE, now=now)
        except BadFilter as exc:
            return _render("error.html", status=400, viewer=viewer, message=str(exc))
        store = self._store()
        records = await store.failures(query)
        total = await store.count_failures(query)
        hours = await store.failure_hours(query)
        page = query.offset // PAGE_SIZE + 1
        pages = max(1, math.ceil(total / PAGE_SIZE))
        params = request.query_params
        filters = {"from": params.get("from", ""), "to": params.get("to", ""), "client": query.client or "",
                   "account": params.get("account", ""), "recipient": params.get("recipient", ""),
                   "codes": {int(c) for c in params.getlist("code") if c.isdigit()}}
        base_query = [(k, v) for k, v in params.multi_items() if k != "page"]
        return _render("failures.html", viewer=viewer, entries=[entry_view(r) for r in records], total=total,
                       page=page, pages=pages, filters=filters, flags=list(FailCode), base_query=base_query,
                       chart=chart(hours, query.since or now - DEFAULT_WINDOW, query.until or now))

    async def failure_page(self, request: Request) -> Response:
        viewer = await self._viewer(request)
        if viewer is None:
            return _login_redirect(request)
        entry_id = int(request.path_params["entry_id"])
        record = await self._store().failure(entry_id) if entry_id <= MAX_ENTRY_ID else None
        if record is None or (not viewer.is_admin and record.client != viewer.principal):
            return _render("error.html", status=404, viewer=viewer, message="No such failure entry.")
        return _render("failure.html", viewer=viewer, entry=entry_view(record))

    async def failures_csv(self, request: Request) -> Response:
        try:
            viewer = await self._viewer(request) or await self._basic(request)
        except TooManyFailedLogins as exc:
            return Response("Too many failed logins: retry later", status_code=429, media_type="text/plain",
                            headers={"Retry-After": exc.retry_after_header})
        if viewer is None:
            return _login_redirect(request)
        try:
            query = query_from(request, viewer, limit=CSV_LIMIT, now=time.time())
        except BadFilter as exc:
            return Response(str(exc), status_code=400, media_type="text/plain")
        records = await self._store().failures(query)
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["ID", "Client", "Account", "Keyword", "FailCode", "Flags", "Numbers", "SendID",
                         "PrimaryFailDate", "PrimaryError", "SecondaryFailDate", "SecondaryError"])
        for r in records:
            writer.writerow([_cell(v) for v in (
                r.id, r.client, r.account or "", r.keyword, r.code, "+".join(flag_names(r.code)), r.numbers,
                r.send_id, fail_date(r.primary_at), r.primary_error, fail_date(r.secondary_at), r.secondary_error)])
        return Response(out.getvalue(), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": 'attachment; filename="failures.csv"'})

    async def failures_api(self, request: Request) -> Response:
        try:
            viewer = await self._basic(request)
        except TooManyFailedLogins as exc:
            return JSONResponse({"error": "too many failed logins: retry later"}, status_code=429,
                                headers={"Retry-After": exc.retry_after_header})
        if viewer is None:
            self._surface.metrics.credential_failures.labels("api").inc()
            return JSONResponse({"error": "HTTP Basic credentials of a client (or admin) required"}, status_code=401,
                                headers={"WWW-Authenticate": 'Basic realm="aftm-gateway"'})
        try:
            limit = bounded_int(request.query_params.get("limit") or "100", name="limit", low=1, high=1000)
            query = query_from(request, viewer, limit=limit, now=time.time())
        except BadFilter as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        store = self._store()
        records = await store.failures(query)
        return JSONResponse({"total": await store.count_failures(query), "offset": query.offset, "limit": limit,
                             "entries": [entry_json(r) for r in records]})
