"""The authors' released Torch7 completion networks: a .t7 reader, a writer for tests, an importer.

Iizuka et al. released `completionnet_places2.t7`, `completionnet_places2_freeform.t7` and
`completionnet_celeba.t7` (Torch7 binary serialization, `torch.save`). Each holds a table
`{model = nn.Sequential(...), mean = torch.Tensor(3)}`; the official `inpaint.lua` subtracts `mean`
from the RGB image in [0, 1], sets the hole to 0 and feeds `cat(image, mask)` to `model`. This
module never downloads them: the user does.

* `load_t7` / `loads_t7` parse the binary format of torch7's `File.lua` (`writeObject`): a type
  tag (int32), then the value; tables, Torch objects and functions carry an object index so that
  shared references are written once. Torch objects carry a version string ("V 1") and a class
  name; tensors are written as ndim, sizes, strides, 1-based storage offset and a storage object;
  storages as a size and raw little-endian data. int = 4 bytes, long = `long_size` (8 on Linux
  and macOS, where the released files were written).
* `dumps_t7` / `save_t7` write the same format (tests and synthetic files).
* `import_torch7` checks the model's 17 (de)convolutions and 16 batch norms against
  `glcic_tf.models.completion_network` (`padding="torch"`), copies the weights and writes a run
  directory that `glcic_tf.runs.load_completion_network` (export, completion, fine-tuning) loads.
  It then runs `reference_forward`, a NumPy forward pass with Torch's semantics, on a test image
  and fails if the Keras network disagrees.

Python values: nil -> None, number -> float, boolean -> bool, string -> str (bytes when not
UTF-8), table -> `Table` (a dict hashed and compared by identity, like Lua tables), tensor ->
read-only numpy view of its storage (tensors sharing a storage share memory), storage -> 1-D
numpy array, other Torch classes (nn modules) -> `TorchObject`, functions -> `LuaFunction`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
from typing import Any

import numpy as np

TYPE_NIL = 0
TYPE_NUMBER = 1
TYPE_STRING = 2
TYPE_TABLE = 3
TYPE_TORCH = 4
TYPE_BOOLEAN = 5
TYPE_FUNCTION = 6
LEGACY_TYPE_RECUR_FUNCTION = 7
TYPE_RECUR_FUNCTION = 8

# Element type of torch.<Name>Tensor / torch.<Name>Storage (CUDA types store the same bytes;
# torch.CudaTensor is float).
_DTYPES = {
    "Float": "<f4", "Double": "<f8", "Half": "<f2", "Byte": "u1", "Char": "i1",
    "Short": "<i2", "Int": "<i4", "Long": "<i8", "": "<f4",
}
_TENSOR_NAMES = {np.dtype(v).str: k for k, v in _DTYPES.items() if k}
_MAX_NDIM = 64


class Torch7Error(ValueError):
    """A .t7 file cannot be parsed, or does not hold the expected completion network."""


class Table(dict):
    """A Lua table. Hashed and compared by identity (Lua semantics), so it can be a table key."""

    __hash__ = object.__hash__

    def __eq__(self, other):
        return self is other

    def __ne__(self, other):
        return self is not other

    def list(self) -> list:
        """The values at keys 1..n (the table's array part), in order."""
        out = []
        while (len(out) + 1) in self:
            out.append(self[len(out) + 1])
        return out


@dataclasses.dataclass(eq=False)
class TorchObject:
    """An instance of a Torch class other than a tensor or storage (e.g. `nn.ReLU`).

    Attributes:
      class_name: the full Torch class name, e.g. "nn.SpatialConvolution" or "cudnn.ReLU".
      fields: the serialized object, for nn modules a `Table` of its fields.
      version: the class version written with it ("V 1" -> 1; 0 for unversioned files).
    """

    class_name: str
    fields: Any = None
    version: int = 1

    @property
    def kind(self) -> str:
        """The class name after the last '.', so nn.X, cudnn.X and cunn.X are handled alike."""
        return self.class_name.rsplit(".", 1)[-1]

    def get(self, key: str, default: Any = None) -> Any:
        if isinstance(self.fields, dict):
            return self.fields.get(key, default)
        return default

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]

    def __contains__(self, key: str) -> bool:
        return isinstance(self.fields, dict) and key in self.fields

    def __repr__(self) -> str:
        keys = sorted(str(k) for k in self.fields) if isinstance(self.fields, dict) else []
        return f"TorchObject({self.class_name!r}, fields={keys})"


@dataclasses.dataclass(eq=False)
class LuaFunction:
    """A serialized Lua function: its bytecode (never executed here) and upvalues."""

    dumped: bytes
    upvalues: Any = None
    recursive: bool = True


# --- reader ------------------------------------------------------------------------------------


class _Reader:
    def __init__(self, data: bytes, source: str, long_size: int):
        if long_size not in (4, 8):
            raise ValueError(f"long_size must be 4 or 8, got {long_size!r}")
        self.data = data
        self.source = source
        self.pos = 0
        self.long_fmt = "<q" if long_size == 8 else "<i"
        self.long_size = long_size
        self.objects: dict[int, Any] = {}

    def error(self, message: str, pos: int | None = None) -> Torch7Error:
        at = self.pos if pos is None else pos
        return Torch7Error(f"{self.source}: {message} (at byte {at} of {len(self.data)})")

    def _need(self, n: int, what: str) -> None:
        if n < 0:
            raise self.error(f"corrupt file: negative size {n} for {what}")
        if self.pos + n > len(self.data):
            raise self.error(f"truncated file: {what} needs {n} bytes, only "
                             f"{len(self.data) - self.pos} left")

    def _unpack(self, fmt: str, size: int, what: str):
        self._need(size, what)
        value = struct.unpack_from(fmt, self.data, self.pos)[0]
        self.pos += size
        return value

    def int(self, what: str) -> int:
        return self._unpack("<i", 4, what)

    def long(self, what: str) -> int:
        return self._unpack(self.long_fmt, self.long_size, what)

    def raw(self, n: int, what: str) -> bytes:
        self._need(n, what)
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def string(self, what: str) -> bytes:
        return self.raw(self.int(f"length of {what}"), what)

    def read(self) -> Any:
        start = self.pos
        tag = self.int("type tag")
        if tag == TYPE_NIL:
            return None
        if tag == TYPE_NUMBER:
            return self._unpack("<d", 8, "number")
        if tag == TYPE_BOOLEAN:
            return self.int("boolean") == 1
        if tag == TYPE_STRING:
            return _decode(self.string("string"))
        if tag == TYPE_FUNCTION:  # not referenced: no object index
            dumped = self.string("function bytecode")
            return LuaFunction(dumped, self.read(), recursive=False)
        if tag not in (TYPE_TABLE, TYPE_TORCH, TYPE_RECUR_FUNCTION, LEGACY_TYPE_RECUR_FUNCTION):
            hint = ""
            if start == 0 and self.data[:1].isdigit():
                hint = " (looks like an ASCII-mode Torch file; only binary mode is supported)"
            raise self.error(f"not a Torch7 binary file, or corrupt: unknown type tag {tag}{hint}",
                             start)
        index = self.int("object index")
        if index in self.objects:
            return self.objects[index]
        if tag == TYPE_TABLE:
            return self._table(index)
        if tag == TYPE_TORCH:
            return self._torch(index)
        dumped = self.string("function bytecode")
        fn = LuaFunction(dumped)
        self.objects[index] = fn
        fn.upvalues = self.read()
        return fn

    def _table(self, index: int) -> Table:
        size = self.int("table size")
        if size < 0 or size * 8 > len(self.data) - self.pos:  # each entry needs >= 2 tags
            raise self.error(f"corrupt or truncated file: table of {size} entries does not fit")
        table = Table()
        self.objects[index] = table
        for _ in range(size):
            key_pos = self.pos
            key = self.read()
            value = self.read()
            if key is None:
                raise self.error("corrupt file: nil table key", key_pos)
            try:
                table[key] = value
            except TypeError:
                raise self.error(f"unsupported table key of type {type(key).__name__}",
                                 key_pos) from None
        return table

    def _torch(self, index: int) -> Any:
        version_string = self.string("class version")
        if version_string.startswith(b"V "):
            try:
                version = int(float(version_string[2:]))
            except ValueError:
                raise self.error(f"corrupt file: bad class version {version_string!r}") from None
            class_name = _decode(self.string("class name"))
        else:  # written before torch7 versioned its classes
            class_name, version = _decode(version_string), 0
        if not isinstance(class_name, str) or not class_name.isprintable():
            raise self.error(f"not a Torch7 file, or corrupt: bad class name {class_name!r}")
        base = class_name[len("torch."):] if class_name.startswith("torch.") else None
        if base is not None and base.endswith("Tensor"):
            obj = self._tensor(class_name, _dtype_of(class_name, base[:-len("Tensor")], self))
        elif base is not None and base.endswith("Storage"):
            obj = self._storage(class_name, _dtype_of(class_name, base[:-len("Storage")], self))
        elif class_name.startswith("tds."):
            raise self.error(f"unsupported Torch class {class_name} (custom serializer)")
        else:
            # Classes without a custom `write` serialize their fields as one table; register the
            # object first so that fields may refer back to it.
            obj = TorchObject(class_name, None, version)
            self.objects[index] = obj
            obj.fields = self.read()
            return obj
        self.objects[index] = obj
        return obj

    def _tensor(self, class_name: str, dtype: np.dtype) -> np.ndarray:
        ndim = self.int(f"{class_name} ndim")
        if not 0 <= ndim <= _MAX_NDIM:
            raise self.error(f"corrupt file: {class_name} with {ndim} dimensions")
        sizes = [self.long(f"{class_name} size") for _ in range(ndim)]
        strides = [self.long(f"{class_name} stride") for _ in range(ndim)]
        offset = self.long(f"{class_name} storage offset") - 1  # stored 1-based
        storage = self.read()
        if ndim == 0:
            return np.zeros((0,), dtype)
        if any(s < 0 for s in sizes) or any(s < 0 for s in strides) or offset < 0:
            raise self.error(f"corrupt file: {class_name} sizes {sizes}, strides {strides}, "
                             f"offset {offset + 1}")
        if 0 in sizes:
            return np.zeros(sizes, dtype)
        if not isinstance(storage, np.ndarray) or storage.ndim != 1:
            raise self.error(f"corrupt file: {class_name} of size {sizes} has no storage")
        if storage.dtype != dtype:
            raise self.error(f"corrupt file: {class_name} refers to a {storage.dtype} storage")
        last = offset + sum((n - 1) * s for n, s in zip(sizes, strides))
        if last >= storage.size:
            raise self.error(f"corrupt file: {class_name} of size {sizes} (strides {strides}, "
                             f"offset {offset + 1}) reaches past its storage of {storage.size}")
        return np.ndarray(sizes, dtype, buffer=storage, offset=offset * dtype.itemsize,
                          strides=[s * dtype.itemsize for s in strides])

    def _storage(self, class_name: str, dtype: np.dtype) -> np.ndarray:
        size = self.long(f"{class_name} size")
        if size < 0:
            raise self.error(f"corrupt file: {class_name} of size {size}")
        self._need(size * dtype.itemsize, f"{class_name} of {size} elements")
        out = np.frombuffer(self.data, dtype, count=size, offset=self.pos)
        self.pos += size * dtype.itemsize
        return out


def _decode(raw: bytes) -> str | bytes:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


def _dtype_of(class_name: str, base: str, reader: _Reader) -> np.dtype:
    name = base[len("Cuda"):] if base.startswith("Cuda") else base
    if name not in _DTYPES:
        raise reader.error(f"unsupported Torch tensor type {class_name}")
    return np.dtype(_DTYPES[name])


def loads_t7(data: bytes, *, long_size: int = 8, source: str = "<bytes>") -> Any:
    """Parses one object serialized by Torch7's `torch.save` (binary mode).

    Args:
      data: the file's bytes.
      long_size: bytes of a C long where the file was written (8 on Linux/macOS, 4 on Windows).
      source: name used in error messages.

    Raises:
      Torch7Error: the data is not a Torch7 binary file, is truncated or corrupt.
    """
    reader = _Reader(bytes(data), source, long_size)
    try:
        obj = reader.read()
    except RecursionError:
        raise reader.error("objects nested too deeply to parse") from None
    except Torch7Error as e:
        if long_size == 8 and reader.pos > 4:  # a 4-byte-long file misread looks corrupt
            raise Torch7Error(f"{e}; if the file was written on Windows, try long_size=4") from e
        raise
    return obj


def _read_bytes(path: str) -> bytes:
    if "://" in path:
        import tensorflow as tf

        if not tf.io.gfile.exists(path):
            raise FileNotFoundError(f"Torch7 file not found: {path}")
        with tf.io.gfile.GFile(path, "rb") as f:
            return f.read()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Torch7 file not found: {path}")
    with open(path, "rb") as f:
        return f.read()


def load_t7(path: str, *, long_size: int = 8) -> Any:
    """Reads a Torch7 binary file (local path, or any URL tf.io.gfile reads). See `loads_t7`."""
    return loads_t7(_read_bytes(path), long_size=long_size, source=path)


# --- writer ------------------------------------------------------------------------------------


class _Writer:
    def __init__(self, long_size: int):
        if long_size not in (4, 8):
            raise ValueError(f"long_size must be 4 or 8, got {long_size!r}")
        self.out = bytearray()
        self.long_fmt = "<q" if long_size == 8 else "<i"
        self.indices: dict[tuple[str, int], int] = {}
        self.alive: list = []  # keeps written objects alive so that their ids stay unique

    def int(self, value: int) -> None:
        self.out += struct.pack("<i", value)

    def long(self, value: int) -> None:
        self.out += struct.pack(self.long_fmt, value)

    def string(self, value: bytes) -> None:
        self.int(len(value))
        self.out += value

    def _reference(self, tag: int, obj: Any, role: str = "object") -> bool:
        """Writes tag + object index; True when the object itself must follow (first time).

        An array is both a tensor and, when it owns its memory, its storage: `role` keeps the
        two apart.
        """
        self.int(tag)
        key = (role, id(obj))
        if key in self.indices:
            self.int(self.indices[key])
            return False
        self.indices[key] = len(self.indices) + 1
        self.alive.append(obj)
        self.int(self.indices[key])
        return True

    def write(self, obj: Any) -> None:
        if obj is None:
            self.int(TYPE_NIL)
        elif isinstance(obj, (bool, np.bool_)):
            self.int(TYPE_BOOLEAN)
            self.int(1 if obj else 0)
        elif isinstance(obj, (int, float, np.integer, np.floating)):
            self.int(TYPE_NUMBER)
            self.out += struct.pack("<d", float(obj))
        elif isinstance(obj, (str, bytes)):
            self.int(TYPE_STRING)
            self.string(obj.encode("utf-8") if isinstance(obj, str) else obj)
        elif isinstance(obj, np.ndarray):
            self._tensor(obj)
        elif isinstance(obj, TorchObject):
            if self._reference(TYPE_TORCH, obj):
                self.string(f"V {obj.version}".encode())
                self.string(obj.class_name.encode())
                self.write(obj.fields)
        elif isinstance(obj, LuaFunction):
            if not obj.recursive:
                self.int(TYPE_FUNCTION)
                self.string(obj.dumped)
                self.write(obj.upvalues)
            elif self._reference(TYPE_RECUR_FUNCTION, obj):
                self.string(obj.dumped)
                self.write(obj.upvalues)
        elif isinstance(obj, dict):
            if self._reference(TYPE_TABLE, obj):
                self.int(len(obj))
                for k, v in obj.items():
                    self.write(k)
                    self.write(v)
        elif isinstance(obj, (list, tuple)):
            if self._reference(TYPE_TABLE, obj):
                self.int(len(obj))
                for i, v in enumerate(obj, start=1):
                    self.write(i)
                    self.write(v)
        else:
            raise TypeError(f"cannot write a {type(obj).__name__} to a Torch7 file")

    def _tensor(self, array: np.ndarray) -> None:
        dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
        name = _TENSOR_NAMES.get(np.dtype(dtype).str)
        if name is None:
            raise TypeError(f"no Torch tensor type for numpy dtype {array.dtype}")
        if not self._reference(TYPE_TORCH, array):
            return
        self.string(b"V 1")
        self.string(f"torch.{name}Tensor".encode())
        if array.size == 0:  # Torch7 writes empty tensors with 0 dimensions and no storage
            self.int(0)
            self.long(1)
            self.write(None)
            return
        if array.ndim == 0:
            array = array.reshape(1)
        storage, offset, strides = _storage_of(array)
        self.int(array.ndim)
        for n in array.shape:
            self.long(n)
        for s in strides:
            self.long(s)
        self.long(offset + 1)
        if self._reference(TYPE_TORCH, storage, role="storage"):
            self.string(b"V 1")
            self.string(f"torch.{name}Storage".encode())
            self.long(storage.size)
            self.out += storage.astype(storage.dtype.newbyteorder("<"), copy=False).tobytes()


def _storage_of(array: np.ndarray) -> tuple[np.ndarray, int, list[int]]:
    """(storage, element offset, element strides); views of one base array share its storage."""
    root = array
    while isinstance(root.base, np.ndarray):
        root = root.base
    item = array.dtype.itemsize
    if (root is not array and root.flags.c_contiguous and root.dtype == array.dtype
            and all(s >= 0 and s % item == 0 for s in array.strides)):
        start = array.__array_interface__["data"][0] - root.__array_interface__["data"][0]
        end = start + sum((n - 1) * s for n, s in zip(array.shape, array.strides)) + item
        if start >= 0 and start % item == 0 and end <= root.nbytes:
            return root, start // item, [s // item for s in array.strides]
    if not array.flags.c_contiguous:
        array = np.ascontiguousarray(array)
    strides = [int(np.prod(array.shape[i + 1:])) for i in range(array.ndim)]
    return array, 0, strides


def dumps_t7(obj: Any, *, long_size: int = 8) -> bytes:
    """Serializes `obj` like Torch7's `torch.save` (binary mode, referenced).

    None, bool, numbers, str/bytes, dict (table), list/tuple (table with keys 1..n), numpy arrays
    (torch.<Type>Tensor; views of one C-contiguous base array share one storage, with offsets
    and strides), `TorchObject` and `LuaFunction`. An object written twice is written once and
    then referenced by index, as Torch does.
    """
    writer = _Writer(long_size)
    writer.write(obj)
    return bytes(writer.out)


def save_t7(path: str, obj: Any, *, long_size: int = 8) -> None:
    """Writes `dumps_t7(obj)` to a local path."""
    with open(path, "wb") as f:
        f.write(dumps_t7(obj, long_size=long_size))


# --- the completion network in Torch7 ----------------------------------------------------------

CONV_KINDS = ("SpatialConvolution", "SpatialConvolutionMM", "SpatialDilatedConvolution")
DECONV_KINDS = ("SpatialFullConvolution",)
BN_KINDS = ("SpatialBatchNormalization",)
CONTAINER_KINDS = ("Sequential", "gModule")
SKIPPED_KINDS = ("Identity",)
ACTIVATION_KINDS = ("ReLU", "Sigmoid")


def module(class_name: str, **fields) -> TorchObject:
    """A Torch object with the given fields, e.g. `module("nn.ReLU", inplace=True)`."""
    return TorchObject(class_name, Table(fields), 1)


def synthetic_completionnet(width: float = 1.0, *, seed: int = 0,
                            mean=(0.4560, 0.4472, 0.4155), shared_storage: bool = False,
                            cudnn: bool = False) -> Table:
    """A table `{model = nn.Sequential, mean = FloatTensor(3)}` shaped like the released files.

    The model has the official structure (Table 1: 17 convolutions, each but the last followed
    by SpatialBatchNormalization and ReLU, a final Sigmoid) and seeded random weights. Its
    batch-norm statistics are those of a seeded 32x32 calibration input, perturbed, so that
    activations stay of order 1 and the output varies from pixel to pixel (random statistics
    would leave an almost constant image, which hides misplaced pixels). `width` scales the
    channels as `glcic_tf.models.scaled` does.

    Args:
      width: channel multiplier (1.0: the released files' 6,072,131 parameters).
      seed: seed of the weights and of the calibration input.
      mean: the stored mean pixel.
      shared_storage: put all weights in one flat storage, as Torch's `getParameters()` leaves
        them (tensors with storage offsets).
      cudnn: name the layers cudnn.* instead of nn.* (as a model saved from the GPU would).
    """
    from glcic_tf import models

    rng = np.random.default_rng(seed)
    ns = "cudnn" if cudnn else "nn"
    params: list[tuple[Table, str, np.ndarray]] = []
    layers = []
    cin = 4
    empty = np.zeros((0,), np.float32)
    x = rng.normal(0, 0.3, (1, 4, 32, 32))  # calibration input
    x[:, 3] = 0.0
    x[:, :, 8:24, 8:24] = [[[0.0]], [[0.0]], [[0.0]], [[1.0]]]
    for name, kind, k, stride, dilation, filters in models.COMPLETION_LAYERS:
        cout = 3 if name == "output_conv" else models.scaled(filters, width)
        common = dict(nInputPlane=cin, nOutputPlane=cout, kW=k, kH=k, dW=stride, dH=stride,
                      output=empty, gradInput=empty, train=False, _type="torch.FloatTensor")
        scale = np.sqrt(2.0 / (cin * k * k))
        bias = rng.normal(0, 0.1, cout)
        if kind == "deconv":
            conv = module(f"{ns}.SpatialFullConvolution", padW=1, padH=1, adjW=0, adjH=0,
                          **common)
            weight = rng.normal(0, scale, (cin, cout, k, k))
            x = torch_full_conv2d(x, weight, bias, stride=stride, pad=1)
        else:
            pad = (k - 1) // 2 * dilation
            if dilation > 1:
                conv = module("nn.SpatialDilatedConvolution", padW=pad, padH=pad,
                              dilationW=dilation, dilationH=dilation, **common)
            else:
                conv = module(f"{ns}.SpatialConvolution", padW=pad, padH=pad, **common)
            weight = rng.normal(0, scale, (cout, cin, k, k))
            x = torch_conv2d(x, weight, bias, stride=stride, pad=pad, dilation=dilation)
        if name == "output_conv":  # pre-sigmoid spread 2 around a small random offset
            factor = 2.0 / max(float(x.std()), 1e-6)
            weight, bias = weight * factor, (bias - x.mean((0, 2, 3))) * factor + bias * 0.5
        params += [(conv.fields, "weight", weight), (conv.fields, "bias", bias)]
        layers.append(conv)
        if name == "output_conv":
            layers.append(module(f"{ns}.Sigmoid", output=empty, gradInput=empty))
            break
        bn = module(f"{ns}.SpatialBatchNormalization", eps=1e-5, momentum=0.1, affine=True,
                    nOutput=cout, output=empty, gradInput=empty, train=False)
        stats = {"weight": rng.uniform(0.5, 1.5, cout), "bias": rng.normal(0, 0.2, cout),
                 "running_mean": x.mean((0, 2, 3)) + rng.normal(0, 0.1, cout) * x.std((0, 2, 3)),
                 "running_var": x.var((0, 2, 3)) * rng.uniform(0.7, 1.4, cout) + 1e-3}
        params += [(bn.fields, "weight", stats["weight"]), (bn.fields, "bias", stats["bias"])]
        bn.fields["running_mean"] = stats["running_mean"].astype(np.float32)
        bn.fields["running_var"] = stats["running_var"].astype(np.float32)
        x = np.maximum(torch_batch_norm(x, stats, 1e-5), 0.0)
        layers += [bn, module(f"{ns}.ReLU", threshold=0, val=0, inplace=True, output=empty,
                              gradInput=empty)]
        cin = cout
    if shared_storage:
        flat = np.zeros(sum(p[2].size for p in params), np.float32)
        at = 0
        for fields, key, value in params:
            view = flat[at:at + value.size].reshape(value.shape)
            view[...] = value
            fields[key] = view
            at += value.size
    else:
        for fields, key, value in params:
            fields[key] = value.astype(np.float32)
    model = module("nn.Sequential", modules=Table({i + 1: m for i, m in enumerate(layers)}),
                   output=empty, gradInput=empty, train=False, _type="torch.FloatTensor")
    return Table(model=model, mean=np.asarray(mean, np.float32))


def leaf_modules(model: Any, source: str = "model") -> list[TorchObject]:
    """The model's layers in execution order (Sequential / gModule containers flattened)."""
    if not isinstance(model, TorchObject):
        raise Torch7Error(f"{source}: expected a Torch nn module, found {type(model).__name__}")
    if model.kind in CONTAINER_KINDS:
        children = model.get("modules")
        if not isinstance(children, Table):
            raise Torch7Error(f"{source}: {model.class_name} has no 'modules' list")
        out = []
        for child in children.list():
            out += leaf_modules(child, source)
        return out
    if model.get("modules") is not None:
        raise Torch7Error(f"{source}: unsupported container {model.class_name}; the completion "
                          "network is a plain sequence (nn.Sequential)")
    return [model]


def _int(m: TorchObject, key: str, default: int | None = None) -> int | None:
    value = m.get(key, default)
    return None if value is None else int(value)


def _array(value: Any, name: str) -> np.ndarray | None:
    if value is None:
        return None
    if not isinstance(value, np.ndarray):
        raise Torch7Error(f"{name} is a {type(value).__name__}, expected a tensor")
    return np.asarray(value, np.float64)


@dataclasses.dataclass
class Layer:
    """One imported layer, with Torch's layout (conv weight [out, in, kh, kw], full conv
    weight [in, out, kh, kw]) and Torch's hyperparameters."""

    kind: str  # "conv", "deconv", "bn", "relu", "sigmoid"
    name: str  # the Keras layer name (conv1 ... output_conv, conv1_bn ...)
    arrays: dict[str, np.ndarray]
    stride: int = 1
    pad: int = 0
    dilation: int = 1
    eps: float = 0.0
    momentum: float = 0.1


@dataclasses.dataclass
class TorchCompletionNet:
    """The completion network read from a .t7 file: layers in order, the mean, BN settings."""

    layers: list[Layer]
    mean: tuple[float, float, float] | None
    width: float
    eps: float
    momentum: float

    @property
    def num_parameters(self) -> int:
        keys = ("weight", "bias")
        return sum(a.size for layer in self.layers for k, a in layer.arrays.items() if k in keys)


def parse_completionnet(root: Any, source: str = "model") -> TorchCompletionNet:
    """Checks a loaded .t7 object against the paper's completion network and extracts it.

    Args:
      root: what `load_t7` returned: `{model=..., mean=...}` or the model alone.
      source: file name for error messages.

    Raises:
      Torch7Error: a layer is missing, extra, of the wrong class, shape or hyperparameters.
    """
    from glcic_tf import models

    mean = None
    model = root
    if isinstance(root, Table):
        if "model" not in root:
            raise Torch7Error(f"{source}: the file holds a table without a 'model' entry "
                              f"(keys: {sorted(str(k) for k in root)})")
        model = root["model"]
        if root.get("mean") is not None:
            m = _array(root["mean"], f"{source}: mean")
            if m is None or m.size != 3:
                raise Torch7Error(f"{source}: mean must have 3 values (RGB), found shape "
                                  f"{None if m is None else m.shape}")
            mean = tuple(float(v) for v in m.reshape(3))
    leaves = [m for m in leaf_modules(model, source) if m.kind not in SKIPPED_KINDS]
    known = CONV_KINDS + DECONV_KINDS + BN_KINDS + ACTIVATION_KINDS
    for i, m in enumerate(leaves):
        if m.kind not in known:
            raise Torch7Error(f"{source}: module #{i + 1} is {m.class_name}, which is not part of "
                              f"the GLCIC completion network (expected one of {list(known)})")
    convs = [m for m in leaves if m.kind in CONV_KINDS + DECONV_KINDS]
    bns = [m for m in leaves if m.kind in BN_KINDS]
    expected = models.COMPLETION_LAYERS
    if len(convs) != len(expected) or len(bns) != len(expected) - 1:
        raise Torch7Error(
            f"{source}: found {len(convs)} convolution layers and {len(bns)} batch-norm layers, "
            f"expected {len(expected)} and {len(expected) - 1} (Table 1 of the paper); classes "
            f"in order: {[m.kind for m in leaves]}")
    first_out = _int(convs[0], "nOutputPlane") or 0
    width = first_out / expected[0][5]
    if not (0 < width <= 4.0) or models.scaled(expected[0][5], width) != first_out:
        raise Torch7Error(f"{source}: layer 1 (conv1) has {first_out} output channels; "
                          f"expected a multiple of the paper's {expected[0][5]}")

    layers: list[Layer] = []
    cin = 4
    for i, (m, spec) in enumerate(zip(convs, expected)):
        layers.append(_conv_layer(m, spec, i, cin, width, source))
        cin = layers[-1].arrays["weight"].shape[0 if spec[1] == "conv" else 1]

    eps = momentum = None
    bn_layers = []
    for j, m in enumerate(bns):
        name = f"{expected[j][0]}_bn"
        channels = layers[j].arrays["bias"].size
        where = f"{source}: batch-norm layer {j + 1} ({name}, {m.class_name})"
        arrays = {}
        for key in ("weight", "bias", "running_mean", "running_var"):
            arrays[key] = _array(m.get(key), f"{where}: {key}")
        if arrays["running_var"] is None and m.get("running_std") is not None:
            # nn before BN version 2 stored 1 / sqrt(var + eps).
            std = _array(m.get("running_std"), f"{where}: running_std")
            arrays["running_var"] = 1.0 / np.square(std) - float(m.get("eps", 1e-5))
        if arrays["weight"] is None:  # affine = false
            arrays["weight"] = np.ones(channels)
        if arrays["bias"] is None:
            arrays["bias"] = np.zeros(channels)
        for key, value in arrays.items():
            if value is None:
                raise Torch7Error(f"{where}: missing {key}")
            if value.shape != (channels,):
                raise Torch7Error(f"{where}: {key} has shape {list(value.shape)}, expected "
                                  f"[{channels}] (the output channels of {layers[j].name})")
        this_eps = float(m.get("eps", 1e-5))
        if eps is not None and this_eps != eps:
            raise Torch7Error(f"{where}: eps {this_eps} differs from the other layers' {eps}; "
                              "glcic_tf uses one epsilon for all batch norms")
        eps = this_eps
        momentum = float(m.get("momentum", 0.1)) if momentum is None else momentum
        bn_layers.append(Layer("bn", name, arrays, eps=this_eps, momentum=momentum))

    # The exact order: conv, BN, ReLU for every layer but the last; conv, Sigmoid at the end.
    pattern: list[Layer] = []
    for j, conv in enumerate(layers):
        pattern.append(conv)
        if j < len(bn_layers):
            pattern += [bn_layers[j], Layer("relu", f"{conv.name}_relu", {})]
    pattern.append(Layer("sigmoid", "completion", {}))
    accepted = {"conv": CONV_KINDS + DECONV_KINDS, "deconv": CONV_KINDS + DECONV_KINDS,
                "bn": BN_KINDS, "relu": ("ReLU",), "sigmoid": ("Sigmoid",)}
    for i, layer in enumerate(pattern):
        m = leaves[i] if i < len(leaves) else None
        ok = m is not None and m.kind in accepted[layer.kind]
        if ok and layer.kind == "relu" and float(m.get("threshold", 0) or 0) != 0:
            ok = False
        if not ok:
            after = pattern[i - 1].name if i else "the input"
            raise Torch7Error(f"{source}: module #{i + 1} after {after}: expected "
                              f"{' or '.join(accepted[layer.kind])} ({layer.name}), found "
                              f"{'nothing' if m is None else m.class_name}")
    if len(leaves) > len(pattern):
        raise Torch7Error(f"{source}: {len(leaves) - len(pattern)} extra module(s) after the "
                          f"final Sigmoid: {[m.class_name for m in leaves[len(pattern):]]}")
    return TorchCompletionNet(pattern, mean, width, eps if eps is not None else 1e-5,
                              momentum if momentum is not None else 0.1)


def _conv_layer(m: TorchObject, spec, i: int, cin: int, width: float, source: str) -> Layer:
    from glcic_tf import models

    name, kind, k, stride, dilation, filters = spec
    cout = 3 if name == "output_conv" else models.scaled(filters, width)
    where = f"{source}: layer {i + 1} ({name}, {m.class_name})"
    if kind == "deconv" and m.kind not in DECONV_KINDS:
        raise Torch7Error(f"{where}: expected a SpatialFullConvolution (4x4 stride-2 "
                          f"deconvolution), found {m.class_name}")
    if kind == "conv" and m.kind not in CONV_KINDS:
        raise Torch7Error(f"{where}: expected a SpatialConvolution, found {m.class_name}")
    pad = 1 if kind == "deconv" else (k - 1) // 2 * dilation
    found = {"kernel": (_int(m, "kH"), _int(m, "kW")), "stride": (_int(m, "dH"), _int(m, "dW")),
             "pad": (_int(m, "padH", 0), _int(m, "padW", 0)),
             "dilation": (_int(m, "dilationH", 1), _int(m, "dilationW", 1)),
             "adj": (_int(m, "adjH", 0), _int(m, "adjW", 0)), "groups": _int(m, "groups", 1)}
    want = {"kernel": (k, k), "stride": (stride, stride), "pad": (pad, pad),
            "dilation": (dilation, dilation), "adj": (0, 0), "groups": 1}
    for key in want:
        if found[key] != want[key]:
            raise Torch7Error(f"{where}: {key} {found[key]}, expected {want[key]}")
    weight = _array(m.get("weight"), f"{where}: weight")
    shape = (cin, cout, k, k) if kind == "deconv" else (cout, cin, k, k)
    if weight is not None and weight.ndim == 2 and kind == "conv" and weight.size == np.prod(
            shape):  # SpatialConvolutionMM in old nn kept [out, in * kh * kw]
        weight = weight.reshape(shape)
    if weight is None or weight.shape != shape:
        layout = "[in, out, kh, kw]" if kind == "deconv" else "[out, in, kh, kw]"
        raise Torch7Error(f"{where}: weight has shape "
                          f"{None if weight is None else list(weight.shape)}, expected "
                          f"{list(shape)} {layout}")
    bias = _array(m.get("bias"), f"{where}: bias")
    if bias is None:
        bias = np.zeros(cout)
    if bias.shape != (cout,):
        raise Torch7Error(f"{where}: bias has shape {list(bias.shape)}, expected [{cout}]")
    return Layer(kind, name, {"weight": weight, "bias": bias}, stride=stride, pad=pad,
                 dilation=dilation)


# --- NumPy reference with Torch's semantics ----------------------------------------------------


def torch_conv2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, *, stride: int = 1,
                 pad: int = 0, dilation: int = 1) -> np.ndarray:
    """Torch SpatialConvolution / SpatialDilatedConvolution: x (N, C, H, W), weight
    [out, in, kh, kw] (cross-correlation, zero padding `pad` on every side)."""
    n, _, h, w = x.shape
    _, _, kh, kw = weight.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh = (h + 2 * pad - dilation * (kh - 1) - 1) // stride + 1
    ow = (w + 2 * pad - dilation * (kw - 1) - 1) // stride + 1
    out = np.zeros((n, oh, ow, weight.shape[0]))
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, :, i * dilation:i * dilation + (oh - 1) * stride + 1:stride,
                       j * dilation:j * dilation + (ow - 1) * stride + 1:stride]
            out += np.tensordot(patch, weight[:, :, i, j], axes=([1], [1]))
    return out.transpose(0, 3, 1, 2) + bias[None, :, None, None]


def torch_full_conv2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, *, stride: int = 2,
                      pad: int = 1, adj: int = 0) -> np.ndarray:
    """Torch SpatialFullConvolution: weight [in, out, kh, kw]; every input pixel (y, x) adds
    `x[c, y, x] * weight[c, :, i, j]` at output (y * stride - pad + i, x * stride - pad + j);
    output size (H - 1) * stride - 2 * pad + kh + adj."""
    n, _, h, w = x.shape
    _, cout, kh, kw = weight.shape
    canvas = np.zeros((n, (h - 1) * stride + kh + adj, (w - 1) * stride + kw + adj, cout))
    for i in range(kh):
        for j in range(kw):
            canvas[:, i:i + (h - 1) * stride + 1:stride, j:j + (w - 1) * stride + 1:stride] += (
                np.tensordot(x, weight[:, :, i, j], axes=([1], [0])))
    oh = (h - 1) * stride - 2 * pad + kh + adj
    ow = (w - 1) * stride - 2 * pad + kw + adj
    out = canvas[:, pad:pad + oh, pad:pad + ow]
    return out.transpose(0, 3, 1, 2) + bias[None, :, None, None]


def torch_batch_norm(x: np.ndarray, arrays: dict[str, np.ndarray], eps: float) -> np.ndarray:
    """SpatialBatchNormalization in evaluation mode (running statistics)."""
    def c(v):
        return v[None, :, None, None]

    return ((x - c(arrays["running_mean"])) / np.sqrt(c(arrays["running_var"]) + eps)
            * c(arrays["weight"]) + c(arrays["bias"]))


def reference_forward(net: TorchCompletionNet, x: np.ndarray) -> np.ndarray:
    """Runs the Torch model in evaluation mode in NumPy (float64): x (N, 4, H, W), Torch's input
    `cat(image - mean with holes zeroed, mask)`; returns (N, 3, H, W) in [0, 1]."""
    x = np.asarray(x, np.float64)
    for layer in net.layers:
        a = layer.arrays
        if layer.kind == "conv":
            x = torch_conv2d(x, a["weight"], a["bias"], stride=layer.stride, pad=layer.pad,
                             dilation=layer.dilation)
        elif layer.kind == "deconv":
            x = torch_full_conv2d(x, a["weight"], a["bias"], stride=layer.stride, pad=layer.pad)
        elif layer.kind == "bn":
            x = torch_batch_norm(x, a, layer.eps)
        elif layer.kind == "relu":
            x = np.maximum(x, 0.0)
        elif layer.kind == "sigmoid":
            x = 1.0 / (1.0 + np.exp(-x))
    return x


# --- importer ----------------------------------------------------------------------------------


def keras_kernel(layer: Layer) -> np.ndarray:
    """Torch weight -> Keras kernel.

    Conv2D: [out, in, kh, kw] -> [kh, kw, in, out]. Conv2DTranspose: [in, out, kh, kw] ->
    [kh, kw, out, in], no spatial flip: TF's conv2d_transpose scatters input pixel (y, x) with
    kernel tap (i, j) to output (y * s - pad + i, x * s - pad + j), exactly as Torch's
    SpatialFullConvolution does (tests/test_torch7.py proves both against NumPy references).
    """
    return np.ascontiguousarray(layer.arrays["weight"].transpose(2, 3, 1, 0), np.float32)


def set_completion_weights(completion, net: TorchCompletionNet) -> None:
    """Copies the Torch layers into a `models.completion_network` with the same width.

    Raises:
      Torch7Error: a Keras variable's shape differs from the Torch tensor's.
    """
    for layer in net.layers:
        if layer.kind in ("conv", "deconv"):
            target = completion.get_layer(layer.name)
            pairs = [(target.kernel, keras_kernel(layer)), (target.bias, layer.arrays["bias"])]
        elif layer.kind == "bn":
            target = completion.get_layer(layer.name)
            a = layer.arrays
            pairs = [(target.gamma, a["weight"]), (target.beta, a["bias"]),
                     (target.moving_mean, a["running_mean"]),
                     (target.moving_variance, a["running_var"])]
        else:
            continue
        for variable, value in pairs:
            if tuple(variable.shape) != value.shape:
                raise Torch7Error(f"{layer.name}: Keras variable {variable.path} has shape "
                                  f"{tuple(variable.shape)}, the Torch tensor {value.shape}")
            variable.assign(np.asarray(value, np.float32))


def torch7_config(net: TorchCompletionNet, preset: str = "paper", mean_pixel=None):
    """The GLCICConfig of an imported network: `preset` with padding "torch", the "torch7"
    input convention, the stored mean and the file's batch-norm epsilon and momentum."""
    from glcic_tf.config import ConfigError, get_preset

    mean = net.mean if mean_pixel is None else tuple(float(v) for v in mean_pixel)
    if mean is None:
        raise Torch7Error("the file stores no mean pixel; pass mean_pixel (RGB in [0, 1])")
    try:
        return get_preset(preset).override({
            "name": "torch7-import",
            "model.width": float(net.width),
            "model.padding": "torch",
            "model.batch_norm_epsilon": float(net.eps),
            "model.batch_norm_momentum": 1.0 - float(net.momentum),
            "data.input_convention": "torch7",
            "data.mean_pixel": list(mean),
        })
    except ConfigError as e:
        raise Torch7Error(f"the imported network does not fit preset {preset!r}: {e}") from e


def verify_import(completion, net: TorchCompletionNet, config, *, height: int = 32,
                  width: int = 40, seed: int = 0) -> float:
    """Max |Keras - NumPy Torch reference| on a seeded image with a rectangular hole.

    The Keras input goes through `glcic_tf.masks.network_inputs` (the config's input
    convention); the reference gets Torch's `cat((image - mean) * (1 - mask), mask)`.
    """
    from glcic_tf import masks

    rng = np.random.default_rng(seed)
    image = rng.random((1, height, width, 3)).astype(np.float32)
    hole = np.zeros((1, height, width, 1), np.float32)
    hole[:, height // 4:height // 4 + height // 2, width // 3:width // 3 + width // 2] = 1.0
    keras_out = np.asarray(completion(masks.network_inputs(image, hole, config.data),
                                      training=False))
    mean = np.asarray(config.data.mean_pixel, np.float32)
    torch_in = np.concatenate([(image - mean) * (1 - hole), hole], -1).transpose(0, 3, 1, 2)
    ref = reference_forward(net, torch_in).transpose(0, 2, 3, 1)
    return float(np.max(np.abs(keras_out - ref)))


IMPORT_INFO_NAME = "torch7_import.json"


def import_torch7(t7_path: str, run_dir: str, *, preset: str = "paper", mean_pixel=None,
                  long_size: int = 8, verify: bool = True, tolerance: float = 1e-3) -> str:
    """Imports a released Torch7 completion network into a glcic_tf run directory.

    Writes `config.json` (the preset with model.padding "torch", data.input_convention
    "torch7", data.mean_pixel = the stored mean, model.width from the file), a checkpoint
    `tf.train.Checkpoint(step=0, completion=C)` under `checkpoints/` and `torch7_import.json`
    (source, sha256, layers, mean, verification). `runs.load_completion_network(run_dir)` then
    returns the network.

    Args:
      t7_path: e.g. completionnet_places2.t7 (the user downloads it; nothing is fetched here).
      run_dir: new run directory (must not already hold a config or checkpoints).
      preset: config preset the imported run starts from.
      mean_pixel: overrides (or supplies, when the file has none) the mean pixel.
      long_size: C long size where the file was written (8, or 4 for Windows files).
      verify: compare the Keras network with `reference_forward` and fail above `tolerance`.
      tolerance: max absolute output difference accepted by `verify`.

    Returns:
      run_dir.

    Raises:
      FileNotFoundError: no such file.
      FileExistsError: run_dir is already a run directory.
      Torch7Error: the file is not a Torch7 file or not the completion network (the message
        names the layer, and the expected and found class or shape).
    """
    import tensorflow as tf

    from glcic_tf import models, runs

    for existing in (runs.config_path(run_dir), runs.checkpoint_dir(run_dir)):
        if tf.io.gfile.exists(existing):
            raise FileExistsError(f"{run_dir} already holds {os.path.basename(existing)}; "
                                  "import into a new directory")
    data = _read_bytes(t7_path)
    net = parse_completionnet(loads_t7(data, long_size=long_size, source=t7_path), t7_path)
    config = torch7_config(net, preset, mean_pixel)
    completion = models.completion_network(config.model.width, config.model)
    set_completion_weights(completion, net)
    max_diff = None
    if verify:
        max_diff = verify_import(completion, net, config)
        if not max_diff <= tolerance:
            raise Torch7Error(f"{t7_path}: the imported Keras network differs from the Torch "
                              f"reference by {max_diff:.3g} > {tolerance} (max abs output)")

    saved = runs.save_completion_run(run_dir, config, completion, step=0)
    info = {
        "source": os.path.abspath(t7_path) if "://" not in t7_path else t7_path,
        "sha256": hashlib.sha256(data).hexdigest(),
        "checkpoint": saved,
        "mean_pixel": list(config.data.mean_pixel),
        "width": net.width,
        "batch_norm_epsilon": net.eps,
        "parameters": int(net.num_parameters),
        "layers": [{"name": layer.name, "kind": layer.kind,
                    "shape": list(layer.arrays["weight"].shape)}
                   for layer in net.layers if layer.kind in ("conv", "deconv")],
        "max_abs_diff_vs_torch_reference": max_diff,
    }
    with tf.io.gfile.GFile(os.path.join(run_dir, IMPORT_INFO_NAME), "w") as f:
        f.write(json.dumps(info, indent=2) + "\n")
    return run_dir
