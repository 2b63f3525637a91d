"""TLS between the cluster's processes: the config's ``security.tls_*`` as Dask's ``Security``.

Three settings, given together or not at all:

``security.tls_ca_file``    the CA certificate (PEM) that signed every certificate of the cluster
``security.tls_cert_file``  the certificate (PEM) this process presents
``security.tls_key_file``   its private key (PEM; may be the same file as the certificate)

With them, every Dask connection is TLS with mutual authentication
(:class:`distributed.security.Security` with ``require_encryption=True``, the
one certificate serving the client, scheduler and worker roles): the
scheduler, the workers (and so the master, an actor on a worker) and the
clients talk ``tls://``, and refuse a peer whose certificate the CA did not
sign, or one that speaks plain TCP. :func:`dask_security` is what clients
pass to :class:`distributed.Client` / :class:`distributed.LocalCluster`;
:class:`~superduperdb.cluster.spec.ClusterSpec` gives the same files to
``dask scheduler`` and ``dask worker`` (``--tls-ca-file --tls-cert --tls-key``).

Examples
--------
>>> from superduperdb.config import resolve_config
>>> cfg = resolve_config(home="/nonexistent", cwd="/nonexistent", environ={})
>>> tls_files(cfg) is None, dask_security(cfg), with_scheme("tcp://h:8786", cfg)
(True, None, 'tcp://h:8786')
"""

from __future__ import annotations

import os
from typing import Any

from ..config import Config
from ..errors import ConfigError

KEYS = ("security.tls_ca_file", "security.tls_cert_file", "security.tls_key_file")


def tls_files(cfg: Config) -> tuple[str, str, str] | None:
    """``(ca, cert, key)`` paths when TLS is configured, else None.

    Raises
    ------
    ConfigError
        Only some of the three are set, or a file does not exist.
    """
    values = (cfg.security.tls_ca_file, cfg.security.tls_cert_file, cfg.security.tls_key_file)
    if not any(values):
        return None
    missing = [k for k, v in zip(KEYS, values) if not v]
    if missing:
        raise ConfigError(f"TLS on the cluster needs all of {', '.join(KEYS)}; {', '.join(missing)} "
                          f"{'is' if len(missing) == 1 else 'are'} not set. Set them all, or none.", key=missing[0])
    for key, path in zip(KEYS, values):
        if not os.path.isfile(path):
            raise ConfigError(f"Config key {key!r} names {path!r}, which is not a file. Give the path of a PEM "
                              "file readable by this process.", key=key, value=path)
    return values  # type: ignore[return-value]


def dask_security(cfg: Config) -> Any:
    """The :class:`distributed.security.Security` of the config (None without TLS settings)."""
    files = tls_files(cfg)
    return None if files is None else security_of(files)


def security_of(files: tuple[str, str, str]) -> Any:
    """A :class:`distributed.security.Security` presenting ``cert``/``key`` in every role, trusting ``ca``."""
    from distributed.security import Security

    ca, cert, key = files
    return Security(require_encryption=True, tls_ca_file=ca,
                    tls_client_cert=cert, tls_client_key=key,
                    tls_scheduler_cert=cert, tls_scheduler_key=key,
                    tls_worker_cert=cert, tls_worker_key=key)


def with_scheme(address: str, cfg: Config) -> str:
    """``address`` reached over TLS when the config has TLS settings (``tcp://h:p`` becomes ``tls://h:p``)."""
    if tls_files(cfg) is not None and isinstance(address, str):
        if address.startswith("tcp://"):
            return "tls://" + address[len("tcp://"):]
        if "://" not in address:
            return "tls://" + address
    return address
