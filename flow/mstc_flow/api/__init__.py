"""The flow's HTTP API (FastAPI): `create_app` builds it, `serve` runs it beside the service.

Only this package imports FastAPI, Starlette and uvicorn; it reaches the rest of the service
through `FlowPorts` alone. Modules: `app` (the app, its error mapping and request counter),
`auth` (bearer tokens), `routes_jobs`, `routes_catalog` and `routes_queue` (the paths),
`health` (probes and metrics), `server` (uvicorn in a thread), `ports` and `queries` (what
the API is given).
"""

from mstc_flow.api.app import API_PREFIX, create_app
from mstc_flow.api.ports import FlowPorts, JobPage, JobRecord, ReplicaRecord
from mstc_flow.api.server import ApiServer, serve
from mstc_flow.store.history_records import JobQuery

__all__ = [
    "API_PREFIX",
    "ApiServer",
    "FlowPorts",
    "JobPage",
    "JobQuery",
    "JobRecord",
    "ReplicaRecord",
    "create_app",
    "serve",
]
