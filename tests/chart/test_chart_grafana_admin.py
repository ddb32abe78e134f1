"""Grafana's admin password: never made up while rendering (the same values give the same
manifests, test_chart_pods), never empty, never one the chart or Grafana ships with. It comes from
the user's Secret (grafana.admin.existingSecret), from grafana.adminPassword, or, by default,
from a Secret that the chart's pre-install/pre-upgrade hook creates once in the cluster; that
hook's command runs here against an API server that answers as Kubernetes does."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from .helm import (
    CHART,
    FULLNAME,
    NAMESPACE,
    RELEASE,
    ROOT,
    VALUE_SETS,
    HelmFailed,
    find,
    helm,
    rendered,
    template,
    user_secrets,
)
from .pods import pod_templates

WITH_GRAFANA = [n for n in VALUE_SETS if VALUE_SETS[n].get("grafana", {}).get("enabled", True)]
HOOK = f"{FULLNAME}-create-grafana-admin"


def password_ref(objects: tuple[dict[str, Any], ...] | list[dict[str, Any]]) -> dict[str, Any]:
    pod = find(objects, "Deployment", f"{FULLNAME}-grafana")["spec"]["template"]["spec"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert set(env["GF_SECURITY_ADMIN_PASSWORD"]) == {"name", "valueFrom"}  # no literal value
    ref = env["GF_SECURITY_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert not ref.get("optional")  # without it Grafana's admin password would be "admin"
    return ref


def strings(node: Any) -> set[str]:
    if isinstance(node, dict):
        return set().union(set(), *(strings(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(set(), *(strings(v) for v in node))
    return {node} if isinstance(node, str) else set()


@pytest.mark.parametrize("name", WITH_GRAFANA)
def test_the_password_comes_from_the_users_secret_the_values_or_the_hook(name: str) -> None:
    values, objects = VALUE_SETS[name], rendered(name)
    ref = password_ref(objects)
    given = values.get("grafana", {}).get("adminPassword")
    hooks = [o for o in objects if o["metadata"]["name"] == HOOK]
    if (ref["name"], ref["key"]) in user_secrets(values):
        assert not hooks and not given
    elif given:
        secret = find(objects, "Secret", ref["name"])
        assert base64.b64decode(secret["data"][ref["key"]]).decode() == given
        assert not hooks
    else:
        job = find(objects, "Job", HOOK)
        env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert (env["SECRET_NAME"], env["SECRET_KEY"]) == (ref["name"], ref["key"])
        assert not [o for o in objects if o["kind"] == "Secret"]


@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_rendered_secret_holds_only_what_the_values_gave(name: str) -> None:
    """No made-up, random or built-in secret value in any manifest, and none empty."""
    given = strings(VALUE_SETS[name])
    for secret in (o for o in rendered(name) if o["kind"] == "Secret"):
        assert not secret.get("stringData")
        for key, value in secret["data"].items():
            decoded = base64.b64decode(value).decode()
            assert decoded and decoded in given, f"Secret/{secret['metadata']['name']} {key}"


def test_a_password_in_the_values_and_a_secret_of_ones_own_are_refused_together() -> None:
    values = {"grafana": {"adminPassword": "s3cret", "admin": {"existingSecret": "mine"}}}
    with pytest.raises(HelmFailed, match=r"grafana\.adminPassword and grafana\.admin\.existingSecret"):
        template(values)


def test_values_from_before_grafana_admin_render_as_the_default() -> None:
    """`helm upgrade --reuse-values` of a release installed before grafana.admin existed."""
    args = ("template", RELEASE, str(CHART), "--namespace", NAMESPACE)
    assert helm(*args, "--set", "grafana.admin=null") == helm(*args)


def test_the_readme_reads_the_password_from_where_the_default_install_keeps_it() -> None:
    """README's `helm install gamefleet charts/gamefleet --namespace gamefleet`, then its
    `kubectl get secret` line."""
    readme = (ROOT / "README.md").read_text()
    assert "helm install gamefleet charts/gamefleet --namespace gamefleet" in readme
    line = re.search(
        r"kubectl -n gamefleet get secret (\S+) -o jsonpath='\{\.data\.(\S+)\}' \| base64 -d", readme
    )
    assert line, "the README's kubectl get secret line"
    objects = [
        o for o in template({}, release="gamefleet") if o["metadata"].get("namespace") in (None, NAMESPACE)
    ]
    grafana = next(
        o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("grafana")
    )
    env = {e["name"]: e for e in grafana["spec"]["template"]["spec"]["containers"][0]["env"]}
    ref = env["GF_SECURITY_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert (line[1], line[2].replace("\\.", ".")) == (ref["name"], ref["key"])


# --- the hook's command, against an API server ---------------------------------------------------


class FakeApi(BaseHTTPRequestHandler):
    """Secrets as the API server serves them: POST creates (409 when it exists), GET reads."""

    secrets: dict[tuple[str, str], dict[str, Any]]
    calls: list[tuple[str, str, str]]
    token = "hook-token"

    def _answer(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self) -> tuple[str, str | None] | None:
        match = re.fullmatch(r"/api/v1/namespaces/([^/]+)/secrets(?:/([^/]+))?", self.path)
        return (match[1], match[2]) if match else None

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        route = self._route()
        self.calls.append(("create", "secrets", ""))
        if self.headers["Authorization"] != f"Bearer {self.token}" or not route or route[1]:
            return self._answer(401 if route else 404, {"kind": "Status"})
        key = (route[0], body["metadata"]["name"])
        if key in self.secrets:
            return self._answer(409, {"kind": "Status", "reason": "AlreadyExists", "code": 409})
        self.secrets[key] = body
        return self._answer(201, body)

    def do_GET(self) -> None:
        route = self._route()
        self.calls.append(("get", "secrets", route[1] if route and route[1] else ""))
        if self.headers["Authorization"] != f"Bearer {self.token}" or not route or not route[1]:
            return self._answer(401 if route else 404, {"kind": "Status"})
        if (route[0], route[1]) not in self.secrets:
            return self._answer(404, {"kind": "Status", "reason": "NotFound", "code": 404})
        return self._answer(200, self.secrets[(route[0], route[1])])

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def api() -> Iterator[type[FakeApi]]:
    handler = type("Api", (FakeApi,), {"secrets": {}, "calls": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    handler.url = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    yield handler
    server.shutdown()
    server.server_close()


def run_hook(api: type[FakeApi], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """The hook Job's container command, as the kubelet would run it (its env, a token file)."""
    job = find(rendered("default"), "Job", HOOK)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python", "-c"]
    (tmp_path / "token").write_text(api.token + "\n")
    env = {e["name"]: e["value"] for e in container["env"]}
    env |= {"KUBERNETES_API": api.url, "SERVICE_ACCOUNT_DIR": str(tmp_path)}  # type: ignore[attr-defined]
    return subprocess.run(
        [sys.executable, "-I", "-c", *container["args"]], env=env, capture_output=True, text=True, timeout=60
    )


def test_the_hook_creates_a_random_password_once_and_keeps_it(api: type[FakeApi], tmp_path: Path) -> None:
    ref = password_ref(rendered("default"))
    first = run_hook(api, tmp_path)
    assert first.returncode == 0, first.stderr
    secret = api.secrets[(NAMESPACE, ref["name"])]
    password = base64.b64decode(secret["data"][ref["key"]]).decode()
    assert len(password) >= 32 and re.fullmatch(r"[-_A-Za-z0-9]+", password)
    assert secret["metadata"]["labels"]["app.kubernetes.io/component"] == "grafana"
    assert "helm uninstall keeps it" in secret["metadata"]["annotations"]["gamefleet.dev/created-by"]
    again = run_hook(api, tmp_path)  # an upgrade
    assert again.returncode == 0, again.stderr
    assert "kept" in again.stdout
    assert base64.b64decode(api.secrets[(NAMESPACE, ref["name"])]["data"][ref["key"]]).decode() == password
    api.secrets.clear()  # another cluster: another password
    assert run_hook(api, tmp_path).returncode == 0
    assert base64.b64decode(api.secrets[(NAMESPACE, ref["name"])]["data"][ref["key"]]).decode() != password


def test_the_hook_fails_on_a_secret_of_that_name_without_the_key(api: type[FakeApi], tmp_path: Path) -> None:
    ref = password_ref(rendered("default"))
    api.secrets[(NAMESPACE, ref["name"])] = {"metadata": {"name": ref["name"]}, "data": {"other": "eA=="}}
    done = run_hook(api, tmp_path)
    assert done.returncode == 1
    assert "grafana.admin.existingSecret" in done.stderr


def test_the_hooks_role_grants_exactly_the_calls_it_makes(api: type[FakeApi], tmp_path: Path) -> None:
    assert run_hook(api, tmp_path).returncode == 0
    assert run_hook(api, tmp_path).returncode == 0
    role = find(rendered("default"), "Role", HOOK)
    granted = {
        (verb, resource, name)
        for rule in role["rules"]
        for verb in rule["verbs"]
        for resource in rule["resources"]
        for name in rule.get("resourceNames", [""])
    }
    assert set(api.calls) == granted
    binding = find(rendered("default"), "RoleBinding", HOOK)
    pod = next(p for where, _, p in pod_templates(rendered("default")) if where == f"Job/{HOOK}")
    assert binding["subjects"][0]["name"] == pod["serviceAccountName"] and binding["roleRef"]["name"] == HOOK
    hooks = {
        o["kind"]: o["metadata"]["annotations"] for o in rendered("default") if o["metadata"]["name"] == HOOK
    }
    assert {a["helm.sh/hook"] for a in hooks.values()} == {"pre-install,pre-upgrade"}
    assert int(hooks["Job"]["helm.sh/hook-weight"]) > max(
        int(a["helm.sh/hook-weight"]) for k, a in hooks.items() if k != "Job"
    )
