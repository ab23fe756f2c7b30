# One Makefile for developers, pre-commit and CI. `make test` is the test command;
# `make run` brings everything up. Both install what they need first.

SHELL := /bin/bash
.DEFAULT_GOAL := help

UV_VERSION ?= 0.9.5
UV ?= $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
PY := $(UV) run --frozen
STACK := python3 stack/localstack.py
# The tests that need no servers: every test whose fixtures reach the stack is marked `stack`
# at collection (tests/conftest.py), and the kind end-to-end test needs a kind cluster.
SERVERLESS := -m "not stack and not kind"
export MSTC_STACK_DIR ?= /tmp/mstc-stack

IMAGE_TAG ?= dev
WORKER_IMAGE ?= mstc-cloud-worker:$(IMAGE_TAG)
JOB_IMAGE ?= mstc-example-job:$(IMAGE_TAG)
KIND_CLUSTER ?= mstc
# `make demo` on another cluster than kind's (the real node: KUBE_CONTEXT=mstc-local).
KUBE_CONTEXT ?=
CHART := charts/mstc-cloud-worker

.PHONY: help install stack-deps stack-build stack-up stack-down stack-status run lint check format test \
	test-unit test-deploy chart-lint images kind-up kind-down test-kind demo bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(UV):
	python3 -m pip install --quiet --user "uv==$(UV_VERSION)" || python3 -m pip install --quiet "uv==$(UV_VERSION)"

install: $(UV) ## create .venv from uv.lock (exact versions)
	$(UV) sync --frozen

stack-deps: ## install RabbitMQ, PostgreSQL, openssl and Chromium with its driver (the dashboard's browser tests) from Debian when missing
	@if [ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || ! command -v openssl >/dev/null \
	    || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 \
	    || [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
	  pkgs="rabbitmq-server openssl postgresql chromium chromium-driver"; \
	  sudo= ; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  $$sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -q --no-install-recommends $$pkgs; \
	fi

stack-build: ## build the stack's Go binaries once per version (cached in ~/.cache/mstc-stack)
	stack/build.sh

stack-up: stack-deps stack-build ## start the local stack; settings in $(MSTC_STACK_DIR)/env.sh
	$(STACK) up

stack-down: ## stop the local stack and remove its state
	$(STACK) down

stack-status: ## show which parts of the stack run
	$(STACK) status

# `make run`'s flow service: its catalog (file:PATH, configmap:NS/NAME[/KEY] or s3://BUCKET/OBJECT),
# SQLite store and API tokens live with the stack. The worker's and the flow's HTTP ports move with
# MSTC_STACK_PORT_OFFSET as the stack's own do, so two `make run`s can share a machine.
FLOW_CATALOG ?= file:examples/flows/catalog.yaml
RUN_PORT_OFFSET := $(or $(MSTC_STACK_PORT_OFFSET),0)
WORKER_HTTP_PORT ?= $(shell echo $$((8080 + $(RUN_PORT_OFFSET))))
FLOW_HTTP_PORT ?= $(shell echo $$((8090 + $(RUN_PORT_OFFSET))))
FLOW_TOKENS := $(MSTC_STACK_DIR)/flow-tokens.env

run: install stack-up ## set up everything, then run the worker and mstc-flow on the local stack (one Ctrl-C stops both)
	source $(MSTC_STACK_DIR)/env.sh && \
	  kubectl apply -f config/service-account.yaml && \
	  kubectl -n mstc-dev create secret generic mstc-minio --from-literal=rootUser="$$MINIO_ROOT_USER" \
	    --from-literal=rootPassword="$$MINIO_ROOT_PASSWORD" --dry-run=client -o yaml | kubectl apply -f - && \
	  if [ ! -s $(FLOW_TOKENS) ]; then \
	    (umask 077; python3 -c 'import secrets; t = secrets.token_hex; \
	      print(f"MSTC_FLOW_READ_TOKEN={t(24)}\nMSTC_FLOW_ADMIN_TOKEN={t(24)}")' > $(FLOW_TOKENS)); fi && \
	  chmod 600 $(FLOW_TOKENS) && set -a && source $(FLOW_TOKENS) && set +a && \
	  echo "mstc-flow API: http://127.0.0.1:$(FLOW_HTTP_PORT)/api/v1 (tokens in $(FLOW_TOKENS)); in another shell:" && \
	  echo "  source $(MSTC_STACK_DIR)/env.sh" && \
	  echo "  export MSTC_FLOW_URL=http://127.0.0.1:$(FLOW_HTTP_PORT) MSTC_FLOW_TOKEN=$$MSTC_FLOW_ADMIN_TOKEN  # admin; read-only: $$MSTC_FLOW_READ_TOKEN" && \
	  echo "dashboard: http://127.0.0.1:$(FLOW_HTTP_PORT)/ui/ (log in with either token)" && \
	  { MSTC_FLOW_STORE_PATH=$(MSTC_STACK_DIR)/mstc-flow.sqlite3 MSTC_FLOW_CATALOG=$(FLOW_CATALOG) \
	    MSTC_FLOW_HTTP_HOST=127.0.0.1 MSTC_FLOW_HTTP_PORT=$(FLOW_HTTP_PORT) .venv/bin/mstc-flow & } && \
	  flow=$$! && trap 'kill -TERM $$flow 2>/dev/null; wait $$flow' EXIT && \
	  MSTC_NAMESPACE=mstc-dev MSTC_HTTP_HOST=127.0.0.1 MSTC_HTTP_PORT=$(WORKER_HTTP_PORT) \
	    MSTC_EVENTS_JOB_LISTENER_TOPIC=true MSTC_MAX_PARALLELISM=50 .venv/bin/mstc-worker

lint: install ## ruff (lint and format check), mypy and the import contracts (pyproject.toml)
	$(PY) ruff check .
	$(PY) ruff format --check .
	$(PY) mypy
	$(PY) lint-imports --no-logo --no-cache

check: lint test-unit ## the fast inner loop, no servers: lint, then every server-less test

format: install ## apply ruff's fixes and formatting
	$(PY) ruff check --fix .
	$(PY) ruff format .

test-unit: install ## every test that needs no servers (worker and client)
	$(PY) pytest $(SERVERLESS)

test: install stack-deps stack-build lint ## THE test command: lint, the whole suite on a real local stack (coverage), then the real node's tier when its cache is warm
	$(PY) coverage erase
	$(PY) coverage run -m pytest -m "not real_node"
	$(PY) coverage combine --quiet
	$(PY) coverage report
	@if stack/realnode_warm.sh; then $(MAKE) --no-print-directory test-real-node; fi

test-deploy: install stack-deps stack-build ## chart, RBAC and example-job tests on the local stack, and the uninstall fault row
	$(PY) pytest tests/deploy tests/faults/test_uninstall.py

chart-lint: stack-build ## helm lint --strict the chart
	source $(MSTC_STACK_DIR)/env.sh 2>/dev/null; $${HELM_BIN:-helm} lint --strict $(CHART)

images: ## build the worker's and the example job's images (needs docker)
	docker build -t $(WORKER_IMAGE) .
	docker build -t $(JOB_IMAGE) examples/job

kind-up: images ## a kind cluster with the images loaded and the chart installed into mstc-dev
	kind get clusters | grep -qx $(KIND_CLUSTER) || kind create cluster --name $(KIND_CLUSTER) --wait 180s
	kind load docker-image $(WORKER_IMAGE) $(JOB_IMAGE) --name $(KIND_CLUSTER)
	helm upgrade --install mstc-cloud-worker $(CHART) -n mstc-dev --create-namespace \
	  --kube-context kind-$(KIND_CLUSTER) --set image.repository=mstc-cloud-worker \
	  --set image.tag=$(IMAGE_TAG) --wait --timeout 10m

demo: ## the example job through `mstc run` on the kind cluster of `make kind-up`; prints the result
	KIND_CLUSTER=$(KIND_CLUSTER) JOB_IMAGE=$(JOB_IMAGE) KUBE_CONTEXT=$(KUBE_CONTEXT) examples/demo.sh

kind-down: ## delete the kind cluster
	kind delete cluster --name $(KIND_CLUSTER)

test-kind: install ## end to end on kind: images, cluster, chart, the example job (docker, kind, helm)
	MSTC_TEST_CLUSTER=kind $(PY) pytest tests/e2e

clean: stack-down ## remove the virtualenv and caches of this checkout (not the built binaries)
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache .coverage .coverage.*

bench: install stack-deps stack-build ## the benchmark (not part of `make test`): bench/results/
	$(UV) sync --frozen --group bench
	MSTC_STACK_PROFILING=1 $(UV) run --frozen --group bench python -m bench.bench $(SCENARIOS)

# --- The real node (MSTC_STACK_REAL_NODE=1): a kubelet on containerd beside KWOK's node. ------
# `make test` runs this tier after the rest when stack/realnode_warm.sh says its cache is warm
# (the cold builds took 8 to 55 min, measured); `make test-real-node` builds what is missing and runs it.
REALNODE_PKGS := containerd runc containernetworking-plugins iptables nftables umoci debootstrap buildah socat
.PHONY: realnode-deps realnode-build realnode-up test-real-node

realnode-deps: ## Debian's containerd, runc, CNI plugins, umoci and debootstrap, when missing
	@for t in containerd runc ctr umoci debootstrap buildah socat nft /usr/lib/cni/bridge; do \
	  command -v $$t >/dev/null || { missing=1; break; }; done; \
	if [ -n "$$missing" ]; then \
	  sudo= ; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  $$sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -q --no-install-recommends $(REALNODE_PKGS); \
	fi

realnode-build: ## kubelet, kube-proxy and CoreDNS (cached by version) and the node's images (by content)
	MSTC_STACK_REAL_NODE=1 stack/build.sh
	for image in pause base python job worker rabbitmq minio tasks; do stack/images/build.sh $$image || exit 1; done

realnode-up: stack-deps realnode-deps realnode-build ## the local stack with a real node beside KWOK's
	MSTC_STACK_REAL_NODE=1 $(STACK) up

test-real-node: install stack-deps realnode-deps realnode-build ## the real node's tests (own stack)
	MSTC_STACK_REAL_NODE=1 $(PY) pytest -m real_node tests/e2e/test_real_node.py tests/e2e/test_real_node_services.py \
	  tests/e2e/test_real_node_chart.py tests/e2e/test_real_node_tasks.py
