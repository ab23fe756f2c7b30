"""The dashboard: server-rendered pages over the flow's `FlowPorts`, under `/ui/`.

`create_site` (in `site`) is the API app with the dashboard added; the service serves it.
Modules: `site` (assembly, rendering, the session check every page makes), `session` (signed
cookies and CSRF tokens), `pages` (overview, jobs, job, catalog), `actions` (login, logout,
retry, cancel, downloads), `stream` (the live feed as server-sent events and the fragments it
refreshes), `views` (formatting and the list's filters). Templates and assets are package data
(`templates/`, `static/`): nothing is fetched from the internet. Only this package and
`mstc_flow.api` import FastAPI and Starlette, and only this one Jinja2 (import contracts).
"""

from mstc_flow.web.site import UI, create_site

__all__ = ["UI", "create_site"]
