"""glcic_tf.torch7.reader: hand-written bytes from the format description, and clear errors for
what is not a Torch7 file or is truncated."""

import struct

import numpy as np
import pytest

from glcic_tf.torch7.reader import load_t7, loads_t7
from glcic_tf.torch7.synthetic import synthetic_completionnet
from glcic_tf.torch7.values import Table, Torch7Error
from glcic_tf.torch7.writer import dumps_t7


def test_reader_parses_hand_written_bytes():
    # {[1]=2.5, x=true, t=<FloatTensor 2x3, column-major, storage offset 2>} written by hand
    # from the format description, independently of the writer.
    def i32(v):
        return struct.pack("<i", v)

    def i64(v):
        return struct.pack("<q", v)

    def string(s):
        return i32(2) + i32(len(s)) + s

    storage = np.arange(8, dtype=np.float32)
    tensor = (i32(4) + i32(3) + string(b"V 1")[4:] + string(b"torch.FloatTensor")[4:]
              + i32(2) + i64(2) + i64(3) + i64(1) + i64(2) + i64(3)
              + i32(4) + i32(4) + string(b"V 1")[4:] + string(b"torch.FloatStorage")[4:]
              + i64(8) + storage.tobytes())
    legacy = i32(4) + i32(5) + string(b"nn.ReLU")[4:] + i32(3) + i32(6) + i32(0)  # no version
    data = (i32(3) + i32(1) + i32(4)
            + i32(1) + struct.pack("<d", 1.0) + i32(1) + struct.pack("<d", 2.5)
            + string(b"x") + i32(5) + i32(1)
            + string(b"t") + tensor
            + string(b"relu") + legacy)
    root = loads_t7(data)
    assert isinstance(root, Table) and root[1] == 2.5 and root["x"] is True
    np.testing.assert_array_equal(root["t"], [[2, 4, 6], [3, 5, 7]])
    assert root["t"].dtype == np.float32
    assert root["relu"].class_name == "nn.ReLU" and root["relu"].version == 0
    assert root["relu"].kind == "ReLU" and dict(root["relu"].fields) == {}


def test_not_a_torch7_file(tmp_path):
    path = str(tmp_path / "random.t7")
    with open(path, "wb") as f:
        f.write(np.random.default_rng(0).bytes(1000))
    with pytest.raises(Torch7Error, match=r"random.t7: not a Torch7 binary file, or corrupt: "
                                          r"unknown type tag"):
        load_t7(path)
    with pytest.raises(Torch7Error, match="ASCII-mode"):
        loads_t7(b"4\n1\n3\nV 1\n")
    with pytest.raises(FileNotFoundError, match="Torch7 file not found: .*missing.t7"):
        load_t7(str(tmp_path / "missing.t7"))


def test_truncated_file(tmp_path):
    data = dumps_t7(synthetic_completionnet(0.0625))
    for cut in (3, len(data) // 2, len(data) - 1):
        with pytest.raises(Torch7Error, match=r"<bytes>: truncated file: .* needs \d+ bytes, "
                                              r"only \d+ left"):
            loads_t7(data[:cut])
