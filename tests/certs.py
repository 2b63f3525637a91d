"""Certificates made at test time (trustme): a CA and a certificate for 127.0.0.1 / localhost.

No certificate is kept in the repository. :func:`make_certs` writes PEM files
into a folder and returns their paths; the one certificate serves for server
and client authentication (Dask's TLS and MongoDB's client certificates need
both)::

    files = make_certs(tmp_path)            # files.ca, files.cert, files.key
    other = make_certs(tmp_path / "other")  # another CA: its certificates are not trusted by the first
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True)
class CertFiles:
    ca: str
    cert: str
    key: str

    def config(self) -> dict[str, str]:
        """The ``security.tls_*`` config of these files."""
        return {"security.tls_ca_file": self.ca, "security.tls_cert_file": self.cert,
                "security.tls_key_file": self.key}

    def env(self) -> dict[str, str]:
        """The same, as environment variables for processes started by a test."""
        return {"SUPERDUPERDB_SECURITY__TLS_CA_FILE": self.ca, "SUPERDUPERDB_SECURITY__TLS_CERT_FILE": self.cert,
                "SUPERDUPERDB_SECURITY__TLS_KEY_FILE": self.key}

    def server_context(self, require_client_cert: bool = True) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=self.ca)
        ctx.load_cert_chain(self.cert, self.key)
        ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_NONE
        return ctx


def make_certs(folder: str | Path) -> CertFiles:
    """A fresh CA and a certificate (with its key) for ``127.0.0.1`` and ``localhost``, as PEM files in ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    paths = CertFiles(str(folder / "ca.pem"), str(folder / "cert.pem"), str(folder / "key.pem"))
    ca.cert_pem.write_to_path(paths.ca)
    issued.cert_chain_pems[0].write_to_path(paths.cert)
    issued.private_key_pem.write_to_path(paths.key)
    return paths
