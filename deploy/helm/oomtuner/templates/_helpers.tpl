{{/*
Names, labels and the bits of the pod specs that the operator and the agent share.
*/}}

{{- define "oomtuner.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* <release>-<chart>, or the release name alone when it already contains the chart name. */}}
{{- define "oomtuner.fullname" -}}
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

{{- define "oomtuner.agentName" -}}
{{- printf "%s-agent" (include "oomtuner.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "oomtuner.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object of the release. */}}
{{- define "oomtuner.labels" -}}
helm.sh/chart: {{ include "oomtuner.chart" . }}
app.kubernetes.io/name: {{ include "oomtuner.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: oomtuner
{{- end }}

{{- define "oomtuner.selectorLabels" -}}
app.kubernetes.io/name: {{ include "oomtuner.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "oomtuner.agentSelectorLabels" -}}
app.kubernetes.io/name: {{ include "oomtuner.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: agent
{{- end }}

{{- define "oomtuner.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "oomtuner.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "oomtuner.agentServiceAccountName" -}}
{{- if .Values.agent.serviceAccount.create }}
{{- default (include "oomtuner.agentName" .) .Values.agent.serviceAccount.name }}
{{- else }}
{{- required "agent.serviceAccount.name is required when agent.serviceAccount.create is false" .Values.agent.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* [registry/]repository:tag, or [registry/]repository@digest; the tag defaults to the chart's appVersion. */}}
{{- define "oomtuner.image" -}}
{{- $repository := .Values.image.repository }}
{{- with .Values.image.registry }}
{{- $repository = printf "%s/%s" (trimSuffix "/" .) $repository }}
{{- end }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The items of a pod spec's topologySpreadConstraints: (list $constraints $selectorLabels). A
constraint without a labelSelector gets the pods' own selector labels, so it counts the pods it spreads.
*/}}
{{- define "oomtuner.topologySpread" -}}
{{- $selector := index . 1 | fromYaml }}
{{- $constraints := list }}
{{- range index . 0 }}
{{- $c := deepCopy . }}
{{- if not $c.labelSelector }}
{{- $_ := set $c "labelSelector" (dict "matchLabels" $selector) }}
{{- end }}
{{- $constraints = append $constraints $c }}
{{- end }}
{{- toYaml $constraints }}
{{- end }}

{{/* Whether the replicas use kopf peering (more than one replica). */}}
{{- define "oomtuner.peering" -}}
{{- if gt (int .Values.replicaCount) 1 }}true{{ end }}
{{- end }}

{{/* The name of the kopf peering object(s): one per release, so two releases never share one. */}}
{{- define "oomtuner.peeringName" -}}
{{- include "oomtuner.fullname" . }}
{{- end }}

{{/* The web dashboard (`dashboard.web`): its name, selector and ServiceAccount. */}}
{{- define "oomtuner.dashboardName" -}}
{{- printf "%s-dashboard" (include "oomtuner.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "oomtuner.dashboardSelectorLabels" -}}
app.kubernetes.io/name: {{ include "oomtuner.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: dashboard
{{- end }}

{{- define "oomtuner.dashboardServiceAccountName" -}}
{{- if .Values.dashboard.web.serviceAccount.create }}
{{- default (include "oomtuner.dashboardName" .) .Values.dashboard.web.serviceAccount.name }}
{{- else }}
{{- required "dashboard.web.serviceAccount.name is required when dashboard.web.serviceAccount.create is false" .Values.dashboard.web.serviceAccount.name }}
{{- end }}
{{- end }}
