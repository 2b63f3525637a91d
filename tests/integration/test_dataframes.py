"""pandas and Dask DataFrames through the public API: to_pandas, to_dask, insert_many of
DataFrames, from_dask, apply_model on DataFrames and as a batch job, and the cursor's HTML.

The first group runs on the inline client (``docs``); the Dask and batch-job tests run in
every cluster mode (``mode_client``: inline, a threads LocalCluster on mongomock, a
processes LocalCluster on the TCP server).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import testmodels

from superduperdb.errors import MissingColumnError, NotRegisteredError, QueryError

WAIT = 120
dd = pytest.importorskip("dask.dataframe")


def vectors(n, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 4)).astype("float32")


def _with_outputs(docs, n=5):
    docs.insert_many([{"i": i, "x": x, "text": "ab" * i} for i, x in enumerate(vectors(n))])
    docs.create_model("norm", testmodels.norm, key="x").wait(WAIT)
    docs.create_model("shout", testmodels.shout, key="text").wait(WAIT)
    return docs


# -- to_pandas -------------------------------------------------------------------------------------
def test_to_pandas_one_row_per_document_with_output_columns(docs):
    _with_outputs(docs)
    df = docs.to_pandas({}, sort=[("i", 1)])
    assert len(df) == 5
    assert list(df.columns[:1]) == ["_id"]
    assert {"i", "x", "text", "norm(x)", "shout(text)"} <= set(df.columns)
    assert "_outputs" not in df.columns and "_fingerprints" not in df.columns
    assert df["x"].dtype == object and isinstance(df["x"].iloc[0], np.ndarray)
    np.testing.assert_array_equal(df["x"].iloc[2], vectors(5)[2])
    assert df["norm(x)"].tolist() == pytest.approx([float(np.linalg.norm(v)) for v in vectors(5)], rel=1e-6)
    assert df["shout(text)"].iloc[2] == "ABAB"
    assert df["i"].dtype.kind == "i"


def test_to_pandas_outputs_nested_dropped_and_named(docs):
    _with_outputs(docs, 3)
    nested = docs.to_pandas({}, {"_id": 0}, outputs="nested", sort=[("i", 1)])
    assert "norm(x)" not in nested.columns and nested["_outputs"].iloc[1]["text"]["shout"] == "AB"
    dropped = docs.to_pandas({}, outputs="drop")
    assert "_outputs" not in dropped.columns and "norm(x)" not in dropped.columns
    fmt = docs.to_pandas({}, output_names="{key}_{model}")
    assert {"x_norm", "text_shout"} <= set(fmt.columns)
    named = docs.find({}).to_pandas(output_names=lambda model, key: model.upper())
    assert {"NORM", "SHOUT"} <= set(named.columns)


def test_to_pandas_bad_arguments_are_typed_errors(docs):
    _with_outputs(docs, 2)
    with pytest.raises(QueryError, match="outputs must be one of"):
        docs.to_pandas(outputs="flat")
    with pytest.raises(QueryError, match="format string"):
        docs.to_pandas(output_names="no placeholder")
    with pytest.raises(QueryError, match="also a field"):
        docs.to_pandas(output_names=lambda model, key: key)  # "x" and "text" are fields


def test_to_pandas_of_like_query_keeps_score(docs):
    docs.insert_many([{"x": x, "k": i} for i, x in enumerate(vectors(12, seed=3))])
    docs.create_model("ident", testmodels.identity)
    docs.create_semantic_index("vectors", models=["ident"], keys=["x"]).wait(WAIT)
    df = docs.to_pandas(like={"x": vectors(12, seed=3)[4]}, n=3)
    assert len(df) == 3 and "_score" in df.columns
    assert df["k"].iloc[0] == 4
    assert df["_score"].is_monotonic_decreasing
    assert isinstance(df["ident(x)"].iloc[0], np.ndarray)


def test_empty_result_is_an_empty_frame(docs):
    docs.insert_one({"a": 1})
    df = docs.to_pandas({"a": 2})
    assert isinstance(df, pd.DataFrame) and df.empty


# -- insert_many of DataFrames ------------------------------------------------------------------------
def test_insert_many_of_a_dataframe_and_of_its_records(docs):
    docs.create_model("norm", testmodels.norm, key="x")
    xs = vectors(3, seed=5)
    df = pd.DataFrame({"n": [1, 2, 3], "f": [0.5, np.nan, 1.5], "s": ["a", None, "c"], "x": list(xs),
                       "flag": [True, False, True]})
    result = docs.insert_many(df)
    result.jobs.wait(WAIT)
    assert len(result.inserted_ids) == 3
    raw = {d["n"]: d for d in docs.raw.find({}, {"_id": 0})}
    assert type(raw[1]["n"]) is int and type(raw[1]["f"]) is float and type(raw[1]["flag"]) is bool
    assert "f" not in raw[2] and "s" not in raw[2]  # a missing cell is a missing field
    back = docs.find_one({"n": 2})
    np.testing.assert_array_equal(back["x"], xs[1])
    assert back["_outputs"]["x"]["norm"] == pytest.approx(float(np.linalg.norm(xs[1])), rel=1e-6)

    records = df.to_dict("records")  # numpy scalars (np.int64, np.bool_) and NaN as pandas gives them
    result = docs.insert_many(records)
    result.jobs.wait(WAIT)
    assert docs.count_documents({}) == 6
    again = docs.raw.find_one({"_id": result.inserted_ids[1]})
    assert type(again["n"]) is int and again["n"] == 2 and math.isnan(again["f"])  # NaN kept, as pymongo


def test_insert_many_of_a_bad_dataframe_changes_nothing(docs):
    with pytest.raises(QueryError, match="columns must be strings"):
        docs.insert_many(pd.DataFrame({0: [1], "a": [2]}))
    with pytest.raises(QueryError, match="non-empty"):
        docs.insert_many(pd.DataFrame({"a": []}))
    assert docs.count_documents({}) == 0


def test_numpy_scalars_are_stored_as_numbers(docs):
    docs.insert_one({"a": np.int32(7), "b": np.float32(0.5), "c": [np.int64(1)], "d": np.datetime64("2024-01-02")})
    raw = docs.raw.find_one({}, {"_id": 0})
    assert raw["a"] == 7 and type(raw["a"]) is int and raw["b"] == 0.5 and raw["c"] == [1]
    assert raw["d"].year == 2024
    assert docs.count_documents({"a": np.int64(7)}) == 1


# -- apply_model on DataFrames ------------------------------------------------------------------------
def test_apply_model_to_a_dataframe_column(docs):
    docs.create_model("shout", testmodels.shout)
    df = pd.DataFrame({"text": ["a", "bc", "d"], "other": [1, 2, 3]}, index=[10, 20, 30])
    out = docs.apply_model("shout", df, key="text")
    assert isinstance(out, pd.Series) and out.name == "shout(text)"
    assert out.index.tolist() == [10, 20, 30] and out.tolist() == ["A", "BC", "D"]
    series = docs.apply_model("shout", df["text"])
    assert series.index.tolist() == [10, 20, 30] and series.tolist() == ["A", "BC", "D"]
    with pytest.raises(QueryError, match="needs key=") as err:
        docs.apply_model("shout", df[["text"]])
    assert isinstance(err.value, TypeError)
    with pytest.raises(MissingColumnError, match="no column 'txt'") as err:
        docs.apply_model("shout", df, key="txt")
    assert isinstance(err.value, KeyError)
    with pytest.raises(QueryError, match="without inputs"):
        docs.apply_model("shout", df, key="text", write=True)
    assert docs.apply_model("shout", ["x"]) == ["X"]  # lists as before


def test_apply_model_to_arrays_gives_array_cells(docs):
    docs.create_model("ident", testmodels.identity)
    xs = vectors(3)
    out = docs.apply_model("ident", pd.DataFrame({"x": list(xs)}), key="x")
    assert out.dtype == object and all(isinstance(v, np.ndarray) for v in out)
    np.testing.assert_array_equal(np.stack(out.tolist()), xs)


# -- the cursor in a notebook ---------------------------------------------------------------------------
def test_cursor_html_shows_first_rows_compactly_without_consuming(docs):
    from PIL import Image

    image = Image.new("RGB", (64, 32), (255, 0, 0))
    docs.insert_many([{"i": i, "v": np.zeros(384, dtype="float32"), "text": "<b>" + "y" * 200, "img": image}
                      for i in range(12)])
    cursor = docs.find({}, sort=[("i", 1)])
    page = cursor._repr_html_()
    assert page.count("<tr>") == 1 + 10  # header and the first ten documents
    assert "array(float32, (384,))" in page
    assert "data:image/png;base64," in page
    assert "&lt;b&gt;" in page and "<b>y" not in page and "y" * 100 not in page  # escaped and truncated
    assert "more follow" in page
    assert [d["i"] for d in cursor] == list(range(12))  # iteration starts at the beginning
    assert "2 documents" in docs.find({"i": {"$lt": 2}})._repr_html_()


# -- Dask and batch jobs, in every cluster mode --------------------------------------------------------
def _compute(client, ddf):
    return ddf.compute(scheduler="sync" if client.mode == "inline" else client.cluster.client)


def test_to_dask_partitions_match_to_pandas(client, coll):
    coll.insert_many([{"i": i, "x": x} for i, x in enumerate(vectors(25))])
    coll.create_model("norm", testmodels.norm, key="x").wait(WAIT)
    ddf = coll.to_dask({"i": {"$gte": 2}}, partition_size=10)
    assert isinstance(ddf, dd.DataFrame) and ddf.npartitions == 3
    assert "norm(x)" in ddf.columns and ddf["x"].dtype == object
    out = _compute(client, ddf).sort_values("i").reset_index(drop=True)
    expected = coll.to_pandas({"i": {"$gte": 2}}, sort=[("i", 1)])
    assert out["i"].tolist() == expected["i"].tolist() == list(range(2, 25))
    assert out["_id"].tolist() == expected["_id"].tolist()
    assert out["norm(x)"].tolist() == pytest.approx(expected["norm(x)"].tolist())
    assert all(isinstance(v, np.ndarray) for v in out["x"])
    assert float(_compute(client, ddf["norm(x)"].sum())) == pytest.approx(expected["norm(x)"].sum(), rel=1e-5)


def test_to_dask_with_mixed_ids_and_no_match(client, coll):
    coll.insert_many([{"_id": i, "v": i} for i in range(5)] + [{"_id": f"s{i}", "v": 10 + i} for i in range(4)])
    ddf = coll.to_dask(partition_size=3)
    assert sorted(_compute(client, ddf)["v"].tolist()) == [0, 1, 2, 3, 4, 10, 11, 12, 13]
    empty = coll.to_dask({"v": -1})
    assert len(_compute(client, empty)) == 0
    with pytest.raises(QueryError, match="partition_size"):
        coll.to_dask(partition_size=0)


def test_insert_many_of_a_dask_dataframe_runs_per_partition_and_submits_jobs(client, coll, unique_name):
    source = client[unique_name].source
    source.insert_many([{"i": i, "text": "t" * (i % 4), "x": x} for i, x in enumerate(vectors(14))])
    coll.create_model("shout", testmodels.shout, key="text")
    ddf = source.to_dask(partition_size=5)
    result = coll.insert_many(ddf[ddf.i % 2 == 0][["i", "text", "x"]])
    result.jobs.wait(WAIT)
    assert len(result.inserted_ids) == 7 == coll.count_documents({})
    doc = coll.find_one({"i": 6})
    assert doc["_outputs"]["text"]["shout"] == "TT"
    np.testing.assert_array_equal(doc["x"], vectors(14)[6])
    assert "_fold" not in doc  # nothing trains here: no bookkeeping in the documents
    with pytest.raises(QueryError, match="dask.dataframe"):
        coll.from_dask(pd.DataFrame({"a": [1]}))


def test_apply_model_batch_returns_series_and_writes_nothing(client, coll):
    coll.insert_many([{"i": i, "text": "ab" * i} for i in range(20)] + [{"i": 99}])
    coll.create_model("shout", testmodels.shout, batch_size=2)
    out = coll.apply_model("shout", filter={"i": {"$lt": 20}}, key="text", progress=False)
    assert isinstance(out, pd.Series) and out.name == "shout(text)" and out.index.name == "_id"
    by_id = {d["_id"]: d["i"] for d in coll.find({}, {"i": 1})}
    assert {by_id[k]: v for k, v in out.items()} == {i: "AB" * i for i in range(20)}
    assert coll.count_documents({"_outputs": {"$exists": True}}) == 0
    assert client[coll.database.name][f"{coll.name}._applied"].count_documents({}) == 0
    record = coll.list_jobs(kind="apply")[0]
    assert record["status"] == "success" and record["progress"] == 1.0
    assert record["result"]["applied"] == 20
    logs = coll.get_job(str(record["_id"])).logs()
    assert [line.split()[-2] for line in logs if "apply shout to text:" in line] == ["8/20", "16/20", "20/20"]
    assert coll.apply_model("shout", filter={"i": -1}, key="text").empty


def test_apply_model_batch_write_stores_outputs_without_a_watcher(client, coll):
    coll.insert_many([{"i": i, "text": "x" * i} for i in range(6)])
    coll.create_model("shout", testmodels.shout)
    job = coll.apply_model("shout", filter={"i": {"$gte": 3}}, key="text", write=True, progress=False)
    assert job.status == "success" and job.record()["result"]["path"] == "_outputs.text.shout"
    got = {d["i"]: d.get("_outputs", {}).get("text", {}).get("shout") for d in coll.find({})}
    assert got == {0: None, 1: None, 2: None, 3: "XXX", 4: "XXXX", 5: "XXXXX"}
    assert coll.list_watchers() == []
    # a watcher created later finds them current (fingerprints) and computes only the rest
    backfill = coll.create_watcher("shout", "text")
    backfill.wait(WAIT)
    assert backfill[0].record()["result"]["computed"] == 3


def test_apply_model_batch_bad_arguments(client, coll):
    coll.insert_one({"text": "a"})
    coll.create_model("shout", testmodels.shout)
    with pytest.raises(QueryError, match="needs key="):
        coll.apply_model("shout", filter={})
    with pytest.raises(NotRegisteredError):
        coll.apply_model("nope", filter={}, key="text")
    with pytest.raises(QueryError):
        coll.apply_model("shout", filter=[1], key="text")
    assert coll.list_jobs() == []


def test_apply_model_batch_keeps_order_across_chunks_and_records(docs):
    docs.insert_many([{"i": i} for i in range(700)])  # ObjectIds made in order: _id order is i order
    docs.create_model("ident", testmodels.identity, batch_size=100)  # chunks of 400, records of 256
    out = docs.apply_model("ident", filter={}, key="i", progress=False)
    assert out.tolist() == list(range(700))
    assert out.index.tolist() == [d["_id"] for d in docs.find({}, {"_id": 1}, sort=[("_id", 1)])]


def test_attribute_model_outputs_are_named_by_the_model(docs):
    twotower = pytest.importorskip("twotower")
    docs.insert_many([{"x": x, "i": i} for i, x in enumerate(np.random.default_rng(3).normal(size=(4, 8)).astype("float32"))])
    docs.create_model("tt", twotower.TwoTower())
    docs.create_watcher("tt.image", "x").wait(WAIT)
    df = docs.to_pandas({}, sort=[("i", 1)])
    assert "tt.image(x)" in df.columns and isinstance(df["tt.image(x)"][0], np.ndarray)
    batch = docs.apply_model("tt.image", filter={}, key="x")
    np.testing.assert_allclose(np.stack(batch.tolist()), np.stack(df["tt.image(x)"].tolist()), rtol=1e-5, atol=1e-6)
