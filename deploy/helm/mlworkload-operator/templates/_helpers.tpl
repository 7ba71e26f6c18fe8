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

{{- define "mlw.webhookSecret" -}}
{{ include "mlw.fullname" . }}-webhook-tls
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
