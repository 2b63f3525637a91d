"""Credentials never leave the config in clear: :func:`redact` hides them wherever a URI is shown.

A MongoDB URI may carry a password in its user info (``mongodb://user:pass@host``)
and in options (``?tlsCertificateKeyFilePassword=...``,
``authMechanismProperties=AWS_SESSION_TOKEN:...``). Everything that shows or
stores a URI (reprs, log lines, error messages and their attributes, CLI output,
job results written to MongoDB) shows ``redact(uri)`` instead. The real value
stays in the :class:`~superduperdb.config.Config` (``cfg.mongodb.uri``), which
connects with it, and travels to workers only inside the config snapshot and
the job's ``Target``.

:func:`redact` works on any text, not only on a bare URI: every URI found in it
is redacted, so an error message that quotes a URI can be passed through it too.

Examples
--------
>>> redact("mongodb://alice:s3cret@h1:27017,h2/db?authSource=admin")
'mongodb://alice:***@h1:27017,h2/db?authSource=admin'
>>> redact("mongodb+srv://alice:s3cret@cluster0.example.net/?retryWrites=true")
'mongodb+srv://alice:***@cluster0.example.net/?retryWrites=true'
>>> redact("mongodb://h/?tls=true&tlsCertificateKeyFilePassword=kp&password=x&appName=a")
'mongodb://h/?tls=true&tlsCertificateKeyFilePassword=***&password=***&appName=a'
>>> redact("mongodb://h/?authMechanism=MONGODB-AWS&authMechanismProperties=AWS_SESSION_TOKEN:tok,SERVICE_NAME:s")
'mongodb://h/?authMechanism=MONGODB-AWS&authMechanismProperties=AWS_SESSION_TOKEN:***,SERVICE_NAME:s'
>>> redact("mongodb://localhost:27017/")
'mongodb://localhost:27017/'
>>> redact("mongodb://x509user@host/?authMechanism=MONGODB-X509")
'mongodb://x509user@host/?authMechanism=MONGODB-X509'
>>> redact("mongomock://demo")
'mongomock://demo'
>>> redact("Could not reach MongoDB at 'mongodb://u:p%40ss@db:27017/' within 100 ms.")
"Could not reach MongoDB at 'mongodb://u:***@db:27017/' within 100 ms."
>>> redact(None) is None
True

A download URL may carry a token as its whole user info, or in signed query parameters;
:func:`redact_url` hides those too:

>>> redact_url("https://ghp_T0KEN@example.com/a.png?X-Amz-Signature=abc&size=2")
'https://***@example.com/a.png?X-Amz-Signature=***&size=2'
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

MASK = "***"

# scheme://user:password@ : the password runs to the last "@" before the query, the fragment
# or the end of the URI, so an unescaped "@" or "/" in a password is hidden too (a path that
# contains "@" is over-redacted, which is harmless).
_USERINFO = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/?#@\"<>]*:)(?P<secret>[^\s\"<>?#]*)(?P<at>@)",
)
# query options whose value is a secret: password=, tlsCertificateKeyFilePassword=,
# sslPEMKeyPassword=, proxyPassword=, ...token=, ...secret=
_OPTION = re.compile(
    r"(?P<head>[?&;][A-Za-z0-9_.\-]*(?:password|passwd|pwd|secret|token)[A-Za-z0-9_.\-]*=)(?P<secret>[^&;#\s\"<>]+)",
    re.IGNORECASE,
)
# authMechanismProperties=AWS_SESSION_TOKEN:value,... (":" may be written %3A)
_PROPERTIES = re.compile(r"(?P<head>[?&;]authMechanismProperties=)(?P<value>[^&;#\s\"<>]+)", re.IGNORECASE)
_PROPERTY = re.compile(
    r"(?P<head>(?:^|,|%2C)[A-Za-z_]*(?:password|secret|token)[A-Za-z_]*(?::|%3A))(?P<secret>(?:(?!%2C)[^,\s])+)",
    re.IGNORECASE,
)

T = TypeVar("T")


def _mask(match: re.Match) -> str:
    return f"{match['head']}{MASK}{match.groupdict().get('at') or ''}"


def redact(text: T) -> T:
    """``text`` with the password of every URI in it replaced by ``***``.

    Parameters
    ----------
    text : str
        A URI (``mongodb://user:pass@host/...``, ``mongodb+srv://...``,
        ``mongomock://<name>``) or any text quoting one (an error message).
        Anything that is not a ``str`` (``None``) is returned as it is.

    Returns
    -------
    str
        The same text, with the password in the user info and the values of
        secret options (``password=``, ``tlsCertificateKeyFilePassword=``,
        ``proxyPassword=``, ``AWS_SESSION_TOKEN:`` ...) replaced by ``***``.
        Text without credentials is returned unchanged.
    """
    if not isinstance(text, str) or not text:
        return text
    out = _USERINFO.sub(_mask, text)
    if "=" in out:
        out = _OPTION.sub(_mask, out)
    if "authmechanismproperties=" in out.lower():
        out = _PROPERTIES.sub(lambda m: m["head"] + _PROPERTY.sub(_mask, m["value"]), out)
    return out  # type: ignore[return-value]


# Config keys whose whole value is a secret (``serve.password``, ``...token``, ``security.artifact_key``):
# shown as ``***``.
_SECRET_KEY = re.compile(r"(?:^|[._])(?:password|passwd|pwd|secret|token|artifact_key|api_key|private_key)$",
                         re.IGNORECASE)


def is_secret_key(key: str | None) -> bool:
    """Whether a config key (or dotted path) holds a secret as its whole value.

    >>> is_secret_key("serve.password"), is_secret_key("serve.username"), is_secret_key("security.artifact_key")
    (True, False, True)
    """
    return bool(key) and bool(_SECRET_KEY.search(str(key)))


def redact_value(value: Any, key: str | None = None) -> Any:
    """A config value as shown: strings redacted, nested dicts and lists walked, the rest as is.

    The value of a secret key (``key`` ending in ``password``, ``secret``,
    ``token`` ...) is ``***`` whole, unless it is empty.

    >>> redact_value("hunter2", "serve.password"), redact_value({"password": "x", "port": 1})
    ('***', {'password': '***', 'port': 1})
    """
    if is_secret_key(key) and value not in (None, ""):
        return MASK
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_value(v, k) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_value(v) for v in value)
    return value


# scheme://userinfo@ where the user info has no ":" (a bare token)
_BARE_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<secret>[^\s:/?#@\"<>]+)(?P<at>@)")
# signed URLs: ?X-Amz-Signature=, &sig=, &signature=, &key=, &api_key=, &access_token= ...
_URL_OPTION = re.compile(
    r"(?P<head>[?&;][A-Za-z0-9_.\-]*(?:signature|sig|key|credential|auth)[A-Za-z0-9_.\-]*=)(?P<secret>[^&;#\s\"<>]+)",
    re.IGNORECASE,
)


def redact_url(text: T) -> T:
    """``text`` (a URL, or a message quoting URLs) as :func:`redact` shows it, and also without
    a bare token in the user info (``https://TOKEN@host``) or signature/key query parameters:
    what log lines and job results show of a download URL."""
    if not isinstance(text, str) or not text:
        return text
    out = _BARE_USERINFO.sub(lambda m: f"{m['head']}{MASK}@", redact(text))
    if "=" in out:
        out = _URL_OPTION.sub(_mask, out)
    return out  # type: ignore[return-value]
