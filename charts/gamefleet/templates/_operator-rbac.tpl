{{/*
The operator's RBAC rules, those of manifests/rbac.yaml (cluster-wide) and of
manifests/namespaced/rbac.yaml (operator.namespaces set), exactly: tests/chart compares them.
*/}}

{{/* Cluster-scoped, read-only: all a namespaced operator keeps beyond its namespaces' Roles. */}}
{{- define "gamefleet.operatorClusterScopedRules" -}}
# kopf: discover resources as CRDs come and go; scan namespaces when run with --namespace
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
- apiGroups: [""]
  resources: [namespaces]
  verbs: [list, watch]
{{- end -}}

{{/* What the operator does to the fleets of a namespace; .peerings: the kopf peering resources. */}}
{{- define "gamefleet.operatorNamespacedRules" -}}
# kopf peering (leader election among the operator's replicas): the operator creates the peering
# object at start (server-side apply) and every replica keeps its entry in it fresh
- apiGroups: [kopf.dev]
  resources: [{{ .peerings }}]
  verbs: [create, list, watch, patch]
# kopf: Kubernetes Events on the fleets (kopf.info / kopf.warn)
- apiGroups: [""]
  resources: [events]
  verbs: [create]
# the fleets: watch, finalizer/annotations/spec.shards (autoscaler), status
- apiGroups: [gamefleet.dev]
  resources: [gamefleets]
  verbs: [list, watch, patch]
- apiGroups: [gamefleet.dev]
  resources: [gamefleets/status]
  verbs: [patch]
# children carry ownerReferences with blockOwnerDeletion
- apiGroups: [gamefleet.dev]
  resources: [gamefleets/finalizers]
  verbs: [update]
# the children render.py emits: server-side apply (kube.Kube.apply), which creates or patches
- apiGroups: [""]
  resources: [configmaps]
  verbs: [create, patch]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [create, patch]
# ... the optional ones (managed Redis, ServiceMonitor, NetworkPolicies): read and deleted when
# the spec drops them
- apiGroups: [""]
  resources: [services]
  verbs: [create, get, patch, delete]
- apiGroups: [monitoring.coreos.com]
  resources: [servicemonitors]
  verbs: [create, get, patch, delete]
- apiGroups: [apps]
  resources: [statefulsets]
  verbs: [create, get, patch, delete]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [create, get, patch, delete]
# ... and the router Deployment, whose status the operator reads (ready routers)
- apiGroups: [apps]
  resources: [deployments]
  verbs: [create, get, patch]
# spec.redis.passwordSecretRef: the password for the shard registry and the cleanup; managed
# Redis without one: the Secret of a generated password, created once
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, create]
{{- end -}}
