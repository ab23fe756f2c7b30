{{/* Chart name, overridable. */}}
{{- define "minio.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Object names: "<release>-minio" unless fullnameOverride is set. Kept this simple on purpose:
the umbrella chart computes the same name to point the worker at this MinIO.
*/}}
{{- define "minio.fullname" -}}
{{- default (printf "%s-%s" .Release.Name .Chart.Name) .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "minio.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "minio.selectorLabels" -}}
app.kubernetes.io/name: {{ include "minio.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "minio.labels" -}}
helm.sh/chart: {{ include "minio.chart" . }}
{{ include "minio.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: object-store
app.kubernetes.io/part-of: MSTC
{{- end }}

{{/* The Secret holding rootUser and rootPassword: the user's own, or the chart's. */}}
{{- define "minio.secretName" -}}
{{- default (include "minio.fullname" .) .Values.auth.existingSecret }}
{{- end }}

{{/*
One credential: the value given in values, else the one already stored in this release's
Secret (so `helm upgrade` keeps what running clients use), else a fresh random one.
Arguments: root, key, given, fresh.
*/}}
{{- define "minio.credential" -}}
{{- $stored := "" -}}
{{- $secret := lookup "v1" "Secret" .root.Release.Namespace (include "minio.fullname" .root) -}}
{{- if and $secret (hasKey ($secret.data | default dict) .key) -}}
{{- $stored = index $secret.data .key | b64dec -}}
{{- end -}}
{{- .given | default $stored | default .fresh -}}
{{- end }}
