# The worker's image.
#   docker build -t mstc-cloud-worker:dev .
#
# Stage 1 resolves the locked dependencies (uv.lock) into a virtualenv and installs the worker
# into it as a normal (non-editable) package. Stage 2 is a clean python:slim with that
# virtualenv only: no uv, no compilers, no sources, no pip cache.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
COPY --from=ghcr.io/astral-sh/uv:0.9.5 /uv /usr/local/bin/uv
# Bytecode compiled here, because the final image's root filesystem is read-only; the image's
# own Python (same base image in both stages) so the virtualenv's interpreter link holds.
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv
WORKDIR /src
# Dependencies first, in their own layer: it is rebuilt only when the lock changes.
# The client's pyproject is there because the lock describes the whole uv workspace.
COPY pyproject.toml uv.lock README.md ./
COPY client/pyproject.toml client/pyproject.toml
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace
COPY mstc_worker ./mstc_worker
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package mstc-worker

FROM ${PYTHON_IMAGE}
# pip and setuptools are not needed at run time: fewer tools in the image, fewer CVEs to track.
RUN python -m pip uninstall --yes --quiet pip setuptools wheel 2>/dev/null; \
    groupadd --gid 10001 mstc \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin mstc
COPY --from=build /opt/venv /opt/venv
# PYTHONDONTWRITEBYTECODE: nothing tries to write next to the code (read-only root
# filesystem); the virtualenv already holds compiled bytecode.
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
# Numeric user, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
WORKDIR /tmp
EXPOSE 8080
# For docker run; Kubernetes uses the chart's probes instead.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
    CMD ["python", "-c", "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4); sys.exit(0)"]
ENTRYPOINT ["mstc-worker"]
