{{/* The chart name, or nameOverride. */}}
{{- define "nodeops.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of the release's objects: fullnameOverride, else <release>-<name>, or
<release> when it already contains <name>. Cluster-scoped objects (ClusterRole,
ClusterRoleBinding) carry it too, so two releases never share them.
*/}}
{{- define "nodeops.fullname" -}}
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

{{/* chart-version, for the helm.sh/chart label. */}}
{{- define "nodeops.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The labels every object carries. */}}
{{- define "nodeops.labels" -}}
helm.sh/chart: {{ include "nodeops.chart" . }}
{{ include "nodeops.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: nodeops
{{- end }}

{{/* The labels that select the operator's pods (never change them: selectors are immutable). */}}
{{- define "nodeops.selectorLabels" -}}
app.kubernetes.io/name: {{ include "nodeops.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The operator's ServiceAccount. */}}
{{- define "nodeops.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "nodeops.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator image. */}}
{{- define "nodeops.image" -}}
{{- printf "%s:%s" .Values.image.repository (default (printf "v%s" .Chart.AppVersion) .Values.image.tag) }}
{{- end }}

{{/* The runner image (--runner-image). */}}
{{- define "nodeops.runnerImage" -}}
{{- printf "%s:%s" .Values.runnerImage.repository (default (printf "v%s" .Chart.AppVersion) .Values.runnerImage.tag) }}
{{- end }}

{{/* host:port of the operator's metrics endpoint for the helm test pod; empty when there is none. */}}
{{- define "nodeops.testAddress" -}}
{{- if .Values.tests.address }}
{{- .Values.tests.address }}
{{- else if .Values.metrics.service.enabled }}
{{- printf "%s-metrics.%s.svc:%v" (include "nodeops.fullname" .) .Release.Namespace .Values.metrics.service.port }}
{{- end }}
{{- end }}

{{/* The leader-election Lease. */}}
{{- define "nodeops.leaseName" -}}
{{- default (include "nodeops.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/* Refuses values that cannot work, at render time. */}}
{{- define "nodeops.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) }}
{{- fail "replicaCount > 1 needs leaderElection.enabled: replicas without leader election would reconcile the same objects at once" }}
{{- end }}
{{- with .Values.runnerImage.pullPolicy }}
{{- if not (has . (list "Always" "IfNotPresent" "Never")) }}
{{- fail (printf "runnerImage.pullPolicy must be Always, IfNotPresent or Never, not %q" .) }}
{{- end }}
{{- end }}
{{- if and .Values.apiServer.port (not .Values.apiServer.host) }}
{{- fail "apiServer.port needs apiServer.host" }}
{{- end }}
{{- if not (has .Values.logFormat (list "json" "text")) }}
{{- fail (printf "logFormat must be json or text, not %q" .Values.logFormat) }}
{{- end }}
{{- with .Values.defaultAgent }}
{{- if .enabled }}
{{- if not (has .mode (list "DaemonSet" "HostInstaller")) }}
{{- fail (printf "defaultAgent.mode must be DaemonSet or HostInstaller, not %q" .mode) }}
{{- end }}
{{- if eq .mode "HostInstaller" }}
{{- if not .installer }}
{{- fail "defaultAgent.installer ({commandRef, image}) is required when defaultAgent.mode is HostInstaller" }}
{{- end }}
{{- if not (has .namespace $.Values.hostModeNamespaces) }}
{{- fail (printf "a HostInstaller agent's installer Jobs run in Host mode: add %q (defaultAgent.namespace) to hostModeNamespaces" .namespace) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
