"""NetworkPolicy (networking.k8s.io/v1) ingress semantics, offline: whether a set of policies lets
one pod connect to another on a port, as the API reference defines them.

- A pod that no policy with policyType Ingress selects (in its own namespace) takes any connection.
- A selected pod takes a connection that a rule of one of those policies admits: the rule's `ports`
  (empty or absent: every port) hold the port and protocol, and its `from` (empty or absent: every
  source) has a peer the source matches.
- A peer's podSelector alone: those pods of the policy's namespace; namespaceSelector alone: every
  pod of the namespaces it selects; both: those pods in those namespaces. A selector `{}` selects
  everything. Namespaces carry `kubernetes.io/metadata.name: <name>` (the API server sets it).

Not modelled (the operator renders none of them): ipBlock peers, named ports, endPort, egress.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Pod:
    namespace: str
    labels: Mapping[str, str]
    namespace_labels: Mapping[str, str] = field(default_factory=dict)  # besides its name label

    @property
    def all_namespace_labels(self) -> dict[str, str]:
        return {**self.namespace_labels, "kubernetes.io/metadata.name": self.namespace}


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A LabelSelector against labels (matchLabels and matchExpressions, ANDed)."""
    if any(labels.get(key) != value for key, value in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        present = key in labels
        if not {
            "In": present and labels.get(key) in values,
            "NotIn": not present or labels[key] not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }[operator]:
            return False
    return True


def _peer_matches(peer: Mapping[str, Any], namespace: str, source: Pod) -> bool:
    if "ipBlock" in peer:
        raise NotImplementedError("ipBlock peers are not modelled")
    namespaces, pods = peer.get("namespaceSelector"), peer.get("podSelector")
    if namespaces is None:
        in_namespace = source.namespace == namespace
    else:
        in_namespace = selects(namespaces, source.all_namespace_labels)
    return in_namespace and (pods is None or selects(pods, source.labels))


def _port_matches(rule_port: Mapping[str, Any], port: int, protocol: str) -> bool:
    if isinstance(rule_port.get("port"), str) or "endPort" in rule_port:
        raise NotImplementedError("named ports and endPort are not modelled")
    return rule_port.get("protocol", "TCP") == protocol and rule_port.get("port") in (None, port)


def admitted(
    policies: Iterable[Mapping[str, Any]], source: Pod, target: Pod, port: int, protocol: str = "TCP"
) -> bool:
    """Whether `policies` let `source` open a connection to `target` on `port`."""
    selecting = [
        p
        for p in policies
        if p["kind"] == "NetworkPolicy"
        and p["metadata"]["namespace"] == target.namespace
        and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
        and selects(p["spec"]["podSelector"], target.labels)
    ]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get("ingress") or []:
            ports = rule.get("ports") or []
            peers = rule.get("from") or []
            if (not ports or any(_port_matches(p, port, protocol) for p in ports)) and (
                not peers or any(_peer_matches(peer, target.namespace, source) for peer in peers)
            ):
                return True
    return False


def pod_of(manifests: Iterable[Mapping[str, Any]], kind: str, name: str) -> Pod:
    """The pods of a rendered workload, as the policies see them: namespace and template labels."""
    workload = next(m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name)
    return Pod(workload["metadata"]["namespace"], workload["spec"]["template"]["metadata"]["labels"])
