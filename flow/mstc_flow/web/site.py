"""The dashboard assembled onto the API app: `create_site`, and what every page handler shares.

`create_site` builds the API (`mstc_flow.api.create_app`) and adds the dashboard under `/ui/`
on the same app, port and `FlowPorts`: `/` redirects to `/ui/`, the assets (CSS, the live
script) are served from this package's `static` directory, and the pages come from `pages`
(reading), `actions` (login, logout, retry, cancel, downloads), `pipelines` (the pipeline
pages and their writes) and `stream` (the live feed and the fragments it refreshes). `Web`
holds what those share: the ports, the sessions, the templates, and `render`, which answers
an HTML page with headers that keep it from being framed or running scripts from anywhere
but this server.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape
from prometheus_client import CollectorRegistry

from mstc_flow.api import FlowPorts, create_app
from mstc_flow.api.auth import Tokens
from mstc_flow.errors import BadQuery, FlowError, NotFound, PermanentError
from mstc_flow.live import Broadcaster
from mstc_flow.settings import FlowSettings
from mstc_flow.web import views
from mstc_flow.web.actions import actions_router
from mstc_flow.web.pages import pages_router
from mstc_flow.web.pipelines import pipelines_router
from mstc_flow.web.session import COOKIE, Session, Sessions
from mstc_flow.web.stream import stream_router

__all__ = ["UI", "Web", "create_site"]

UI = "/ui"
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _status_of(exc: FlowError) -> int:
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, BadQuery):
        return 400
    return 409 if isinstance(exc, PermanentError) else 503


class Web:
    """The dashboard's shared parts: ports, tokens, sessions, templates, the live feed."""

    def __init__(self, ports: FlowPorts, settings: FlowSettings, live: Broadcaster) -> None:
        self.ports, self.live = ports, live
        self.tokens = Tokens(settings)
        self.sessions = Sessions(settings)
        self.templates = Environment(
            loader=PackageLoader("mstc_flow.web", "templates"),
            autoescape=select_autoescape(default=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters.update(
            clock=views.clock, isoclock=views.isoclock, duration=views.duration,
            origin=views.origin, pretty=views.pretty,
        )  # fmt: skip

    def session(self, request: Request) -> Session | None:
        return self.sessions.check(request.cookies.get(COOKIE))

    def render(
        self, name: str, session: Session | None, status: int = 200, **context: Any
    ) -> Response:
        now = datetime.now(UTC)
        page = self.templates.get_template(name).render(
            ui=UI, session=session, now=now, age=lambda moment: views.age(moment, now),
            csrf=self.sessions.csrf(session) if session else "", **context,
        )  # fmt: skip
        return HTMLResponse(page, status_code=status, headers=_HEADERS)

    def page(
        self, request: Request, name: str, build: Callable[[Session], dict[str, Any]]
    ) -> Response:
        """`name` rendered with what `build` returns, for a logged-in reader; the login page
        for anyone else; the flow's errors as an error page with their status."""
        session = self.session(request)
        if session is None:
            return RedirectResponse(f"{UI}/login", status_code=303)
        try:
            context = build(session)
        except FlowError as exc:
            return self.render("error.html", session, _status_of(exc), message=str(exc))
        return self.render(name, session, **context)

    def refused(self, session: Session | None, why: str) -> Response:
        return self.render("error.html", session, 403, message=why)


def create_site(
    ports: FlowPorts, settings: FlowSettings, registry: CollectorRegistry, live: Broadcaster
) -> FastAPI:
    """The API app with the dashboard added."""
    app = create_app(ports, settings, registry)
    web = Web(ports, settings, live)
    app.include_router(pages_router(web, UI))
    app.include_router(actions_router(web, UI))
    app.include_router(stream_router(web, UI))
    app.include_router(pipelines_router(web, UI))
    app.mount(f"{UI}/static", StaticFiles(packages=[("mstc_flow.web", "static")]), name="static")

    @app.get("/", include_in_schema=False)
    def home() -> Response:
        return RedirectResponse(f"{UI}/", status_code=307)

    return app
