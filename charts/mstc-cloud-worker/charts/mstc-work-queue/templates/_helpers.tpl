{{/* Chart name, overridable. */}}
{{- define "mstc-work-queue.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Object names: "<release>-mstc-work-queue" unless fullnameOverride is set (for example to
"mstc-work-queue", the Java deployment's host name). Kept this simple on purpose: the umbrella
chart computes the same name to point the worker at this broker.
*/}}
{{- define "mstc-work-queue.fullname" -}}
{{- default (printf "%s-%s" .Release.Name .Chart.Name) .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mstc-work-queue.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mstc-work-queue.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mstc-work-queue.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "mstc-work-queue.labels" -}}
helm.sh/chart: {{ include "mstc-work-queue.chart" . }}
{{ include "mstc-work-queue.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: broker
app.kubernetes.io/part-of: MSTC
{{- end }}

{{/*
One credential: the value given in values, else the one already stored in this release's
Secret (so `helm upgrade` keeps what running clients use), else a fresh random one.
Arguments: root, key, given, fresh.
*/}}
{{- define "mstc-work-queue.credential" -}}
{{- $stored := "" -}}
{{- $secret := lookup "v1" "Secret" .root.Release.Namespace (include "mstc-work-queue.fullname" .root) -}}
{{- if and $secret (hasKey ($secret.data | default dict) .key) -}}
{{- $stored = index $secret.data .key | b64dec -}}
{{- end -}}
{{- .given | default $stored | default .fresh -}}
{{- end }}

{{/*
The broker's topology as RabbitMQ definitions (JSON). The work queue is declared exactly as
Java-era clients re-declare it (durable, no arguments): RabbitMQ refuses a re-declaration
whose arguments differ, so dead-lettering comes from a policy instead of x-arguments.
*/}}
{{- define "mstc-work-queue.topology" -}}
{{- $q := .Values.global.queues -}}
{{- $queue := dict "vhost" "/" "durable" true "auto_delete" false "arguments" (dict) -}}
{{- $exchange := dict "vhost" "/" "durable" true "auto_delete" false "internal" false "arguments" (dict) -}}
{{- $binding := dict "vhost" "/" "destination_type" "queue" "arguments" (dict) -}}
{{- $defs := dict
  "vhosts" (list (dict "name" "/"))
  "exchanges" (list
    (merge (dict "name" $q.exchange "type" "direct") $exchange)
    (merge (dict "name" $q.deadLetterExchange "type" "fanout") $exchange))
  "queues" (list
    (merge (dict "name" $q.work) $queue)
    (merge (dict "name" $q.results) $queue)
    (merge (dict "name" $q.deadLetter) $queue)
    (merge (dict "name" $q.control) $queue))
  "bindings" (list
    (merge (dict "source" $q.exchange "destination" $q.work "routing_key" $q.work) $binding)
    (merge (dict "source" $q.deadLetterExchange "destination" $q.deadLetter "routing_key" "") $binding))
  "policies" (list (dict
    "vhost" "/"
    "name" "mstc-work-dead-letter"
    "pattern" (printf "^%s$" (regexQuoteMeta $q.work))
    "apply-to" "queues"
    "priority" 10
    "definition" (dict "dead-letter-exchange" $q.deadLetterExchange)))
-}}
{{- toPrettyJson $defs }}
{{- end }}
