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
