{{/* Chart name, overridable. */}}
{{- define "mstc-flow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Object names: "<release>-mstc-flow" unless fullnameOverride is set. Kept this simple on purpose:
the umbrella's NOTES compute the same name.
*/}}
{{- define "mstc-flow.fullname" -}}
{{- default (printf "%s-%s" .Release.Name .Chart.Name) .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mstc-flow.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mstc-flow.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mstc-flow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "mstc-flow.labels" -}}
helm.sh/chart: {{ include "mstc-flow.chart" . }}
{{ include "mstc-flow.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: flow
app.kubernetes.io/part-of: MSTC
{{- end }}

{{- define "mstc-flow.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The Secret with the API's tokens (keys readToken, adminToken). */}}
{{- define "mstc-flow.tokensSecretName" -}}
{{- .Values.auth.existingSecret | default (printf "%s-tokens" (include "mstc-flow.fullname" .)) }}
{{- end }}

{{/* "true" when the bundled PostgreSQL is on (and no other URL given). */}}
{{- define "mstc-flow.bundledPostgresql" -}}
{{- $pg := .Values.store.postgresql }}
{{- if and (dig "enabled" false (index .Values "mstc-flow-postgresql")) (not $pg.url) (not $pg.existingSecret) }}true{{ end }}
{{- end }}

{{/* "true" when the store is PostgreSQL (a URL given, a Secret holding one, or the bundled one). */}}
{{- define "mstc-flow.postgresql" -}}
{{- $pg := .Values.store.postgresql }}
{{- if or $pg.url $pg.existingSecret (include "mstc-flow.bundledPostgresql" .) }}true{{ end }}
{{- end }}

{{/* The Secret and key holding the PostgreSQL URL (the bundled one's name follows its rule). */}}
{{- define "mstc-flow.storeSecretName" -}}
{{- if .Values.store.postgresql.existingSecret }}
{{- .Values.store.postgresql.existingSecret }}
{{- else if include "mstc-flow.bundledPostgresql" . }}
{{- default (printf "%s-mstc-flow-postgresql" .Release.Name) (dig "fullnameOverride" "" (index .Values "mstc-flow-postgresql")) | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-store" (include "mstc-flow.fullname" .) }}
{{- end }}
{{- end }}

{{- define "mstc-flow.storeSecretKey" -}}
{{- if .Values.store.postgresql.existingSecret }}{{ .Values.store.postgresql.existingSecretKey }}{{ else }}url{{ end }}
{{- end }}

{{/*
The catalog's ConfigMap name and key ("" when the catalog is not a ConfigMap). At most one
source may be set: two would leave it unclear which one the service reads.
*/}}
{{- define "mstc-flow.catalogSources" -}}
{{- $c := .Values.catalog }}
{{- $set := list }}
{{- if $c.inline }}{{ $set = append $set "catalog.inline" }}{{ end }}
{{- if $c.existingConfigMap }}{{ $set = append $set "catalog.existingConfigMap" }}{{ end }}
{{- if $c.s3Url }}{{ $set = append $set "catalog.s3Url" }}{{ end }}
{{- if gt (len $set) 1 }}
{{- fail (printf "mstc-flow: set at most one catalog source; got %s" (join ", " $set)) }}
{{- end }}
{{- join "," $set }}
{{- end }}

{{- define "mstc-flow.catalogConfigMap" -}}
{{- $_ := include "mstc-flow.catalogSources" . }}
{{- if .Values.catalog.inline }}
{{- printf "%s-catalog" (include "mstc-flow.fullname" .) }}
{{- else if .Values.catalog.existingConfigMap }}
{{- .Values.catalog.existingConfigMap }}
{{- end }}
{{- end }}

{{- define "mstc-flow.catalogKey" -}}
{{- if .Values.catalog.inline }}
{{- printf "catalog.%s" .Values.catalog.format }}
{{- else }}
{{- .Values.catalog.existingConfigMapKey }}
{{- end }}
{{- end }}

{{/* MSTC_FLOW_CATALOG: configmap:NAMESPACE/NAME/KEY, s3://..., or "" (no catalog). */}}
{{- define "mstc-flow.catalogSetting" -}}
{{- $configMap := include "mstc-flow.catalogConfigMap" . }}
{{- if $configMap }}
{{- printf "configmap:%s/%s/%s" .Release.Namespace $configMap (include "mstc-flow.catalogKey" .) }}
{{- else }}
{{- .Values.catalog.s3Url }}
{{- end }}
{{- end }}

{{/*
The broker and MinIO. Empty connection values mean the umbrella's bundled servers under their
default names, and the clients' MinIO key of the umbrella (<umbrella fullname>-minio-client,
whose fullname rule is repeated here: a sub-chart cannot read its parent's helpers' values).
*/}}
{{- define "mstc-flow.umbrellaFullname" -}}
{{- if contains "mstc-cloud-worker" .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-mstc-cloud-worker" .Release.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "mstc-flow.workQueue.host" -}}
{{- .Values.connection.workQueue.host | default (printf "%s-mstc-work-queue" .Release.Name) }}
{{- end }}

{{- define "mstc-flow.workQueue.secretName" -}}
{{- .Values.connection.workQueue.secretName | default (printf "%s-mstc-work-queue" .Release.Name) }}
{{- end }}

{{- define "mstc-flow.minio.host" -}}
{{- .Values.connection.minio.host | default (printf "%s-minio" .Release.Name) }}
{{- end }}

{{- define "mstc-flow.minio.secretName" -}}
{{- .Values.connection.minio.secretName | default (printf "%s-minio-client" (include "mstc-flow.umbrellaFullname" .)) }}
{{- end }}

{{/* One env entry read from a Secret key. Arguments: name, secret, key. */}}
{{- define "mstc-flow.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .secret }}
      key: {{ .key }}
{{- end }}

{{/*
The service's environment. Secrets (tokens, broker password, MinIO key, PostgreSQL URL) come
only from Secret references, never as literals in the pod spec. Numbers pass through int64 or
toString so YAML floats do not render as 1e+06.
*/}}
{{- define "mstc-flow.env" -}}
{{- $f := .Values.flow }}
{{- $q := .Values.global.queues }}
{{- $c := .Values.connection }}
{{- $tokens := include "mstc-flow.tokensSecretName" . }}
{{- $settings := dict
  "MSTC_FLOW_HTTP_PORT" "8090"
  "MSTC_FLOW_CATALOG" (include "mstc-flow.catalogSetting" .)
  "MSTC_FLOW_CATALOG_POLL_SECONDS" ($f.catalogPollSeconds | toString)
  "MSTC_FLOW_REFRESH_TOPIC" $f.refreshTopic
  "MSTC_FLOW_SUBMIT_ATTEMPTS" ($f.submitAttempts | int64)
  "MSTC_FLOW_HISTORY_RETENTION_DAYS" ($f.historyRetentionDays | toString)
  "MSTC_EXCHANGE" $q.exchange
  "MSTC_WORK_QUEUE" $q.work
  "MSTC_CONTROL_QUEUE" $q.control
}}
- name: WORK_QUEUE_HOST
  value: {{ include "mstc-flow.workQueue.host" . | quote }}
- name: WORK_QUEUE_PORT
  value: {{ $c.workQueue.port | int64 | toString | quote }}
{{- include "mstc-flow.secretEnv" (dict "name" "WORK_QUEUE_USER" "secret" (include "mstc-flow.workQueue.secretName" .) "key" "username") | nindent 0 }}
{{- include "mstc-flow.secretEnv" (dict "name" "WORK_QUEUE_PASS" "secret" (include "mstc-flow.workQueue.secretName" .) "key" "password") | nindent 0 }}
- name: MINIO_SERVICE_HOST
  value: {{ include "mstc-flow.minio.host" . | quote }}
- name: MINIO_SERVICE_PORT
  value: {{ $c.minio.port | int64 | toString | quote }}
{{- include "mstc-flow.secretEnv" (dict "name" "MSTC_S3_ACCESS_KEY" "secret" (include "mstc-flow.minio.secretName" .) "key" $c.minio.accessKeyKey) | nindent 0 }}
{{- include "mstc-flow.secretEnv" (dict "name" "MSTC_S3_SECRET_KEY" "secret" (include "mstc-flow.minio.secretName" .) "key" $c.minio.secretKeyKey) | nindent 0 }}
{{- include "mstc-flow.secretEnv" (dict "name" "MSTC_FLOW_READ_TOKEN" "secret" $tokens "key" "readToken") | nindent 0 }}
{{- include "mstc-flow.secretEnv" (dict "name" "MSTC_FLOW_ADMIN_TOKEN" "secret" $tokens "key" "adminToken") | nindent 0 }}
{{- if include "mstc-flow.postgresql" . }}
{{- include "mstc-flow.secretEnv" (dict "name" "MSTC_FLOW_STORE_URL" "secret" (include "mstc-flow.storeSecretName" .) "key" (include "mstc-flow.storeSecretKey" .)) | nindent 0 }}
{{- else }}
# The SQLite file, on the data volume (the root filesystem is read-only).
- name: MSTC_FLOW_STORE_PATH
  value: /data/mstc-flow.sqlite3
{{- end }}
# Each replica's name in heartbeats and history: its pod's.
- name: MSTC_FLOW_REPLICA
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- range $name, $value := $settings }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- with $f.extraEnv }}
{{- toYaml . | nindent 0 }}
{{- end }}
{{- end }}

{{/*
The rule several replicas depend on: SQLite is one file on one volume, so only PostgreSQL may
be shared. Checked where the replicas are rendered.
*/}}
{{- define "mstc-flow.checkReplicas" -}}
{{- if and (gt (int .Values.replicas) 1) (not (include "mstc-flow.postgresql" .)) }}
{{- fail (printf "mstc-flow.replicas=%d needs PostgreSQL (mstc-flow.store.postgresql.url or .existingSecret, or mstc-flow.mstc-flow-postgresql.enabled): SQLite is one file on one volume and cannot be shared by several replicas" (int .Values.replicas)) }}
{{- end }}
{{- end }}
