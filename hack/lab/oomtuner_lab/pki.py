"""Certificates and keys for the lab, made with the `openssl` CLI.

One CA signs the apiserver's serving certificate and a client certificate per user:
the admin (group system:masters), kube-controller-manager, kube-scheduler, kwok, the real
node's kubelet, and the apiserver itself towards kubelets and aggregated API servers.
An RSA key pair signs and verifies ServiceAccount tokens.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

DAYS = 3650


def serving_sans(service_ip: str) -> list[str]:
    """Names the apiserver's serving certificate answers to; `service_ip` is the first
    address of the service range (the `kubernetes` Service)."""
    return [
        "DNS:localhost",
        "DNS:kubernetes",
        "DNS:kubernetes.default",
        "DNS:kubernetes.default.svc",
        "DNS:kubernetes.default.svc.cluster.local",
        "IP:127.0.0.1",
        f"IP:{service_ip}",
    ]


@dataclass(frozen=True)
class ClientCert:
    name: str  # file stem
    user: str  # CN
    groups: tuple[str, ...] = ()  # O


#: The users the lab needs. kwok writes node and pod status for every namespace, so it
#: gets system:masters like the admin; the two controllers get their built-in RBAC users.
CLIENTS: tuple[ClientCert, ...] = (
    ClientCert("admin", "oomtuner-lab-admin", ("system:masters",)),
    ClientCert("kube-controller-manager", "system:kube-controller-manager"),
    ClientCert("kube-scheduler", "system:kube-scheduler"),
    ClientCert("kwok", "kwok-controller", ("system:masters",)),
    # The apiserver's client certificate towards aggregated API servers (front proxy).
    ClientCert("front-proxy-client", "front-proxy-client"),
    # The real node's kubelet, as the Node authorizer and NodeRestriction expect it.
    ClientCert("kubelet", "system:node:lab-node-real", ("system:nodes",)),
    # The apiserver towards kubelets (logs, exec); the kubelet asks the apiserver whether it may.
    ClientCert("apiserver-kubelet-client", "kube-apiserver-kubelet-client", ("system:masters",)),
)


@dataclass(frozen=True)
class Pki:
    dir: Path

    @property
    def ca_crt(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def serving_crt(self) -> Path:
        return self.dir / "apiserver.crt"

    @property
    def serving_key(self) -> Path:
        return self.dir / "apiserver.key"

    @property
    def sa_key(self) -> Path:
        return self.dir / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.dir / "sa.pub"

    def client_crt(self, name: str) -> Path:
        return self.dir / f"{name}.crt"

    def client_key(self, name: str) -> Path:
        return self.dir / f"{name}.key"

    def complete(self) -> bool:
        files = [self.ca_crt, self.ca_key, self.serving_crt, self.serving_key, self.sa_key, self.sa_pub]
        files += [self.client_crt(c.name) for c in CLIENTS]
        files += [self.client_key(c.name) for c in CLIENTS]
        return all(f.is_file() for f in files)


def _openssl(*args: str, cwd: Path) -> None:
    exe = shutil.which("openssl")
    if exe is None:
        raise RuntimeError("the lab needs the openssl CLI (apt-get install openssl)")
    proc = subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{proc.stderr}")


def _subject(cn: str, groups: tuple[str, ...] = ()) -> str:
    return "".join(f"/O={g}" for g in groups) + f"/CN={cn}"


def _sign(pki: Pki, stem: str, subject: str, extensions: str) -> None:
    d = pki.dir
    _openssl("genrsa", "-out", f"{stem}.key", "2048", cwd=d)
    _openssl("req", "-new", "-key", f"{stem}.key", "-subj", subject, "-out", f"{stem}.csr", cwd=d)
    ext = d / f"{stem}.ext"
    ext.write_text(extensions)
    _openssl(
        "x509", "-req", "-in", f"{stem}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", str(DAYS), "-sha256", "-extfile", ext.name,
        "-out", f"{stem}.crt", cwd=d,
    )  # fmt: skip
    (d / f"{stem}.csr").unlink()
    ext.unlink()


def ensure(dir: Path, *, service_ip: str) -> Pki:
    """Create the CA, certificates and keys in `dir` unless they all exist already. With the CA
    in place, only what is missing is made (a lab made before a client was added keeps its CA)."""
    pki = Pki(dir)
    if pki.complete():
        return pki
    if pki.ca_crt.is_file() and pki.ca_key.is_file() and pki.sa_key.is_file() and pki.sa_pub.is_file():
        _sign_missing(pki, service_ip=service_ip)
        return pki
    dir.mkdir(parents=True, exist_ok=True)
    dir.chmod(0o700)
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
        "-days", str(DAYS), "-sha256", "-subj", "/CN=oomtuner-lab-ca",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        cwd=dir,
    )  # fmt: skip
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=dir)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=dir)
    _sign_missing(pki, service_ip=service_ip)
    return pki


def _sign_missing(pki: Pki, *, service_ip: str) -> None:
    """Sign the serving and client certificates that are not there yet."""
    if not (pki.serving_crt.is_file() and pki.serving_key.is_file()):
        _sign(
            pki, "apiserver", _subject("kube-apiserver"),
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth\nsubjectAltName=" + ",".join(serving_sans(service_ip)) + "\n",
        )  # fmt: skip
    for client in CLIENTS:
        if pki.client_crt(client.name).is_file() and pki.client_key(client.name).is_file():
            continue
        _sign(
            pki, client.name, _subject(client.user, client.groups),
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=clientAuth\n",
        )  # fmt: skip
    for key in pki.dir.glob("*.key"):
        key.chmod(0o600)
