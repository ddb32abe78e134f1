"""Create the Secret $SECRET_NAME in $SECRET_NAMESPACE with $SECRET_KEY: a random password (256
bits), unless it exists: then it is kept as it is, so the password outlives upgrades and no
rendered manifest holds it. The chart's pre-install/pre-upgrade hook (grafana-admin-secret.yaml)
runs this with the gamefleet image's Python, standard library only, in the cluster: the pod's
service-account token and CA, the API server at KUBERNETES_SERVICE_HOST:KUBERNETES_SERVICE_PORT
($KUBERNETES_API and $SERVICE_ACCOUNT_DIR replace them in tests/chart)."""

import base64
import json
import os
import secrets
import ssl
import sys
import urllib.error
import urllib.request


def api_server():
    if os.environ.get("KUBERNETES_API"):
        return os.environ["KUBERNETES_API"].rstrip("/")
    host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


def call(method, url, token, context, body=None):
    request = urllib.request.Request(
        url, method=method, data=None if body is None else json.dumps(body).encode()
    )
    request.add_header("Authorization", f"Bearer {token}")
    request.add_header("Accept", "application/json")
    if body is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, context=context, timeout=30) as response:
        return json.loads(response.read() or b"{}")


def main():
    namespace, name, key = (os.environ[v] for v in ("SECRET_NAMESPACE", "SECRET_NAME", "SECRET_KEY"))
    account = os.environ.get("SERVICE_ACCOUNT_DIR", "/var/run/secrets/kubernetes.io/serviceaccount")
    with open(os.path.join(account, "token")) as f:
        token = f.read().strip()
    api = api_server()
    context = (
        ssl.create_default_context(cafile=os.path.join(account, "ca.crt"))
        if api.startswith("https:")
        else None
    )
    url = f"{api}/api/v1/namespaces/{namespace}/secrets"
    password = secrets.token_urlsafe(32)
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": json.loads(os.environ.get("SECRET_LABELS") or "{}"),
            "annotations": json.loads(os.environ.get("SECRET_ANNOTATIONS") or "{}"),
        },
        "data": {key: base64.b64encode(password.encode()).decode()},
    }
    try:
        call("POST", url, token, context, secret)
        print(f"created Secret {namespace}/{name} ({key}: a random password)")
        return 0
    except urllib.error.HTTPError as error:
        if error.code != 409:  # 409 AlreadyExists: an earlier install made it, keep it
            print(
                f"creating Secret {namespace}/{name}: HTTP {error.code}: {error.read().decode()}",
                file=sys.stderr,
            )
            return 1
    existing = call("GET", f"{url}/{name}", token, context)
    if not (existing.get("data") or {}).get(key):
        print(
            f"Secret {namespace}/{name} exists without {key}: delete it (a new password is made) "
            "or name your own Secret in grafana.admin.existingSecret",
            file=sys.stderr,
        )
        return 1
    print(f"Secret {namespace}/{name} exists: kept")
    return 0


if __name__ == "__main__":
    sys.exit(main())
