"""The API server as a pod reaches it: the test's kmock served a second time, over TLS, on the pod
network's gateway, with the CA certificate and a service-account token that the kubelet mounts into
pods at /var/run/secrets/kubernetes.io/serviceaccount (and KUBERNETES_SERVICE_HOST/PORT in their env).

So the operator's pod connects as it does in a cluster: the kubernetes client's in-cluster config,
https to $KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT, the CA verified, the token as a bearer.
kmock itself checks no token: the tests check the operator pod sent it (`authenticates`)."""

from __future__ import annotations

import secrets
import ssl
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import kmock
from aiohttp.test_utils import RawTestServer

MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"


@dataclass(frozen=True)
class ApiAccess:
    """What a kubelet gives a pod to reach the API: the address, the CA it verifies, its token."""

    host: str
    port: int
    ca: Path
    token: str

    def authenticates(self, authorization: str | None) -> bool:
        """An Authorization header that carries this token (the scheme is case-insensitive)."""
        scheme, _, token = (authorization or "").partition(" ")
        return scheme.lower() == "bearer" and token == self.token

    def env(self) -> dict[str, str]:
        """The `kubernetes` Service's variables, which the kubelet puts in every pod."""
        return {
            "KUBERNETES_SERVICE_HOST": self.host,
            "KUBERNETES_SERVICE_PORT": str(self.port),
            "KUBERNETES_SERVICE_PORT_HTTPS": str(self.port),
            "KUBERNETES_PORT": f"tcp://{self.host}:{self.port}",
        }

    def files(self, namespace: str) -> dict[str, str]:
        """The service-account volume's files."""
        return {"token": self.token, "ca.crt": self.ca.read_text(), "namespace": namespace}


def self_signed(directory: Path, ip: str) -> tuple[Path, Path]:
    """A certificate for the API server's IP (and its in-cluster names), valid for a day."""
    cert, key = directory / "apiserver.crt", directory / "apiserver.key"
    names = f"IP:{ip},DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "1", "-subj", "/CN=kube-apiserver", "-addext", f"subjectAltName={names}",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@asynccontextmanager
async def serve_tls(handler: kmock.RawHandler, host: str, directory: Path) -> AsyncIterator[ApiAccess]:
    """`handler` (the test's kmock) also served over TLS at host:<free port> while inside."""
    cert, key = self_signed(directory, host)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    class TlsServer(RawTestServer):
        async def start_server(self, loop: Any = None, **kwargs: Any) -> None:
            await super().start_server(loop, ssl=context, **kwargs)

    def client(url: Any) -> aiohttp.ClientSession:  # the test's own calls may go this way too
        trusting = ssl.create_default_context(cafile=str(cert))
        return aiohttp.ClientSession(url, connector=aiohttp.TCPConnector(ssl=trusting))

    async with kmock.Server(handler, host=host, server_cls=TlsServer, client_fct=client) as server:
        yield ApiAccess(host, server.port, cert, secrets.token_urlsafe(24))
