{{/*
Names and labels. The fullname is the release name when it already contains the chart name, so
`helm install runbookd ... -n monitoring` gives the Service runbookd.monitoring that
deploy/alertmanager/ routes to.
*/}}
{{- define "runbookd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "runbookd.fullname" -}}
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

{{- define "runbookd.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "runbookd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "runbookd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "runbookd.labels" -}}
helm.sh/chart: {{ include "runbookd.chart" . }}
{{ include "runbookd.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: runbookd
{{- end }}

{{- define "runbookd.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "runbookd.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "runbookd.secretName" -}}
{{- default (printf "%s-secrets" (include "runbookd.fullname" .)) .Values.secret.existingSecret }}
{{- end }}

{{- define "runbookd.claimName" -}}
{{- default (printf "%s-state" (include "runbookd.fullname" .)) .Values.persistence.existingClaim }}
{{- end }}

{{/* The port the daemon listens on: the PORT of config.server.listen, the single source of truth. */}}
{{- define "runbookd.port" -}}
{{- $port := regexFind "[0-9]+$" (toString .Values.config.server.listen) }}
{{- if not $port }}
{{- fail "config.server.listen must be HOST:PORT, for example 0.0.0.0:8080" }}
{{- end }}
{{- $port }}
{{- end }}

{{/* The folder of the SQLite database: the PVC is mounted there. */}}
{{- define "runbookd.stateDir" -}}
{{- dir (toString .Values.config.state.path) }}
{{- end }}

{{/*
"true" when the state is PostgreSQL (config.state.url): replicas share the database, one leader acts
(a lease in the database), and no volume is needed. "" with the embedded SQLite store.
*/}}
{{- define "runbookd.ha" -}}
{{- if and .Values.config.state (get .Values.config.state "url") }}true{{ end }}
{{- end }}

{{/* Pods: 2 on PostgreSQL unless replicaCount says otherwise; always 1 on SQLite (one writer). */}}
{{- define "runbookd.replicas" -}}
{{- if include "runbookd.ha" . }}
{{- if kindIs "invalid" .Values.replicaCount }}2{{ else }}{{ .Values.replicaCount }}{{ end }}
{{- else }}
{{- if and (not (kindIs "invalid" .Values.replicaCount)) (ne (int .Values.replicaCount) 1) }}
{{- fail "replicaCount: the SQLite store has one writer, so one replica; set config.state.url (PostgreSQL) for more" }}
{{- end }}
{{- 1 }}
{{- end }}
{{- end }}

{{/* config.yaml as rendered: .Values.config, without state.path when the state is PostgreSQL. */}}
{{- define "runbookd.config" -}}
{{- $config := deepCopy .Values.config }}
{{- if include "runbookd.ha" . }}
{{- $_ := unset $config.state "path" }}
{{- end }}
{{- toYaml $config }}
{{- end }}
