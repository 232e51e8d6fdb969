"""glcic_tf.torch7.writer: what it writes, the reader reads back, shared references and
storages included."""

import numpy as np

from glcic_tf.torch7.reader import loads_t7
from glcic_tf.torch7.values import LuaFunction, Table, module
from glcic_tf.torch7.writer import dumps_t7


def test_writer_reader_round_trip_and_shared_references():
    rng = np.random.default_rng(3)
    flat = rng.normal(size=20).astype(np.float32)
    weight = flat[2:14].reshape(3, 4)                    # view with a storage offset
    shared = Table(name="shared")
    obj = module("nn.Thing", weight=weight, weight_t=weight.T, flat=flat,
                 again=weight, inner=shared)
    root = {
        "numbers": [1, -2.5, 1e300, 0.0], "text": "héllo", "raw": b"\xff\x00bytes",
        "flags": (True, False), "nothing": None, "nested": {"a": {"b": [1, {"c": 2}]}},
        "one": shared, "two": shared, "module": obj, "module_again": obj,
        "doubles": np.arange(6, dtype=np.float64).reshape(2, 3),
        "longs": np.array([1, -2, 3], np.int64), "bytes": np.arange(4, dtype=np.uint8),
        "empty": np.zeros((0,), np.float32), "fn": LuaFunction(b"\x1bLua", [1]),
    }
    for long_size in (8, 4):
        back = loads_t7(dumps_t7(root, long_size=long_size), long_size=long_size)
        assert back["numbers"].list() == [1, -2.5, 1e300, 0.0]
        assert back["text"] == "héllo" and back["raw"] == b"\xff\x00bytes"
        assert back["flags"].list() == [True, False] and back["nothing"] is None
        assert "nothing" in back
        assert back["nested"]["a"]["b"][2]["c"] == 2
        assert back["one"] is back["two"] and back["one"]["name"] == "shared"
        m = back["module"]
        assert m is back["module_again"] and m.class_name == "nn.Thing"
        assert m["inner"] is back["one"]
        np.testing.assert_array_equal(m["weight"], weight)
        np.testing.assert_array_equal(m["weight_t"], weight.T)
        assert m["again"] is m["weight"]
        # One storage, as in Torch: the views share memory with the flat tensor.
        assert np.shares_memory(m["weight"], m["flat"]) and np.shares_memory(m["weight_t"],
                                                                             m["flat"])
        for key in ("doubles", "longs", "bytes"):
            np.testing.assert_array_equal(back[key], root[key])
            assert back[key].dtype == root[key].dtype
        assert back["empty"].shape == (0,)
        assert back["fn"].dumped == b"\x1bLua" and back["fn"].upvalues.list() == [1]
    # Writing what was read keeps the sharing (same file size, no duplicated storage).
    data = dumps_t7(root)
    assert len(dumps_t7(loads_t7(data))) == len(data)


def test_self_referencing_table_and_table_keys():
    a = Table()
    a["self"] = a
    key = Table(k=1)
    a[key] = "value for a table key"
    back = loads_t7(dumps_t7(a))
    assert back["self"] is back
    (table_key,) = [k for k in back if isinstance(k, Table)]
    assert table_key["k"] == 1 and back[table_key] == "value for a table key"
