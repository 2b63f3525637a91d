"""Typed values (numpy arrays, torch tensors, PIL images, user types) survive a round trip.

Every test runs on both stand-ins (the ``backend`` fixture): the embedded mongomock store and
the MongoDB-wire server over TCP, through ``superduperdb.connect(uri, cluster=None)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import superduperdb
from superduperdb.errors import (
    AlreadyRegisteredError,
    EncodingError,
    InUseError,
    NotRegisteredError,
    SuperDuperError,
)
from superduperdb.types import ArrayType

pytestmark = pytest.mark.integration

RNG = np.random.default_rng(0)


# -- a user type, defined here (importable, so its artifact loads by reference) ---------------


class Point:
    def __init__(self, x: float, y: float) -> None:
        self.x, self.y = x, y

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and (other.x, other.y) == (self.x, self.y)

    def __repr__(self) -> str:
        return f"Point({self.x}, {self.y})"


class PointType:
    types = (Point,)

    def encode(self, p: Point) -> bytes:
        return f"{p.x},{p.y}".encode()

    def decode(self, data: bytes) -> Point:
        return Point(*map(float, data.decode().split(",")))


class Unregistered:
    """A class no type stores (picklable: it lives in an importable module)."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Unregistered) and other.value == self.value


# -- fixtures and helpers -------------------------------------------------------------------


def _connect(backend, **kwargs):
    uri, dbname = backend
    client = superduperdb.connect(uri, cluster=None, **kwargs)
    return client, client[dbname]["docs"]


@pytest.fixture
def coll(backend) -> Iterator[Any]:
    client, docs = _connect(backend)
    yield docs
    client.drop_database(backend[1])
    client.close()


def assert_same_array(got: Any, want: np.ndarray, where: str = "") -> None:
    assert isinstance(got, np.ndarray), where
    assert got.dtype == want.dtype, where
    assert got.shape == want.shape, where
    assert np.array_equal(got, want), where
    if want.ndim >= 2:
        assert got.flags.f_contiguous == want.flags.f_contiguous, where


def assert_same_tensor(got: Any, want: torch.Tensor, where: str = "") -> None:
    assert isinstance(got, torch.Tensor), where
    assert got.dtype == want.dtype and got.shape == want.shape, where
    assert torch.equal(got, want.detach()), where


def assert_same_image(got: Any, want: Image.Image, where: str = "") -> None:
    assert isinstance(got, Image.Image), where
    assert (got.mode, got.size) == (want.mode, want.size), where
    assert np.array_equal(np.asarray(got), np.asarray(want)), where


def _image(mode: str, size=(5, 4)) -> Image.Image:
    if mode == "P":
        return _image("RGB", size).convert("P")  # palette image
    bands = len(mode) if mode != "L" else 1
    pixels = RNG.integers(0, 256, size=(size[1], size[0], bands), dtype=np.uint8)
    return Image.fromarray(pixels[..., 0] if bands == 1 else pixels, mode=mode)


ARRAYS = {
    "float64_1d": np.linspace(-1, 1, 7),
    "float32_2d": RNG.standard_normal((3, 4)).astype(np.float32),
    "float16_3d": RNG.standard_normal((2, 3, 4)).astype(np.float16),
    "int64_0d": np.array(-(2**40), dtype=np.int64),
    "int8": np.array([-128, 0, 127], dtype=np.int8),
    "uint8_image_like": RNG.integers(0, 256, (4, 4, 3), dtype=np.uint8),
    "bool": np.array([[True, False], [False, True]]),
    "bool_0d": np.array(True),
    "complex128": np.array([1 + 2j, -3j]),
    "fortran_2d": np.asfortranarray(np.arange(12, dtype=np.int32).reshape(3, 4)),
    "fortran_3d": np.asfortranarray(RNG.standard_normal((2, 3, 4))),
    "empty": np.zeros((0, 3), dtype=np.float32),
    "datetime64": np.array(["2024-01-02", "2024-03-04"], dtype="datetime64[ms]"),
    "structured": np.array([(1, 2.5), (3, -1.0)], dtype=[("x", "<i4"), ("y", "<f8")]),
    "big_endian": np.arange(5, dtype=">i4"),
}


# -- built-in types ---------------------------------------------------------------------------


def test_numpy_arrays_round_trip(coll) -> None:
    oid = coll.insert_one(dict(ARRAYS)).inserted_id
    doc = coll.find_one({"_id": oid})
    for name, want in ARRAYS.items():
        assert_same_array(doc[name], want, name)
    view = np.arange(20).reshape(4, 5)[::2, 1:4]  # a non-contiguous view is stored by value
    coll.update_one({"_id": oid}, {"$set": {"view": view}})
    assert_same_array(coll.find_one({"_id": oid})["view"], np.ascontiguousarray(view))


TENSORS = {
    "float32": torch.randn(2, 3, generator=torch.Generator().manual_seed(0)),
    "int64": torch.arange(-3, 3, dtype=torch.int64),
    "bfloat16": torch.tensor([1.5, -2.25, 3.0], dtype=torch.bfloat16),
    "float16": torch.tensor([[0.5, 1.0]], dtype=torch.float16),
    "bool": torch.tensor([True, False]),
    "scalar": torch.tensor(7.0),
    "requires_grad": torch.ones(3, requires_grad=True) * 2,
    "leaf_requires_grad": torch.zeros(2, 2, requires_grad=True),
    "transposed": torch.arange(6.0).reshape(2, 3).t(),
}


def test_torch_tensors_round_trip(coll) -> None:
    oid = coll.insert_one(dict(TENSORS)).inserted_id
    doc = coll.find_one({"_id": oid})
    for name, want in TENSORS.items():
        assert_same_tensor(doc[name], want, name)


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "LA", "P"])
def test_pil_images_round_trip_exact_pixels(coll, mode: str) -> None:
    image = _image(mode)
    oid = coll.insert_one({"img": image}).inserted_id
    got = coll.find_one({"_id": oid})["img"]
    assert_same_image(got, image)
    if mode == "P":
        assert got.getpalette() == image.getpalette()


def test_nested_values_round_trip(coll) -> None:
    array, tensor, image = ARRAYS["float16_3d"], TENSORS["bfloat16"], _image("RGB")
    doc = {
        "plain": 1,
        "list": [array, {"t": tensor, "imgs": [image, image]}, "text"],
        "sub": {"deep": {"x": ARRAYS["fortran_2d"]}, "n": None},
        "list_of_lists": [[ARRAYS["int8"]], []],
    }
    oid = coll.insert_many([doc, {"other": True}]).inserted_ids[0]
    got = coll.find_one({"_id": oid})
    assert got["plain"] == 1 and got["list"][2] == "text" and got["sub"]["n"] is None
    assert_same_array(got["list"][0], array)
    assert_same_tensor(got["list"][1]["t"], tensor)
    for img in got["list"][1]["imgs"]:
        assert_same_image(img, image)
    assert_same_array(got["sub"]["deep"]["x"], ARRAYS["fortran_2d"])
    assert_same_array(got["list_of_lists"][0][0], ARRAYS["int8"])
    assert got["list_of_lists"][1] == []
    assert doc["list"][0] is array  # the caller's document is not replaced by the stored form


def test_every_read_path_decodes(coll) -> None:
    a, b = np.arange(3.0), np.arange(4)
    oid = coll.insert_one({"k": 1, "x": a}).inserted_id
    coll.replace_one({"_id": oid}, {"k": 1, "x": b})
    assert_same_array(next(iter(coll.find({"k": 1})))["x"], b)
    assert_same_array(list(coll.aggregate([{"$match": {"k": 1}}]))[0]["x"], b)
    before = coll.find_one_and_update({"k": 1}, {"$set": {"x": a}})
    assert_same_array(before["x"], b)
    assert_same_array(coll.find_one_and_delete({"k": 1})["x"], a)


# -- filters with typed values ------------------------------------------------------------------


def test_filters_containing_typed_values(coll) -> None:
    a, b, t, img = np.arange(4), np.arange(4) * 2, torch.tensor([1.0, 2.0]), _image("L")
    coll.insert_many([{"k": 0, "x": a, "t": t}, {"k": 1, "x": b, "img": img}, {"k": 2, "x": np.arange(5)}])
    assert [d["k"] for d in coll.find({"x": a})] == [0]
    assert coll.count_documents({"x": b}) == 1
    assert coll.count_documents({"x": np.arange(4).astype(np.int8)}) == 0  # dtype matters
    assert sorted(d["k"] for d in coll.find({"x": {"$in": [a, b]}})) == [0, 1]
    assert coll.find_one({"t": t})["k"] == 0
    assert coll.find_one({"img": img})["k"] == 1
    assert coll.update_one({"x": a}, {"$set": {"y": t}}).modified_count == 1
    assert_same_tensor(coll.find_one({"k": 0})["y"], t)
    assert coll.delete_one({"x": b}).deleted_count == 1
    assert sorted(d["k"] for d in coll.find()) == [0, 2]


# -- the stored form ----------------------------------------------------------------------------


def test_raw_find_returns_the_stored_form(coll) -> None:
    a = ARRAYS["float32_2d"]
    coll.insert_one({"x": a, "nested": [{"t": TENSORS["int64"]}], "img": _image("RGB")})
    for stored in (coll.find_one({}, raw=True), next(coll.find({}, raw=True)), coll.raw.find_one()):
        content = stored["x"]["_content"]
        assert set(content) == {"bytes", "type"} and content["type"] == "array"
        assert isinstance(content["bytes"], bytes)
        assert_same_array(ArrayType().decode(bytes(content["bytes"])), a)
        assert stored["nested"][0]["t"]["_content"]["type"] == "tensor"
        assert stored["img"]["_content"]["type"] == "image"
    assert list(coll.aggregate([{"$project": {"_id": 0, "x": 1}}], raw=True))[0]["x"]["_content"]["type"] == "array"


# -- user types ---------------------------------------------------------------------------------


def test_user_type_round_trip_and_listing(coll, backend) -> None:
    assert {"array", "tensor", "image", "pickle"} <= set(coll.list_types())
    row = coll.create_type("point", PointType())
    assert row["name"] == "point"
    assert "point" in coll.list_types() and "point" in coll.types
    with pytest.raises(AlreadyRegisteredError):
        coll.create_type("point", PointType())
    with pytest.raises(AlreadyRegisteredError):
        coll.create_type("array", PointType())
    coll.insert_one({"p": Point(1, 2), "ps": [Point(3, 4), {"q": Point(5, 6)}]})
    stored = coll.find_one({}, raw=True)
    assert stored["p"]["_content"]["type"] == "point" and bytes(stored["p"]["_content"]["bytes"]) == b"1,2"
    assert coll.find_one({"p": Point(1, 2)})["ps"] == [Point(3, 4), {"q": Point(5, 6)}]
    # another client (a fresh registry) finds the type through the metadata collection
    other_client, other = _connect(backend)
    try:
        assert "point" in other.list_types()
        assert other.find_one()["p"] == Point(1, 2)
        other.insert_one({"p": Point(7, 8)})
    finally:
        other_client.close()
    assert coll.find_one({"p": Point(7, 8)}) is not None


def test_delete_type_refuses_while_documents_use_it(coll) -> None:
    coll.create_type("point", PointType())
    coll.create_type("unused", PointType())
    coll.delete_type("unused")  # never used: deleted without force
    assert "unused" not in coll.list_types()
    coll.insert_one({"p": Point(1, 2)})
    with pytest.raises(InUseError) as info:
        coll.delete_type("point")
    assert info.value.name == "point" and any(coll.name in user for user in info.value.users)
    assert "force=True" in str(info.value) and coll.name in str(info.value)
    assert "point" in coll.list_types() and coll.find_one()["p"] == Point(1, 2)  # nothing changed
    coll.delete_type("point", force=True)
    assert "point" not in coll.list_types()
    with pytest.raises(NotRegisteredError) as missing:
        coll.find_one()
    assert missing.value.name == "point"
    with pytest.raises(SuperDuperError):
        coll.delete_type("array")  # built-ins cannot be deleted


def test_drop_forgets_the_collections_types(coll) -> None:
    coll.create_type("point", PointType())
    coll.insert_one({"p": Point(1, 2)})
    coll.drop()
    assert "point" not in coll.list_types()
    with pytest.raises(EncodingError):
        coll.insert_one({"p": Point(1, 2)})  # the type went with the collection
    assert coll.count_documents({}) == 0
    coll.create_type("point", PointType())  # registered afresh: its use is tracked afresh
    coll.insert_one({"p": Point(3, 4)})
    with pytest.raises(InUseError):
        coll.delete_type("point")


# -- pickle fallback ------------------------------------------------------------------------------


def test_pickle_fallback_only_when_asked_for(coll, backend) -> None:
    with pytest.raises(EncodingError) as info:
        coll.insert_one({"u": Unregistered(1)})
    assert info.value.path == "document.u" and "create_type" in str(info.value)
    assert coll.count_documents({}) == 0
    client, pickling = _connect(backend, config={"types.pickle_fallback": True})
    try:
        pickling.insert_one({"k": 1, "u": Unregistered({"a": [1, 2]}), "x": np.arange(2)})
        stored = pickling.find_one({"k": 1}, raw=True)
        assert stored["u"]["_content"]["type"] == "pickle"
        assert stored["x"]["_content"]["type"] == "array"  # registered types still win
        got = pickling.find_one({"k": 1})
        assert got["u"] == Unregistered({"a": [1, 2]})
        assert_same_array(got["x"], np.arange(2))
    finally:
        client.close()
    with pytest.raises(EncodingError):  # the default client still refuses
        coll.insert_one({"u": Unregistered(2)})
