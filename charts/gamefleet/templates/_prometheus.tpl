{{/*
The bundled Prometheus's configuration: itself, and every pod named gamefleet (shards,
routers) or gamefleet-operator that has a container port named "metrics". job is the pod's
app.kubernetes.io/name, as with the ServiceMonitor (jobLabel), so dashboards read the same.
*/}}
{{- define "gamefleet.prometheusConfig" -}}
global:
  scrape_interval: {{ .Values.prometheus.scrapeInterval }}
  evaluation_interval: {{ .Values.prometheus.scrapeInterval }}
scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: [localhost:9090]
  - job_name: gamefleet
    kubernetes_sd_configs:
      - role: pod
        {{- with .Values.prometheus.namespaces }}
        namespaces:
          names:
            {{- toYaml (concat . (list $.Release.Namespace) | uniq) | nindent 12 }}
        {{- end }}
    relabel_configs:
      - source_labels: [__meta_kubernetes_pod_label_app_kubernetes_io_name]
        regex: gamefleet|gamefleet-operator
        action: keep
      - source_labels: [__meta_kubernetes_pod_container_port_name]
        regex: metrics
        action: keep
      - source_labels: [__meta_kubernetes_pod_phase]
        regex: Running
        action: keep
      - source_labels: [__meta_kubernetes_pod_label_app_kubernetes_io_name]
        target_label: job
      - source_labels: [__meta_kubernetes_namespace]
        target_label: namespace
      - source_labels: [__meta_kubernetes_pod_name]
        target_label: pod
      {{- range $target, $source := include "gamefleet.targetLabels" . | fromYaml }}
      - source_labels: [__meta_kubernetes_pod_label_{{ $source }}]
        target_label: {{ $target }}
      {{- end }}
{{- end -}}
