"""The dashboard's logins and writes: login, logout, retry, cancel, and output downloads.

Login takes the read or the admin token from a POSTed form (never a URL) and answers with the
session cookie: HttpOnly (no script reads it), SameSite=Strict (no other site's page sends it),
scoped to `/`, and Secure when the request came over HTTPS. Retry and cancel are POST forms
that need an admin session and the session's CSRF token; anything less is refused with 403
and the port is not called. Forms are read from the raw body (urlencoded), which needs no
multipart library. Downloads need a session like every page, and go through the flow: the
bucket's address and keys never reach the browser.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from mstc_flow.api.auth import Access
from mstc_flow.errors import FlowError
from mstc_flow.web.session import COOKIE, LIFETIME_SECONDS, Session

if TYPE_CHECKING:
    from mstc_flow.web.site import Web

__all__ = ["actions_router", "admin_form", "read_form"]

_MAX_FORM_BYTES = 4096


async def read_form(request: Request) -> dict[str, str]:
    body = await request.body()
    fields = parse_qs(body[:_MAX_FORM_BYTES].decode("utf-8", errors="replace"))
    return {name: values[0] for name, values in fields.items() if values}


async def admin_form(web: Web, request: Request, what: str) -> Session | Response:
    """The admin session that posted this form with its own CSRF token, or the 403 page saying
    which of the two is missing (`what`: what only an admin may do, for that page)."""
    session = web.session(request)
    if session is None or not session.admin:
        return web.refused(session, f"Only an admin session may {what}.")
    if not web.sessions.csrf_ok(session, (await read_form(request)).get("csrf")):
        return web.refused(session, "The form's CSRF token is missing or wrong; reload.")
    return session


async def _write(web: Web, ui: str, request: Request, key: str, action: str) -> Response:
    """Retry or cancel `key` for an admin session whose form carries its CSRF token."""
    session = await admin_form(web, request, "retry or cancel jobs")
    if isinstance(session, Response):
        return session
    port = web.ports.retry if action == "retry" else web.ports.cancel
    try:
        answer = await run_in_threadpool(port, key)
    except FlowError as exc:
        return web.render("error.html", session, 409, message=str(exc))
    notice = (
        f"Sent again as firing {answer.get('firingId')}."
        if action == "retry"
        else f"Cancel: {answer.get('status')}: {answer.get('message') or ''}"
    )
    return RedirectResponse(
        f"{ui}/jobs/{quote(key, safe='')}?notice={quote(notice)}", status_code=303
    )


def actions_router(web: Web, ui: str) -> APIRouter:
    router = APIRouter(prefix=ui, include_in_schema=False)

    @router.get("/login")
    def login_form(request: Request) -> Response:
        return web.render("login.html", web.session(request))

    @router.post("/login")
    async def login(request: Request) -> Response:
        access = web.tokens.access((await read_form(request)).get("token"))
        if access is Access.NONE:
            return web.render("login.html", None, 401, failed=True)
        cookie = web.sessions.issue("admin" if access is Access.ADMIN else "read")
        answer = RedirectResponse(f"{ui}/", status_code=303)
        answer.set_cookie(COOKIE, cookie, max_age=LIFETIME_SECONDS, path="/", httponly=True,
                          samesite="strict", secure=request.url.scheme == "https")  # fmt: skip
        return answer

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        answer = RedirectResponse(f"{ui}/login", status_code=303)
        answer.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return answer

    @router.post("/jobs/{key}/retry")
    async def retry(request: Request, key: str) -> Response:
        return await _write(web, ui, request, key, "retry")

    @router.post("/jobs/{key}/cancel")
    async def cancel(request: Request, key: str) -> Response:
        return await _write(web, ui, request, key, "cancel")

    @router.get("/jobs/{key}/outputs/{name:path}")
    def download(request: Request, key: str, name: str) -> Response:
        session = web.session(request)
        if session is None:
            return RedirectResponse(f"{ui}/login", status_code=303)
        try:
            data = web.ports.read_output(web.ports.get_job(key), name)
        except FlowError as exc:
            return web.render("error.html", session, 404, message=str(exc))
        filename = quote(name.rsplit("/", 1)[-1])
        return Response(data, media_type="application/octet-stream", headers={
            "Content-Disposition": f"attachment; filename*=UTF-8''{filename}",
            "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
        })  # fmt: skip

    return router
