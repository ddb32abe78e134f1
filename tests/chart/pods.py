"""What the kubelet and the API server check of a pod, offline: the pod templates of rendered
objects, the ConfigMaps, Secrets, PersistentVolumeClaims and ServiceAccounts a pod names (a
missing one keeps the pod from starting: CreateContainerConfigError, ContainerCreating, or no pod
at all), and the Pod Security Standards' "restricted" profile as the PodSecurity admission
controller enforces it (https://kubernetes.io/docs/concepts/security/pod-security-standards/,
the "latest" version, Kubernetes 1.29 and later)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job")


Pod = tuple[str, dict[str, Any], dict[str, Any]]


def pod_templates(objects: Iterable[dict[str, Any]]) -> Iterator[Pod]:
    """(kind/name, pod metadata, pod spec) of every Pod and every workload's pod template."""
    for o in objects:
        where = f"{o['kind']}/{o['metadata']['name']}"
        if o["kind"] == "Pod":
            yield where, o["metadata"], o["spec"]
        elif o["kind"] in WORKLOADS:
            yield where, o["spec"]["template"].get("metadata", {}), o["spec"]["template"]["spec"]
        elif o["kind"] == "CronJob":
            template = o["spec"]["jobTemplate"]["spec"]["template"]
            yield where, template.get("metadata", {}), template["spec"]


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod["containers"], *pod.get("ephemeralContainers", [])]


@dataclass(frozen=True)
class Ref:
    """A pod's reference to another object; key: the key it needs in it (None: the object)."""

    kind: str
    name: str
    key: str | None = None
    where: str = ""
    optional: bool = False


def references(pod: dict[str, Any]) -> list[Ref]:
    """Every ConfigMap, Secret, PersistentVolumeClaim and ServiceAccount the pod spec names:
    volumes (and the keys their items and the mounts' subPaths take), envFrom, env valueFrom,
    imagePullSecrets and serviceAccountName."""
    refs = [Ref("ServiceAccount", pod.get("serviceAccountName", "default"), where="serviceAccountName")]
    refs += [Ref("Secret", s["name"], where="imagePullSecrets") for s in pod.get("imagePullSecrets", [])]
    by_volume: dict[str, tuple[str, str, bool]] = {}
    for volume in pod.get("volumes", []):
        where = f"volume {volume['name']}"
        sources = [volume] + [s for s in volume.get("projected", {}).get("sources", [])]
        for source in sources:
            for field, kind, name_key in (
                ("configMap", "ConfigMap", "name"),
                ("secret", "Secret", "secretName" if source is volume else "name"),
            ):
                if field in source:
                    ref = source[field]
                    optional = bool(ref.get("optional"))
                    refs.append(Ref(kind, ref[name_key], where=where, optional=optional))
                    refs += [
                        Ref(kind, ref[name_key], item["key"], where, optional)
                        for item in ref.get("items", [])
                    ]
                    if source is volume and "items" not in ref:
                        by_volume[volume["name"]] = (kind, ref[name_key], optional)
        if "persistentVolumeClaim" in volume:
            refs.append(
                Ref("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"], where=where)
            )
    for container in containers(pod):
        where = f"container {container['name']}"
        for source in container.get("envFrom", []):
            for field, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
                if field in source:
                    ref = source[field]
                    refs.append(Ref(kind, ref["name"], where=where, optional=bool(ref.get("optional"))))
        for env in container.get("env", []):
            for field, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
                if field in env.get("valueFrom", {}):
                    ref = env["valueFrom"][field]
                    optional = bool(ref.get("optional"))
                    refs.append(Ref(kind, ref["name"], ref["key"], f"{where} env {env['name']}", optional))
        for mount in container.get("volumeMounts", []):
            if mount.get("subPath") and mount["name"] in by_volume:  # a key of the whole ConfigMap/Secret
                kind, name, optional = by_volume[mount["name"]]
                refs.append(Ref(kind, name, mount["subPath"].split("/")[0], f"{where} mount", optional))
    return refs


def keys(manifest: dict[str, Any]) -> set[str]:
    return {*manifest.get("data", {}), *manifest.get("stringData", {}), *manifest.get("binaryData", {})}


def dangling(objects: Iterable[dict[str, Any]], provided: Iterable[Ref] = ()) -> list[str]:
    """The references of the pods in `objects` to something neither among `objects` (same
    namespace) nor `provided` (object, or object and key: made by a hook, or the user's own).
    An `optional` reference counts too: the chart names only what it renders."""
    objects = list(objects)
    pods = {o["metadata"].get("namespace") for o in objects if o["kind"] in (*WORKLOADS, "Pod", "CronJob")}
    assert len(pods) <= 1, pods  # (Roles may go in other namespaces: the operator's, namespaced)
    have: dict[tuple[str, str], set[str] | None] = {}
    for o in objects:
        if o["metadata"].get("namespace") in (None, *pods):  # a pod sees its own namespace's
            have[(o["kind"], o["metadata"]["name"])] = keys(o)
    for ref in provided:
        known = have.setdefault((ref.kind, ref.name), set())
        if ref.key is None:
            have[(ref.kind, ref.name)] = None  # any key
        elif known is not None:
            known.add(ref.key)
    missing = []
    for where, _, pod in pod_templates(objects):
        for ref in references(pod):
            if ref.kind == "ServiceAccount" and ref.name == "default":
                continue  # every namespace has it
            if (ref.kind, ref.name) not in have:
                missing.append(f"{where} {ref.where}: {ref.kind}/{ref.name} is not rendered")
                continue
            known = have[(ref.kind, ref.name)]
            if ref.key is not None and known is not None and ref.key not in known:
                missing.append(f"{where} {ref.where}: {ref.kind}/{ref.name} has no key {ref.key!r}")
    return missing


# --- Pod Security Standards, "restricted" (which includes "baseline") ----------------------------

RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected",
    "secret",
}  # fmt: skip
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}  # fmt: skip
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}


def restricted_violations(pod: dict[str, Any], metadata: dict[str, Any] | None = None) -> list[str]:
    """What PodSecurity admission at level "restricted" would refuse in this pod spec (empty:
    admitted). `metadata` is the pod's (for the AppArmor annotations)."""
    found = []
    pod_sc = pod.get("securityContext", {})
    found += [f"{host}: true" for host in ("hostNetwork", "hostPID", "hostIPC") if pod.get(host)]
    for volume in pod.get("volumes", []):
        kind = next(k for k in volume if k != "name")
        if kind not in RESTRICTED_VOLUMES:
            found.append(f"volume {volume['name']}: {kind}")
    for sysctl in pod_sc.get("sysctls", []):
        if sysctl["name"] not in SAFE_SYSCTLS:
            found.append(f"sysctl {sysctl['name']}")
    found += _selinux_apparmor("pod", pod_sc)
    if (pod_sc.get("seccompProfile") or {}).get("type") == "Unconfined":
        found.append("pod seccompProfile Unconfined")
    if pod_sc.get("runAsUser") == 0:
        found.append("pod runAsUser 0")
    if pod_sc.get("windowsOptions", {}).get("hostProcess"):
        found.append("pod hostProcess")
    for key, value in ((metadata or {}).get("annotations") or {}).items():
        if key.startswith("container.apparmor.security.beta.kubernetes.io/") and not (
            value == "runtime/default" or value.startswith("localhost/")
        ):
            found.append(f"annotation {key}: {value}")
    pod_non_root = pod_sc.get("runAsNonRoot") is True
    pod_seccomp = (pod_sc.get("seccompProfile") or {}).get("type") in ("RuntimeDefault", "Localhost")
    for container in containers(pod):
        name, sc = container["name"], container.get("securityContext", {})
        if sc.get("privileged"):
            found.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            found.append(f"{name}: allowPrivilegeEscalation not false")
        if sc.get("runAsNonRoot") is False or not (pod_non_root or sc.get("runAsNonRoot") is True):
            found.append(f"{name}: runAsNonRoot not true")
        if sc.get("runAsUser") == 0:
            found.append(f"{name}: runAsUser 0")
        seccomp = (sc.get("seccompProfile") or {}).get("type")
        if seccomp == "Unconfined" or not (pod_seccomp or seccomp in ("RuntimeDefault", "Localhost")):
            found.append(f"{name}: seccompProfile not RuntimeDefault or Localhost")
        capabilities = sc.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            found.append(f"{name}: capabilities do not drop ALL")
        if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
            found.append(f"{name}: capabilities add {capabilities['add']}")
        if sc.get("procMount", "Default") != "Default":
            found.append(f"{name}: procMount {sc['procMount']}")
        if sc.get("windowsOptions", {}).get("hostProcess"):
            found.append(f"{name}: hostProcess")
        found += _selinux_apparmor(name, sc)
        found += [
            f"{name}: hostPort {p['hostPort']}" for p in container.get("ports", []) if p.get("hostPort")
        ]
    return found


def _selinux_apparmor(where: str, sc: dict[str, Any]) -> list[str]:
    found = []
    selinux = sc.get("seLinuxOptions") or {}
    if selinux.get("type", "") not in SELINUX_TYPES or selinux.get("user") or selinux.get("role"):
        found.append(f"{where}: seLinuxOptions {selinux}")
    if (sc.get("appArmorProfile") or {}).get("type") == "Unconfined":
        found.append(f"{where}: appArmorProfile Unconfined")
    return found
