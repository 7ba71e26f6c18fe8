{{/* Names and labels shared by every template. */}}

{{- define "mlw.name" -}}
mlworkload-operator
{{- end }}

{{- define "mlw.fullname" -}}
{{- if contains "mlworkload" .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-mlworkload" .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end }}

{{- define "mlw.labels" -}}
app.kubernetes.io/name: {{ include "mlw.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{- define "mlw.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mlw.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "mlw.webhookService" -}}
{{ include "mlw.fullname" . }}-webhook
{{- end }}

{{- /* The webhook pods' selector: another name than the controller's, whose selector (immutable) predates them. */}}
{{- define "mlw.webhookSelectorLabels" -}}
app.kubernetes.io/name: {{ include "mlw.name" . }}-webhook
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- /* Every pod of the release, controller and webhook: what the metrics Service and PodMonitoring select. */}}
{{- define "mlw.partOfLabels" -}}
app.kubernetes.io/part-of: {{ include "mlw.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "mlw.webhookServiceAccount" -}}
{{ .Values.serviceAccount.name }}-webhook
{{- end }}

{{- /* cert-manager's Secret (webhook.certificates: certManager). */}}
{{- define "mlw.webhookSecret" -}}
{{ include "mlw.fullname" . }}-webhook-tls
{{- end }}

{{- /* The Secret the webhook pods keep (webhook.certificates: operator). Not -webhook-tls: earlier versions of
the chart rendered that one, and `helm upgrade` would delete it after the pods had taken it over. */}}
{{- define "mlw.webhookCASecret" -}}
{{ include "mlw.fullname" . }}-webhook-ca
{{- end }}

{{- /* "true" when cert-manager provides the webhook certificate, else empty. */}}
{{- define "mlw.certManager" -}}
{{- if or (eq .Values.webhook.certificates "certManager") .Values.webhook.certManager.enabled }}true{{ end }}
{{- end }}

{{- define "mlw.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end }}

{{- /* Settings both roles read: where to watch, logs, ports, and what admission and reconcile both resolve
(the GKE cluster and the network defaults a policy may leave out). */}}
{{- define "mlw.sharedEnv" -}}
{{- $gcp := .Values.operator.gcp }}
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: MLW_NAMESPACES
  value: {{ join "," .Values.operator.namespaces | quote }}
- name: MLW_LOG_FORMAT
  value: {{ .Values.operator.logFormat | quote }}
- name: MLW_METRICS_PORT
  value: {{ .Values.metrics.port | quote }}
- name: MLW_HEALTH_PORT
  value: {{ .Values.health.port | quote }}
{{- with .Values.operator.installation }}
- name: MLW_INSTALLATION
  value: {{ . | quote }}
{{- end }}
{{- with $gcp.mode }}
- name: MLW_GCP_MODE
  value: {{ . | quote }}
{{- end }}
{{- with $gcp.project }}
- name: MLW_GCP_PROJECT
  value: {{ . | quote }}
{{- end }}
{{- with $gcp.location }}
- name: MLW_GCP_LOCATION
  value: {{ . | quote }}
{{- end }}
{{- with $gcp.cluster }}
- name: MLW_GKE_CLUSTER
  value: {{ . | quote }}
{{- end }}
{{- with .Values.operator.network }}
- name: MLW_KUBERAY_NAMESPACE
  value: {{ .kuberayNamespace | quote }}
- name: MLW_KUBERAY_POD_LABELS
  value: {{ include "mlw.keyValues" .kuberayPodLabels | quote }}
{{- with .apiServerCIDRs }}
- name: MLW_API_SERVER_CIDRS
  value: {{ join "," . | quote }}
{{- end }}
{{- end }}
{{- end }}

{{- define "mlw.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* A map as k=v,k2=v2 (sorted), the form MLW_KUBERAY_POD_LABELS takes. */}}
{{- define "mlw.keyValues" -}}
{{- $pairs := list -}}
{{- range $key, $value := . -}}
{{- $pairs = append $pairs (printf "%s=%s" $key $value) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end -}}
