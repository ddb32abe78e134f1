"""The few Kubernetes API calls the handlers make, over one kubernetes-client connection.

One generic path for every kind (the URL comes from apiVersion + kind) keeps apply() a
single function: server-side apply under the operator's field manager. The API server then
creates the object or brings it to the rendered state, and removes the fields the operator set
before and renders no more (a merge patch could only add and change, never take away).
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import kubernetes

# kind -> resource (plural): exactly the kinds render.py emits, plus what the handlers read
# and the fleets themselves (`gamefleet delete-fleet`).
PLURALS = {
    "GameFleet": "gamefleets",
    "ConfigMap": "configmaps",
    "Secret": "secrets",
    "Service": "services",
    "StatefulSet": "statefulsets",
    "Deployment": "deployments",
    "PodDisruptionBudget": "poddisruptionbudgets",
    "ServiceMonitor": "servicemonitors",
    "NetworkPolicy": "networkpolicies",
    "ClusterKopfPeering": "clusterkopfpeerings",
    "KopfPeering": "kopfpeerings",
}
MERGE_PATCH = "application/merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"  # JSON is YAML: the client sends the manifest as JSON
FIELD_MANAGER = "gamefleet-operator"
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def own_namespace() -> str | None:
    """The namespace the operator's pod runs in: $POD_NAMESPACE (the downward API, as manifests/ and
    the chart set it), else its mounted service account's; None outside a pod."""
    if namespace := os.environ.get("POD_NAMESPACE", "").strip():
        return namespace
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or None
    except OSError:
        return None


class ApiError(Exception):
    """A Kubernetes API call failed: `status` is the HTTP status (0 when none came back)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


def collection_path(api_version: str, kind: str, namespace: str | None) -> str:
    """The objects' URL; `namespace` None for a cluster-scoped kind."""
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    scope = "" if namespace is None else f"/namespaces/{namespace}"
    return f"{prefix}{scope}/{PLURALS[kind]}"


class Kube:
    """A connection to the API server (in-cluster service account, else $KUBECONFIG)."""

    def __init__(self, client: kubernetes.client.ApiClient) -> None:
        self.client = client

    @classmethod
    def connect(cls) -> Kube:
        config = kubernetes.client.Configuration()
        try:
            kubernetes.config.load_incluster_config(client_configuration=config)
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config(client_configuration=config)
        return cls(kubernetes.client.ApiClient(config))

    def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        query: list[tuple[str, str]] | None = None,
    ) -> Any:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        request = self.client.param_serialize(
            method=method,
            resource_path=path,
            query_params=query,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self.client.call_api(*request)
            response.read()
        except kubernetes.client.ApiException as e:
            raise ApiError(e.status or 0, str(e.reason)) from e
        if response.status >= 400:
            raise ApiError(response.status, response.data.decode(errors="replace")[:500])
        return json.loads(response.data)

    def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply: the object as rendered, created if need be (idempotent). `force`
        takes back fields someone else changed: the operator owns its children's rendered state."""
        meta = manifest["metadata"]
        path = collection_path(manifest["apiVersion"], manifest["kind"], meta.get("namespace"))
        query = [("fieldManager", FIELD_MANAGER), ("force", "true")]
        return self._call("PATCH", f"{path}/{meta['name']}", manifest, APPLY_PATCH, query)

    def create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Create the object (409 when it exists): for what must never be replaced once made."""
        meta = manifest["metadata"]
        return self._call(
            "POST", collection_path(manifest["apiVersion"], manifest["kind"], meta.get("namespace")), manifest
        )

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            return self._call("GET", f"{collection_path(api_version, kind, namespace)}/{name}")
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        """Ask for the object's deletion (finalizers may keep it a while); False when there was none."""
        try:
            self._call("DELETE", f"{collection_path(api_version, kind, namespace)}/{name}")
        except ApiError as e:
            if e.status == 404:
                return False
            raise
        return True

    def patch(self, api_version: str, kind: str, namespace: str, name: str, body: dict[str, Any]) -> None:
        self._call("PATCH", f"{collection_path(api_version, kind, namespace)}/{name}", body, MERGE_PATCH)

    def secret_value(self, namespace: str, name: str, key: str) -> str | None:
        secret = self.get("v1", "Secret", namespace, name)
        encoded = (secret or {}).get("data", {}).get(key)
        return None if encoded is None else base64.b64decode(encoded).decode()
