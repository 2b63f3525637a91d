"""The error hierarchy: one root, the builtin a user would catch, picklable with its data."""

from __future__ import annotations

import copy
import inspect
import pickle

import pytest

import superduperdb
from superduperdb import errors
from superduperdb.errors import NotRegisteredError, SuperDuperError

ERROR_CLASSES = sorted(
    (obj for obj in vars(errors).values()
     if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == errors.__name__),
    key=lambda cls: cls.__name__,
)

# The builtin each error must also be (DESIGN.md section 5, the issue and the class docs).
BUILTIN = {
    "NotRegisteredError": KeyError,
    "JobTimeoutError": TimeoutError,
    "QueryError": TypeError,
    "EncodingError": TypeError,
    "ConfigError": ValueError,
    "InvalidURIError": ValueError,
    "ConnectionFailure": ConnectionError,
    "InUseError": ValueError,
    "AlreadyRegisteredError": ValueError,
    "JobError": RuntimeError,
    "JobFailedError": RuntimeError,
    "JobNotFoundError": KeyError,
    "DecodingError": ValueError,
    "AuthenticationError": PermissionError,
}

# Errors whose constructor is not SuperDuperError's (message, **attrs).
FACTORIES = {
    "NotRegisteredError": lambda cls: cls("model", "encodr", available=["encoder", "decoder"], hint="Register it."),
    "UnregisteredTypeError": lambda cls: cls("type", "tensr", available=["tensor"], hint="Register it."),
    "AlreadyRegisteredError": lambda cls: cls("semantic index", "search"),
    "InUseError": lambda cls: cls("type", "point", ["documents in 'docs'", "model 'm'"]),
}


def make(cls: type) -> BaseException:
    factory = FACTORIES.get(cls.__name__)
    if factory is not None:
        return factory(cls)
    return cls(
        f"{cls.__name__}: something went wrong; do this next.",
        job_id="job-1",
        ids=["a", "b"],
        remote_traceback="Traceback (most recent call last):\n  ...",
        details={"nested": [1, 2.5, None]},
    )


def test_the_hierarchy_is_found() -> None:
    names = {cls.__name__ for cls in ERROR_CLASSES}
    assert {"SuperDuperError", *BUILTIN} <= names


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_inherits_root_and_a_builtin(cls: type) -> None:
    assert issubclass(cls, SuperDuperError)
    if cls is SuperDuperError:
        return
    builtins = [base for base in cls.__mro__ if base.__module__ == "builtins"]
    assert set(builtins) - {Exception, BaseException, object}, f"{cls.__name__} inherits no specific builtin"
    if cls.__name__ in BUILTIN:
        assert issubclass(cls, BUILTIN[cls.__name__])
    assert cls.__doc__, f"{cls.__name__} needs a docstring"


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_picklable_with_attributes(cls: type, protocol: int) -> None:
    err = make(cls)
    attrs = dict(vars(err))
    assert attrs, "the data should be on attributes"
    copied = pickle.loads(pickle.dumps(err, protocol=protocol))
    assert type(copied) is cls
    assert copied.args == err.args and str(copied) == str(err)
    assert vars(copied) == attrs
    deep = copy.deepcopy(err)
    assert type(deep) is cls and vars(deep) == attrs and str(deep) == str(err)
    with pytest.raises(cls) as info:  # still raisable and catchable as itself
        raise copied
    assert info.value is copied


def test_pickled_error_keeps_notes() -> None:
    err = errors.JobFailedError("job j failed", job_id="j", error="ZeroDivisionError", remote_traceback="tb")
    err.add_note("while running watcher w")
    copied = pickle.loads(pickle.dumps(err))
    assert copied.__notes__ == ["while running watcher w"]
    assert (copied.job_id, copied.error, copied.remote_traceback) == ("j", "ZeroDivisionError", "tb")


def test_not_registered_suggests_the_closest_name() -> None:
    err = NotRegisteredError("type", "tensr", available=["tensor", "array", "image"])
    assert str(err) == (
        "No type named 'tensr' is registered. Did you mean 'tensor'? Registered types: array, image, tensor. "
        "Register it with create_type(name, obj)."  # how to register each kind: errors.HOW_TO_REGISTER
    )
    assert str(NotRegisteredError("type", "x", hint="")).endswith("Registered types: none.")
    assert (err.kind, err.name, err.available) == ("type", "tensr", ["array", "image", "tensor"])
    assert "Did you mean" not in str(NotRegisteredError("type", "zzzzzz", available=["tensor"]))
    assert "Registered models: none." in str(NotRegisteredError("model", "m"))
    with pytest.raises(KeyError):
        raise err


def test_unknown_name_is_one_message_shape() -> None:
    assert errors.unknown_name("measure", "cosin", ["l2", "dot", "cosine"]) == (
        "Unknown measure 'cosin'. Did you mean 'cosine'? Valid measures: cosine, dot, l2."
    )
    assert errors.unknown_name("config key", "jobs.x", ["jobs.chunk_size"], where="in environment") == (
        "Unknown config key 'jobs.x' in environment. Valid config keys: jobs.chunk_size."
    )
    assert errors.unknown_name("optimizer", "Adm", ["adam", "sgd"], "Use a torch.optim name.") == (
        "Unknown optimizer 'Adm'. Did you mean 'adam'? Valid optimizers: adam, sgd. Use a torch.optim name."
    )
    assert errors.unknown_name("method", "fitt", ["fit", "predict"], limit=0) == (
        "Unknown method 'fitt'. Did you mean 'fit'?"
    )
    assert errors.unknown_name("index", "x", ["c", "b", "a"], limit=2) == (
        "Unknown index 'x'. Valid indexes: a, b (and 1 more)."
    )
    assert errors.unknown_name("Model option", "x", []).endswith("Valid Model options: none.")


def test_not_registered_through_the_public_api(docs) -> None:
    with pytest.raises(NotRegisteredError) as info:
        docs.types["tensr"]  # noqa: B018
    assert "Did you mean 'tensor'?" in str(info.value) and info.value.name == "tensr"
    assert "create_type" in str(info.value)  # says what to do next


def test_exported_from_the_package() -> None:
    assert superduperdb.SuperDuperError is SuperDuperError
    assert {cls.__name__ for cls in ERROR_CLASSES} <= set(errors.__all__)
