{{/* Grafana datasources: the bundled Prometheus and Jaeger, else the URLs given (uids fixed for dashboards). */}}
{{- define "gamefleet.grafanaDatasources" -}}
{{- $fullname := include "gamefleet.fullname" . -}}
{{- $prometheus := .Values.grafana.prometheusUrl -}}
{{- if .Values.prometheus.enabled -}}
{{- $prometheus = printf "http://%s-prometheus.%s.svc:9090" $fullname .Release.Namespace -}}
{{- end -}}
{{- $jaeger := .Values.grafana.jaegerUrl -}}
{{- if .Values.jaeger.enabled -}}
{{- $jaeger = printf "http://%s-jaeger.%s.svc:16686" $fullname .Release.Namespace -}}
{{- end -}}
apiVersion: 1
datasources:
{{- if $prometheus }}
  - name: Prometheus
    uid: prometheus
    type: prometheus
    access: proxy
    url: {{ $prometheus }}
    isDefault: true
{{- end }}
{{- if $jaeger }}
  - name: Jaeger
    uid: jaeger
    type: jaeger
    access: proxy
    url: {{ $jaeger }}
{{- end }}
{{- if not (or $prometheus $jaeger) }} []
{{- end }}
{{- end -}}

{{/* "true" when the dashboards ConfigMap is rendered (dashboards.enabled and the chart has dashboards), else "". */}}
{{- define "gamefleet.dashboardsRendered" -}}
{{- if and .Values.dashboards.enabled (.Files.Glob "dashboards/*.json") -}}true{{- end -}}
{{- end -}}

{{/*
Where Grafana's admin password comes from. Never a password the chart makes up while rendering
(`helm template` gives the same output every run):
  existingSecret  grafana.admin.existingSecret: the user's Secret (key grafana.admin.passwordKey); the chart renders none
  values          grafana.adminPassword: rendered into <fullname>-grafana (key admin-password)
  hook            neither: <fullname>-grafana-admin (key admin-password), which the hook in
                  grafana-admin-secret.yaml creates once in the cluster
(dig: a release upgraded with --reuse-values from values without grafana.admin.)
*/}}
{{- define "gamefleet.grafanaPasswordFrom" -}}
{{- if dig "admin" "existingSecret" "" .Values.grafana -}}
existingSecret
{{- else if .Values.grafana.adminPassword -}}
values
{{- else -}}
hook
{{- end -}}
{{- end -}}

{{/* The Secret with Grafana's admin password, and its key. */}}
{{- define "gamefleet.grafanaAdminSecret" -}}
{{- $from := include "gamefleet.grafanaPasswordFrom" . -}}
{{- if eq $from "existingSecret" -}}
{{- .Values.grafana.admin.existingSecret -}}
{{- else if eq $from "values" -}}
{{- printf "%s-grafana" (include "gamefleet.fullname" .) -}}
{{- else -}}
{{- printf "%s-grafana-admin" (include "gamefleet.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "gamefleet.grafanaAdminKey" -}}
{{- if eq (include "gamefleet.grafanaPasswordFrom" .) "existingSecret" -}}
{{- dig "admin" "passwordKey" "admin-password" .Values.grafana -}}
{{- else -}}
admin-password
{{- end -}}
{{- end -}}
