{{/* Chart name, overridable. */}}
{{- define "mstc-cloud-worker.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The worker's object names: the release name when it already contains the chart's name (so
`helm install mstc-cloud-worker ...` gives the Java deployment's name), else "<release>-<chart>".
*/}}
{{- define "mstc-cloud-worker.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "mstc-cloud-worker.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mstc-cloud-worker.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mstc-cloud-worker.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "mstc-cloud-worker.labels" -}}
helm.sh/chart: {{ include "mstc-cloud-worker.chart" . }}
{{ include "mstc-cloud-worker.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: worker
app.kubernetes.io/part-of: MSTC
{{- end }}

{{- define "mstc-cloud-worker.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mstc-cloud-worker.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "mstc-cloud-worker.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
Where the broker and MinIO are. For a bundled sub-chart, its object names follow the
sub-chart's own rule ("<release>-<sub-chart>" unless fullnameOverride); they are computed
here again because a parent cannot call into a sub-chart's scope.
*/}}
{{- define "mstc-cloud-worker.workQueue.fullname" -}}
{{- $sub := index .Values "mstc-work-queue" }}
{{- default (printf "%s-mstc-work-queue" .Release.Name) (dig "fullnameOverride" "" $sub) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mstc-cloud-worker.workQueue.host" -}}
{{- if (index .Values "mstc-work-queue").enabled }}
{{- include "mstc-cloud-worker.workQueue.fullname" . }}
{{- else }}
{{- required "externalWorkQueue.host is required when mstc-work-queue.enabled is false" .Values.externalWorkQueue.host }}
{{- end }}
{{- end }}

{{- define "mstc-cloud-worker.workQueue.port" -}}
{{- if (index .Values "mstc-work-queue").enabled }}
{{- dig "service" "amqpPort" 5672 (index .Values "mstc-work-queue") }}
{{- else }}
{{- .Values.externalWorkQueue.port }}
{{- end }}
{{- end }}

{{/* The Secret with keys username and password the worker logs in to the broker with. */}}
{{- define "mstc-cloud-worker.workQueue.secretName" -}}
{{- if (index .Values "mstc-work-queue").enabled }}
{{- include "mstc-cloud-worker.workQueue.fullname" . }}
{{- else }}
{{- default (printf "%s-work-queue" (include "mstc-cloud-worker.fullname" .)) .Values.externalWorkQueue.existingSecret }}
{{- end }}
{{- end }}

{{- define "mstc-cloud-worker.minio.fullname" -}}
{{- default (printf "%s-minio" .Release.Name) (dig "fullnameOverride" "" .Values.minio) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mstc-cloud-worker.minio.host" -}}
{{- if .Values.minio.enabled }}
{{- include "mstc-cloud-worker.minio.fullname" . }}
{{- else }}
{{- required "externalMinio.host is required when minio.enabled is false" .Values.externalMinio.host }}
{{- end }}
{{- end }}

{{- define "mstc-cloud-worker.minio.port" -}}
{{- if .Values.minio.enabled }}
{{- dig "service" "apiPort" 9000 .Values.minio }}
{{- else }}
{{- .Values.externalMinio.port }}
{{- end }}
{{- end }}

{{/*
The Secret with keys rootUser and rootPassword: the worker's MinIO credentials and, through
MSTC_MINIO_SECRET_NAME, the Jobs' MINIO_ROOT_USER/PASSWORD. One Secret for both, so
rotating the credentials is one change.
*/}}
{{- define "mstc-cloud-worker.minio.secretName" -}}
{{- if .Values.minio.enabled }}
{{- default (include "mstc-cloud-worker.minio.fullname" .) (dig "auth" "existingSecret" "" .Values.minio) }}
{{- else }}
{{- default (printf "%s-minio" (include "mstc-cloud-worker.fullname" .)) .Values.externalMinio.existingSecret }}
{{- end }}
{{- end }}

{{/* One env entry read from a Secret key. Arguments: name, secret, key. */}}
{{- define "mstc-cloud-worker.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .secret }}
      key: {{ .key }}
{{- end }}


{{- /*
The worker's environment, shared by its Deployment and the release hook (which must see the
same broker, storage and settings). `range` renders the settings in key order. Numbers pass
through int64: YAML's numbers reach templates as floats, and 1048576 would render as
"1.048576e+06", which the worker refuses.
*/}}
{{- define "mstc-cloud-worker.workerEnv" -}}
{{- $w := .Values.worker }}
{{- $q := .Values.global.queues }}
{{- $settings := dict
  "MSTC_NAMESPACE" .Release.Namespace
  "MSTC_HTTP_PORT" "8080"
  "MSTC_CONCURRENCY" ($w.concurrency | int64)
  "MSTC_PROCESSES" ($w.processes | int64)
  "MSTC_DEFAULT_TIMEOUT_MINUTES" ($w.defaultTimeoutMinutes | int64)
  "MSTC_MAX_TIMEOUT_MINUTES" ($w.maxTimeoutMinutes | int64)
  "MSTC_JOB_TTL_SECONDS" ($w.jobTtlSeconds | int64)
  "MSTC_HEARTBEAT_SECONDS" ($w.heartbeatSeconds | int64)
  "MSTC_IMAGE_ALLOW" (join "," $w.imageAllow)
  "MSTC_REQUEST_LABEL_PREFIXES" (join "," $w.requestLabelPrefixes)
  "MSTC_REQUEST_ANNOTATION_PREFIXES" (join "," $w.requestAnnotationPrefixes)
  "MSTC_MAX_BODY_BYTES" ($w.maxBodyBytes | int64)
  "MSTC_LOG_FORMAT" $w.logFormat
  "MSTC_CLAIM_STALE_SECONDS" ($w.claimStaleSeconds | int64)
  "MSTC_RESYNC_SECONDS" ($w.resyncSeconds | int64)
  "MSTC_SHUTDOWN_GRACE_SECONDS" ($w.shutdownGraceSeconds | int64)
  "MSTC_ALLOW_DEFAULT_CREDENTIALS" $w.allowDefaultCredentials
  "MSTC_JOB_ROOT_CREDENTIALS" $w.jobRootCredentials
  "MSTC_EXCHANGE" $q.exchange
  "MSTC_WORK_QUEUE" $q.work
  "MSTC_RESULTS_QUEUE" $q.results
  "MSTC_CONTROL_QUEUE" $q.control
  "MSTC_MINIO_SECRET_NAME" (include "mstc-cloud-worker.minio.secretName" .)
}}
# The Java worker's names, so Jobs and old tooling see the same variables.
- name: WORK_QUEUE_HOST
  value: {{ include "mstc-cloud-worker.workQueue.host" . | quote }}
- name: WORK_QUEUE_PORT
  value: {{ include "mstc-cloud-worker.workQueue.port" . | quote }}
{{- include "mstc-cloud-worker.secretEnv" (dict "name" "WORK_QUEUE_USER" "secret" (include "mstc-cloud-worker.workQueue.secretName" .) "key" "username") | nindent 0 }}
{{- include "mstc-cloud-worker.secretEnv" (dict "name" "WORK_QUEUE_PASS" "secret" (include "mstc-cloud-worker.workQueue.secretName" .) "key" "password") | nindent 0 }}
# Also what the worker gives every Job to reach MinIO.
- name: MINIO_SERVICE_HOST
  value: {{ include "mstc-cloud-worker.minio.host" . | quote }}
- name: MINIO_SERVICE_PORT
  value: {{ include "mstc-cloud-worker.minio.port" . | quote }}
{{- include "mstc-cloud-worker.secretEnv" (dict "name" "MINIO_ROOT_USER" "secret" (include "mstc-cloud-worker.minio.secretName" .) "key" "rootUser") | nindent 0 }}
{{- include "mstc-cloud-worker.secretEnv" (dict "name" "MINIO_ROOT_PASSWORD" "secret" (include "mstc-cloud-worker.minio.secretName" .) "key" "rootPassword") | nindent 0 }}
{{- range $name, $value := $settings }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- with $w.extraEnv }}
{{- toYaml . | nindent 0 }}
{{- end }}
{{- end }}

{{/*
The Secret holding the REST port's bearer token (key `token`): the given one, else the chart's.
*/}}
{{- define "mstc-cloud-worker.restApi.secretName" -}}
{{- .Values.restApi.existingSecret | default (printf "%s-http-token" (include "mstc-cloud-worker.fullname" .)) }}
{{- end }}

{{/* The Secret holding the clients' MinIO key (keys accessKey, secretKey). */}}
{{- define "mstc-cloud-worker.clientUser.secretName" -}}
{{- printf "%s-minio-client" (include "mstc-cloud-worker.fullname" .) }}
{{- end }}
