"""The test cluster's certificates and keys, made with `cryptography`.

One CA signs every serving certificate (etcd, the API server, the controller
manager, the scheduler, each node's log endpoint) and every client
certificate (the API server towards etcd and towards the nodes, the
controllers, the scheduler, each node, the tests' admin). A separate key pair
signs and checks service-account tokens. Everything is ECDSA P-256: a key
takes a millisecond to make, where RSA-2048 takes tens.

Who the API server takes a client to be comes from the certificate: CN is the
user name, O the groups (`system:masters` for the admin, `system:nodes` for a
node, as kubeadm issues them). Only `make_pki` writes files; the layout is
`Pki`'s fields.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# A test cluster lives for minutes; a day covers a long `make cluster` session.
VALIDITY = datetime.timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Pair:
    """A certificate and its key, as PEM files."""

    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class Pki:
    """Every file the cluster's processes are given."""

    ca: Pair
    etcd_server: Pair
    apiserver_etcd_client: Pair
    apiserver: Pair
    apiserver_kubelet_client: Pair
    controller_manager: Pair
    controller_manager_serving: Pair
    scheduler: Pair
    scheduler_serving: Pair
    admin: Pair
    service_account_key: Path
    service_account_pub: Path
    nodes: dict[str, NodePki]


@dataclass(frozen=True, slots=True)
class NodePki:
    """A node's client certificate (system:node:NAME) and its log endpoint's serving one."""

    client: Pair
    serving: Pair


def _name(common_name: str, *orgs: str) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    return x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


class _Ca:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = _name("mrk8s-test-cluster-ca")
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(self.name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        self.pair = Pair(directory / "ca.crt", directory / "ca.key")
        self.pair.cert.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        _write_key(self.key, self.pair.key)

    def issue(
        self,
        stem: str,
        common_name: str,
        *orgs: str,
        server_ips: tuple[str, ...] = (),
        server_names: tuple[str, ...] = (),
        client: bool = False,
    ) -> Pair:
        """Sign a leaf certificate: serving when given IPs or names, client if asked."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        usages = []
        if server_ips or server_names:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        if client:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name, *orgs))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if server_ips or server_names:
            sans: list[x509.GeneralName] = [x509.DNSName(n) for n in server_names]
            sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in server_ips]
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        pair = Pair(self.directory / f"{stem}.crt", self.directory / f"{stem}.key")
        pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, pair.key)
        return pair


def make_pki(directory: Path, node_ips: dict[str, str]) -> Pki:
    """Write a fresh CA, every certificate the cluster needs and the token signing key."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = _Ca(directory)
    loopback = ("127.0.0.1",)
    apiserver_names = (
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    )
    sa_key = ec.generate_private_key(ec.SECP256R1())
    sa_key_path = directory / "sa.key"
    sa_pub_path = directory / "sa.pub"
    _write_key(sa_key, sa_key_path)
    sa_pub_path.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    nodes = {
        node: NodePki(
            client=ca.issue(f"node-{node}", f"system:node:{node}", "system:nodes", client=True),
            serving=ca.issue(f"node-{node}-serving", node, server_ips=(ip,), server_names=(node,)),
        )
        for node, ip in node_ips.items()
    }
    return Pki(
        ca=ca.pair,
        etcd_server=ca.issue("etcd-server", "etcd", server_ips=loopback, client=True),
        apiserver_etcd_client=ca.issue("apiserver-etcd-client", "kube-apiserver", client=True),
        apiserver=ca.issue(
            "apiserver", "kube-apiserver", server_ips=loopback, server_names=apiserver_names
        ),
        apiserver_kubelet_client=ca.issue(
            "apiserver-kubelet-client", "kube-apiserver-kubelet-client", client=True
        ),
        controller_manager=ca.issue(
            "controller-manager", "system:kube-controller-manager", client=True
        ),
        controller_manager_serving=ca.issue(
            "controller-manager-serving", "kube-controller-manager", server_ips=loopback
        ),
        scheduler=ca.issue("scheduler", "system:kube-scheduler", client=True),
        scheduler_serving=ca.issue("scheduler-serving", "kube-scheduler", server_ips=loopback),
        admin=ca.issue("admin", "mrk8s-test-admin", "system:masters", client=True),
        service_account_key=sa_key_path,
        service_account_pub=sa_pub_path,
        nodes=nodes,
    )
