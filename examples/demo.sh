#!/usr/bin/env bash
# `make demo`: the example job through `mstc run`, on the kind cluster `make kind-up` made.
# Port-forwards RabbitMQ and MinIO, reads the chart's generated credentials, runs the job on
# examples/demo-input and prints the result; the port-forwards stop when it ends.
set -euo pipefail
# KUBE_CONTEXT: another cluster than kind's, e.g. the local stack's real node (README).
ctx="${KUBE_CONTEXT:-kind-${KIND_CLUSTER:-mstc}}" ns=mstc-dev release=mstc-cloud-worker
image="${JOB_IMAGE:-mstc-example-job:dev}" out="${DEMO_OUTPUT_DIR:-/tmp/mstc-demo}"
k() { kubectl --context "$ctx" -n "$ns" "$@"; }
secret() { k get secret "$1" -o "jsonpath={.data.$2}" | base64 -d; }

# kubectl itself in the background (not through k, whose subshell's PID kill would end while
# kubectl kept forwarding).
kubectl --context "$ctx" -n "$ns" port-forward "svc/$release-mstc-work-queue" 25672:5672 >/dev/null &
pf1=$!
kubectl --context "$ctx" -n "$ns" port-forward "svc/$release-minio" 29000:9000 >/dev/null &
pf2=$!
trap 'kill $pf1 $pf2 2>/dev/null' EXIT
for port in 25672 29000; do
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
done

# The port-forwards, not whatever the shell points at (the local stack's env.sh sets these two).
unset MSTC_AMQP_URL MSTC_S3_ENDPOINT
export WORK_QUEUE_HOST=127.0.0.1 WORK_QUEUE_PORT=25672
export WORK_QUEUE_USER="$(secret "$release-mstc-work-queue" username)"
export WORK_QUEUE_PASS="$(secret "$release-mstc-work-queue" password)"
export MINIO_SERVICE_HOST=127.0.0.1 MINIO_SERVICE_PORT=29000
# The key the chart made for clients (its NOTES say so), not MinIO's root key.
export MSTC_S3_ACCESS_KEY="$(secret "$release-minio-client" accessKey)"
export MSTC_S3_SECRET_KEY="$(secret "$release-minio-client" secretKey)"
uv run --frozen mstc run --image "$image" --job-name demo --input examples/demo-input \
  --output-dir "$out" --timeout 5
echo "outputs and log in $out:"; ls -l "$out"
