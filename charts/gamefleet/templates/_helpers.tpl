{{/* Resource names: <release>-gamefleet, or the release name when it already says gamefleet. */}}
{{- define "gamefleet.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else if contains "gamefleet" .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-gamefleet" .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object; "component" (operator, prometheus, ...) is the part it belongs to. */}}
{{- define "gamefleet.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | quote }}
app.kubernetes.io/part-of: gamefleet
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
{{ include "gamefleet.selector" . }}
{{- end -}}

{{/* The operator's pods are "gamefleet-operator" as in manifests/; the bundled tools use their own name. */}}
{{- define "gamefleet.selector" -}}
app.kubernetes.io/name: {{ .name | default .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "gamefleet.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* host:port of the fleet service a check or the load test targets: the value, else the chart's fleet. */}}
{{- define "gamefleet.target" -}}
{{- if .address -}}
{{- .address -}}
{{- else if .root.Values.fleet.enabled -}}
{{- printf "%s.%s.svc:50051" .root.Values.fleet.name .root.Release.Namespace -}}
{{- end -}}
{{- end -}}

{{/* Where the chart's fleet sends traces: the bundled Jaeger, else tracing.otlpEndpoint (may be empty). */}}
{{- define "gamefleet.otlpEndpoint" -}}
{{- if .Values.jaeger.enabled -}}
{{- printf "http://%s-jaeger.%s.svc:4317" (include "gamefleet.fullname" .) .Release.Namespace -}}
{{- else -}}
{{- .Values.tracing.otlpEndpoint -}}
{{- end -}}
{{- end -}}

{{/* Pod and container hardening shared by the gamefleet pods (the image's user is 10001). */}}
{{- define "gamefleet.podSecurity" -}}
runAsNonRoot: true
runAsUser: {{ .uid | default 10001 }}
{{- if .fsGroup }}
fsGroup: {{ .fsGroup }}
{{- end }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "gamefleet.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end -}}

{{/*
Scrape targets: pods named gamefleet (shards, routers) or gamefleet-operator with a container
port named "metrics". Target labels, shared by the bundled Prometheus and the ServiceMonitor:
label -> the pod label it comes from.
*/}}
{{- define "gamefleet.targetLabels" -}}
component: app_kubernetes_io_component
fleet: gamefleet_dev_fleet
{{- end -}}

{{/*
The label the chart's fleet's NetworkPolicies admit its clients by (the operator's default,
gamefleet.dev/client: <fleet>), for a pod that calls that fleet (.address empty). A pod calling
another fleet (.address) must be admitted by that fleet's networkPolicy.clients.
*/}}
{{- define "gamefleet.clientLabel" -}}
{{- if and (not .address) .root.Values.fleet.enabled -}}
gamefleet.dev/client: {{ .root.Values.fleet.name | quote }}
{{- end -}}
{{- end -}}

{{/* The Secret cert-manager fills with the chart fleet's certificate (fleet.certManager). */}}
{{- define "gamefleet.fleetTLSSecret" -}}
{{- printf "%s-tls" .Values.fleet.name -}}
{{- end -}}
