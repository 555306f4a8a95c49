"""Read a network saved by dlib's DNN toolkit (``dlib::serialize(net, file)``) with numpy alone, no dlib.

The reader knows the records of ``dlib_face_recognition_resnet_model_v1.dat`` (dlib's 128-d face descriptor
network, shipped by the ``face_recognition_models`` package) and nothing more: every layer tag it meets is
checked against the tags below, an unknown one, a truncated file or a file that is not a dlib network raises a
one-line :class:`~lanet.errors.LanetError` naming the file, and the file must end exactly after the last record.

The serialisation, as this file uses it (all integers little-endian):

* **integer** (any width): one control byte, low nibble = number of magnitude bytes (1..8), bit ``0x80`` =
  negative, other bits zero; then the magnitude. Zero is ``01 00``.
* **string**: an integer length, then the bytes. Every layer starts with its tag, a string (``"con_4"``).
* **boolean**: the ASCII byte ``'0'`` or ``'1'``.
* **real** (float or double hyper-parameters): integer mantissa then integer exponent, value = m * 2^e.
* **tensor**: integer version 2, four integers n, k, nr, nc, then n*k*nr*nc float32 values. An **alias**
  tensor (a view into a layer's parameters) is version 1 and four integers, no data.

File order: the loss layer's version (1), tag and fields; the version integers of all nested layer wrappers,
outermost first (tags and skips write nothing else); the input layer (tag and fields); then one record per
computational layer in forward order (input to output). A record is the layer's tag and fields, three booleans
(bookkeeping) and three empty tensors (gradient buffers); the first record, the one over the input layer, adds
one integer (its sample expansion factor, 1). Layer fields:

====================  =============================================================================================
``con_4``             params (OIHW filters, then one bias per filter), num_filters, kernel rows, cols, stride y, x,
                      padding y, x; filters and biases aliases; four reals (learning-rate / weight-decay multipliers)
``affine_``           params (gamma for every channel, then beta); gamma and beta aliases; mode (0 = per channel)
``relu_``             nothing
``add_prev_``         nothing (adds the output of the layer tagged before, zero-padding both to the larger shape)
``max_pool_2``        six integers: window rows, cols, stride y, x, padding y, x
``avg_pool_2``        the same; rows = cols = 0 means a global average
``fc_2``              num_outputs, num_inputs, params stored (inputs [+1 bias row]) x outputs, weights and biases
                      aliases, bias mode (1 = no bias), four reals
====================  =============================================================================================

Other dlib releases write other tags (``con_5``, ``affine_2``, ``fc_3``, ``bn_con2``, ...): they are reported by
name, not guessed at.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LanetError

#: Tags of the computational layers this reader can parse.
KNOWN_LAYERS = ("con_4", "affine_", "relu_", "add_prev_", "max_pool_2", "avg_pool_2", "fc_2")
KNOWN_LOSSES = ("loss_metric_2",)
KNOWN_INPUTS = ("input_rgb_image_sized",)
_MAX_TAG = 64  # longer "tags" mean the bytes are not a dlib network
_MAX_WRAPPERS = 100_000


@dataclass
class DlibLayer:
    """One computational layer: its tag, its hyper-parameters and its flat float32 parameter vector."""

    tag: str
    fields: dict[str, Any]
    params: np.ndarray  # 1-D float32 (empty for layers without parameters)
    params_shape: tuple[int, int, int, int] = (0, 0, 0, 0)  # n, k, nr, nc as stored


@dataclass
class DlibNet:
    """A parsed dlib network: loss, input layer and the computational layers in forward order."""

    path: Path
    loss: str
    loss_fields: dict[str, float]
    input: str
    input_mean_rgb: tuple[float, float, float]
    input_size: tuple[int, int]  # rows, cols
    layers: list[DlibLayer] = field(default_factory=list)
    wrapper_versions: list[int] = field(default_factory=list)

    @property
    def num_params(self) -> int:
        return int(sum(layer.params.size for layer in self.layers))


class _Stream:
    """Cursor over the file's bytes; every read checks bounds and raises LanetError naming the file."""

    def __init__(self, data: bytes, path: Path):
        self.data = data
        self.pos = 0
        self.path = path

    def fail(self, what: str) -> LanetError:
        return LanetError(f"{self.path}: {what} (at byte {self.pos} of {len(self.data)})")

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail(f"truncated dlib network file: {what} needs {n} more bytes")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def integer(self, what: str = "integer") -> int:
        ctrl = self.take(1, what)[0]
        size = ctrl & 0x0F
        if not 1 <= size <= 8 or ctrl & 0x70:
            self.pos -= 1
            raise self.fail(f"not a dlib network file: byte 0x{ctrl:02x} cannot start an integer ({what})")
        value = int.from_bytes(self.take(size, what), "little")
        return -value if ctrl & 0x80 else value

    def count(self, what: str, limit: int = 1 << 31) -> int:
        """A non-negative integer no larger than ``limit`` (sizes, strides, paddings)."""
        value = self.integer(what)
        if not 0 <= value <= limit:
            raise self.fail(f"not a dlib network file: {what} = {value}")
        return value

    def string(self, what: str = "tag", limit: int = _MAX_TAG) -> str:
        n = self.count(f"length of {what}", limit)
        raw = self.take(n, what)
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            text = ""
        if not text.isprintable() or len(text) != n:
            raise self.fail(f"not a dlib network file: {what} is not text")
        return text

    def boolean(self, what: str = "flag") -> bool:
        b = self.take(1, what)
        if b not in (b"0", b"1"):
            self.pos -= 1
            raise self.fail(f"not a dlib network file: {what} byte {b!r} is not '0' or '1'")
        return b == b"1"

    def real(self, what: str = "real") -> float:
        mantissa, exponent = self.integer(what), self.integer(what)
        if exponent in (32000, 32001, 32002):  # dlib's codes for +inf, -inf, NaN
            return (math.inf, -math.inf, math.nan)[exponent - 32000]
        return math.ldexp(mantissa, exponent)

    def tensor(self, what: str) -> tuple[tuple[int, int, int, int], np.ndarray]:
        version = self.integer(f"{what} version")
        if version != 2:
            raise self.fail(f"unsupported tensor version {version} in {what}")
        shape = tuple(self.count(f"{what} size") for _ in range(4))
        n = math.prod(shape)
        raw = self.take(4 * n, f"{what} data ({n} floats)")
        return shape, np.frombuffer(raw, dtype="<f4").astype(np.float32)  # type: ignore[return-value]

    def alias(self, what: str) -> tuple[int, int, int, int]:
        version = self.integer(f"{what} version")
        if version != 1:
            raise self.fail(f"unsupported alias tensor version {version} in {what}")
        return tuple(self.count(f"{what} size") for _ in range(4))  # type: ignore[return-value]


def _read_layer(s: _Stream, tag: str, index: int) -> DlibLayer:
    """The fields of the layer whose tag was just read."""
    where = f"layer {index} ({tag})"
    f: dict[str, Any] = {}
    shape: tuple[int, int, int, int] = (0, 0, 0, 0)
    params = np.zeros(0, dtype=np.float32)
    if tag == "con_4":
        shape, params = s.tensor(f"{where} params")
        for key in ("num_filters", "rows", "cols", "stride_y", "stride_x", "padding_y", "padding_x"):
            f[key] = s.count(f"{where} {key}")
        f["filters_alias"], f["biases_alias"] = s.alias(f"{where} filters"), s.alias(f"{where} biases")
        f["multipliers"] = tuple(s.real(f"{where} multiplier") for _ in range(4))
    elif tag == "affine_":
        shape, params = s.tensor(f"{where} params")
        f["gamma_alias"], f["beta_alias"] = s.alias(f"{where} gamma"), s.alias(f"{where} beta")
        f["mode"] = s.count(f"{where} mode", 1)
    elif tag in ("relu_", "add_prev_"):
        pass
    elif tag in ("max_pool_2", "avg_pool_2"):
        for key in ("rows", "cols", "stride_y", "stride_x", "padding_y", "padding_x"):
            f[key] = s.count(f"{where} {key}")
    elif tag == "fc_2":
        f["num_outputs"], f["num_inputs"] = s.count(f"{where} outputs"), s.count(f"{where} inputs")
        shape, params = s.tensor(f"{where} params")
        f["weights_alias"], f["biases_alias"] = s.alias(f"{where} weights"), s.alias(f"{where} biases")
        f["bias_mode"] = s.count(f"{where} bias mode", 1)
        f["multipliers"] = tuple(s.real(f"{where} multiplier") for _ in range(4))
    else:
        raise s.fail(f"unknown dlib layer {tag!r} as {where}; this reader knows {', '.join(KNOWN_LAYERS)}")
    return DlibLayer(tag, f, params, shape)


def _check_layer(s: _Stream, layer: DlibLayer, index: int) -> None:
    """Parameter counts must agree with the hyper-parameters (catches misparsed or corrupt files)."""
    f, n = layer.fields, layer.params.size
    if layer.tag == "con_4":
        o, r, c = f["num_filters"], f["rows"], f["cols"]
        if o < 1 or r < 1 or c < 1 or f["stride_y"] < 1 or f["stride_x"] < 1 or (n - o) % (o * r * c) or n <= o:
            raise s.fail(f"corrupt dlib network file: layer {index} (con_4) holds {n} parameters for {o} "
                         f"{r}x{c} filters")
    elif layer.tag == "affine_":
        if n % 2 or n == 0 or f["mode"] != 0:
            raise s.fail(f"corrupt or unsupported dlib network file: layer {index} (affine_) holds {n} parameters "
                         f"in mode {f['mode']} (only per-channel mode 0 is supported)")
    elif layer.tag == "fc_2":
        rows = f["num_inputs"] + (0 if f["bias_mode"] == 1 else 1)
        if n != rows * f["num_outputs"]:
            raise s.fail(f"corrupt dlib network file: layer {index} (fc_2) holds {n} parameters for "
                         f"{f['num_inputs']} -> {f['num_outputs']}")


def read_dlib_net(path: str | Path) -> DlibNet:
    """Parse a dlib network file; raises LanetError on a foreign, truncated or unsupported file."""
    path = Path(path)
    if not path.is_file():
        raise LanetError(f"dlib network file not found: {path}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LanetError(f"cannot read dlib network file {path}: {exc.strerror or exc}") from exc
    s = _Stream(data, path)
    if s.integer("loss layer version") != 1:
        s.pos = 0
        raise s.fail("not a dlib network file: it does not start with a loss layer")
    loss = s.string("loss layer tag")
    if not loss.startswith("loss_"):
        raise s.fail(f"not a dlib network file: {loss!r} is not a loss layer")
    if loss not in KNOWN_LOSSES:
        raise s.fail(f"unknown dlib loss layer {loss!r}; this reader knows {', '.join(KNOWN_LOSSES)}")
    loss_fields = {"margin": s.real("loss margin"), "distance_threshold": s.real("loss threshold")}

    versions: list[int] = []  # layer wrappers (add_layer, tags, skips), outermost first, until the input tag
    while True:
        start = s.pos
        value = s.integer("layer wrapper version")
        if value >= 5 and s.data[s.pos:s.pos + 5] == b"input":
            s.pos = start
            break
        if not 1 <= value <= 4:
            raise s.fail(f"not a dlib network file: layer wrapper version {value}")
        versions.append(value)
        if len(versions) > _MAX_WRAPPERS:
            raise s.fail("not a dlib network file: no input layer")
    inp = s.string("input layer tag")
    if inp not in KNOWN_INPUTS:
        raise s.fail(f"unknown dlib input layer {inp!r}; this reader knows {', '.join(KNOWN_INPUTS)}")
    mean = (s.real("input mean"), s.real("input mean"), s.real("input mean"))
    size = (s.count("input rows"), s.count("input cols"))

    layers: list[DlibLayer] = []
    while s.pos < len(data):
        tag = s.string("layer tag")
        layer = _read_layer(s, tag, len(layers))
        _check_layer(s, layer, len(layers))
        for k in range(3):
            s.boolean(f"layer {len(layers)} flag {k}")
        for k in range(3):
            shape, _ = s.tensor(f"layer {len(layers)} buffer {k}")
            if math.prod(shape):
                raise s.fail(f"unexpected data in layer {len(layers)} ({tag}) gradient buffer")
        if not layers:
            s.count("sample expansion factor")  # written by the layer over the input layer only
        layers.append(layer)
    if not layers:
        raise s.fail("truncated dlib network file: no layers after the input layer")
    assert s.pos == len(data), "the parser must consume the file exactly"
    return DlibNet(path=path, loss=loss, loss_fields=loss_fields, input=inp, input_mean_rgb=mean,
                   input_size=size, layers=layers, wrapper_versions=versions)
