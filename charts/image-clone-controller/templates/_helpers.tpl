{{/*
Names. With the release named like the chart (helm install image-clone-controller ...), every object is named
as in config/, and the controller's name flags keep their defaults.
*/}}
{{- define "image-clone-controller.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "image-clone-controller.fullname" -}}
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

{{- define "image-clone-controller.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object: Helm's standard ones. */}}
{{- define "image-clone-controller.labels" -}}
helm.sh/chart: {{ include "image-clone-controller.chart" . }}
{{ include "image-clone-controller.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "image-clone-controller.selectorLabels" -}}
app.kubernetes.io/name: {{ include "image-clone-controller.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "image-clone-controller.serviceAccountName" -}}
{{- default (include "image-clone-controller.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{- define "image-clone-controller.backupRegistry" -}}
{{- if not .Values.backupRegistry }}
{{- fail "backupRegistry is required: the registry (and optional path) copies go to, e.g. registry.example.com/backup" }}
{{- end }}
{{- .Values.backupRegistry }}
{{- end }}

{{- define "image-clone-controller.registrySecret" -}}
{{- .Values.registryCredentials.existingSecret | default (printf "%s-registry" (include "image-clone-controller.fullname" .)) }}
{{- end }}

{{- define "image-clone-controller.webhookService" -}}
{{- printf "%s-webhook" (include "image-clone-controller.fullname" .) }}
{{- end }}

{{- define "image-clone-controller.webhookSecret" -}}
{{- printf "%s-webhook-cert" (include "image-clone-controller.fullname" .) }}
{{- end }}

{{/*
flag renders "- --NAME=VALUE" when VALUE differs from the controller's default for NAME, so that a release
with the default names passes the same arguments as config/ does. Arguments: (list NAME VALUE DEFAULT).
*/}}
{{- define "image-clone-controller.flag" -}}
{{- $value := index . 1 | toString }}
{{- if ne $value (index . 2 | toString) }}
- --{{ index . 0 }}={{ $value }}
{{- end }}
{{- end }}

{{/* workloadKinds, checked against the kinds the controller knows (it matches them case-insensitively). */}}
{{- define "image-clone-controller.workloadKinds" -}}
{{- $known := list "deployment" "daemonset" "statefulset" "cronjob" "job" }}
{{- range .Values.workloadKinds }}
{{- if not (has (lower .) $known) }}
{{- fail (printf "workloadKinds: unknown kind %q: the kinds are Deployment, DaemonSet, StatefulSet, CronJob, Job" .) }}
{{- end }}
{{- end }}
{{- join "," .Values.workloadKinds }}
{{- end }}
