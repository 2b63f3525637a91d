"""``superduperdb.config.redact``: the one helper that hides credentials in URIs (and in text quoting them)."""

from __future__ import annotations

import doctest

import pytest

import superduperdb.config.secrets as secrets
from superduperdb.config import redact


def test_doctests() -> None:
    assert doctest.testmod(secrets).failed == 0


@pytest.mark.parametrize(("uri", "shown"), [
    ("mongodb://user:pass@h1:27017,h2/db?authSource=admin&password=x",
     "mongodb://user:***@h1:27017,h2/db?authSource=admin&password=***"),
    ("mongodb+srv://user:pass@cluster0.example.net/db?retryWrites=true&w=majority",
     "mongodb+srv://user:***@cluster0.example.net/db?retryWrites=true&w=majority"),
    # secret options, whatever their case, wherever they stand in the query
    ("mongodb://h/?tlsCertificateKeyFilePassword=kp", "mongodb://h/?tlsCertificateKeyFilePassword=***"),
    ("mongodb://h/?ssl=true&sslPEMKeyPassword=kp&appName=x", "mongodb://h/?ssl=true&sslPEMKeyPassword=***&appName=x"),
    ("mongodb://h/?PASSWORD=p;proxyPassword=q", "mongodb://h/?PASSWORD=***;proxyPassword=***"),
    ("mongodb://h/?authMechanismProperties=SERVICE_NAME%3Amongodb%2CAWS_SESSION_TOKEN%3At0k",
     "mongodb://h/?authMechanismProperties=SERVICE_NAME%3Amongodb%2CAWS_SESSION_TOKEN%3A***"),
    # passwords that are escaped, empty, or (wrongly) not escaped at all
    ("mongodb://u:p%40ss%2Fw@h/", "mongodb://u:***@h/"),
    ("mongodb://u:p@ss/w@h/db", "mongodb://u:***@h/db"),
    ("mongodb://:pw@h/", "mongodb://:***@h/"),
    ("MONGODB://U:P@H", "MONGODB://U:***@H"),
    # any scheme: a mongomock name with user info, a URI of another database
    ("mongomock://alice:pw@store", "mongomock://alice:***@store"),
    ("postgres://alice:pw@db/x", "postgres://alice:***@db/x"),
])
def test_redacts(uri: str, shown: str) -> None:
    assert redact(uri) == shown
    assert redact(shown) == shown  # idempotent


@pytest.mark.parametrize("uri", [
    "mongodb://localhost:27017/",
    "mongodb://h1:27017,h2:27018/db?replicaSet=rs0&authSource=admin",
    "mongodb+srv://cluster0.example.net/",
    "mongodb://x509user@h/?authMechanism=MONGODB-X509",     # a user without a password
    "mongodb://h:27017/db?appName=a@b",                     # "@" in the query is not user info
    "mongodb://h/?authMechanismProperties=SERVICE_NAME:mongodb",
    "mongomock://default",
    "mongomock://client-7f3a",
    "tcp://scheduler:8786",
    "localhost:27017",
    "",
    "no uri here: a token: or a password mentioned in words",
])
def test_leaves_uris_without_credentials_unchanged(uri: str) -> None:
    assert redact(uri) == uri


def test_redacts_uris_inside_text_and_leaves_other_values() -> None:
    message = "Could not reach MongoDB at 'mongodb://u:s3cret@db:27017/?authSource=admin' within 5 ms."
    assert redact(message) == "Could not reach MongoDB at 'mongodb://u:***@db:27017/?authSource=admin' within 5 ms."
    assert redact("a mongodb://a:1@h and b mongodb://b:2@k") == "a mongodb://a:***@h and b mongodb://b:***@k"
    assert redact(None) is None and redact(5) == 5
    assert secrets.redact_value({"uri": "mongodb://u:p@h", "n": [1, "mongodb://v:q@k"], "x": None}) == \
        {"uri": "mongodb://u:***@h", "n": [1, "mongodb://v:***@k"], "x": None}
