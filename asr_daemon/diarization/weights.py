"""The voice encoder's weights: fetched from resemblyzer's wheel on PyPI, read without torch, kept as .npz.

resemblyzer ships its GE2E voice encoder (Wan et al. 2018, trained by Corentin Jemine) inside its wheel as
`resemblyzer/pretrained.pt`, saved by an old torch in the legacy (pre-zip) serialisation: a few pickles
in a row, the state dict's tensors pointing at storages whose raw bytes follow. `read_legacy_pt` reads
that with a restricted unpickler (only OrderedDict, the tensor rebuild and the storage types resolve:
nothing in the file can run code) and numpy, so the daemon needs no torch.

`install(dest)` is the one loading path: the wheel (from PyPI with its pinned sha256, or a local wheel
or .pt an operator hands over) → `encoder.npz` in `dest`, written atomically. The test suite runs the
same function into var/test-cache.
"""

from __future__ import annotations

import collections
import hashlib
import io
import os
import pickle
import struct
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

#: the wheel the weights come from, pinned by content
WHEEL_NAME = "Resemblyzer-0.1.4-py3-none-any.whl"
WHEEL_SHA256 = "8f12eb2f1a9982d32e8db7856de754709b59c93a77bcf0ff536584b619a9dd1f"
#: PyPI's simple index for the package (PEP 691 JSON), where the wheel's download URL is found
INDEX_URL = "https://pypi.org/simple/resemblyzer/"
MEMBER = "resemblyzer/pretrained.pt"
NPZ_NAME = "encoder.npz"
#: the weights the encoder needs (the checkpoint also holds the optimiser's state, dropped here)
KEYS = (
    *(f"lstm.{kind}_l{layer}" for layer in range(3) for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")),
    "linear.weight",
    "linear.bias",
)
_DTYPES: dict[str, type[np.generic]] = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
}
_MAX_STORAGE_BYTES = 256 << 20


class WeightsError(ValueError):
    """The file given is not the voice encoder's weights (or not readable as such)."""


@dataclass
class _Storage:
    dtype: type[np.generic]
    data: np.ndarray | None = None


@dataclass
class _Tensor:
    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    def array(self) -> np.ndarray:
        data = self.storage.data
        if data is None:
            raise WeightsError("a tensor points at a storage the file does not hold")
        item = data.itemsize
        need = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride, strict=True)) + 1
        if any(n <= 0 for n in self.size) or need > data.size:
            raise WeightsError("a tensor reaches past its storage")
        view = np.lib.stride_tricks.as_strided(
            data[self.offset :], shape=self.size, strides=tuple(s * item for s in self.stride), writeable=False
        )
        return np.array(view, dtype=np.float32)


def _rebuild(storage: _Storage, offset: int, size: Any, stride: Any, *_rest: Any) -> _Tensor:
    return _Tensor(storage, int(offset), tuple(int(n) for n in size), tuple(int(s) for s in stride))


class _Unpickler(pickle.Unpickler):
    """Resolves only what a legacy torch state dict needs; anything else is refused."""

    def __init__(self, f: BinaryIO) -> None:
        super().__init__(f)
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild
        if module == "torch" and name in _DTYPES:
            return name
        raise WeightsError(f"the checkpoint refers to {module}.{name}, which a weights file has no need of")

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and pid[1] in _DTYPES):
            raise WeightsError("the checkpoint holds an unknown persistent object")
        key = str(pid[2])
        return self.storages.setdefault(key, _Storage(_DTYPES[pid[1]]))


def read_legacy_pt(f: BinaryIO) -> dict[str, np.ndarray]:
    """The state dict (`model_state`) of a legacy-format torch checkpoint, as float32 arrays."""
    try:
        # every pickle goes through the restricted unpickler, the header's too (magic number, protocol
        # version, system info) and the storage key list that follows the state dict
        for _ in range(3):
            _Unpickler(f).load()
        unpickler = _Unpickler(f)
        obj = unpickler.load()
        keys = _Unpickler(f).load()
        if not isinstance(keys, list):
            raise WeightsError("the checkpoint's storage list is missing")
        for key in keys:
            storage = unpickler.storages[str(key)]
            (count,) = struct.unpack("<q", f.read(8))
            nbytes = count * np.dtype(storage.dtype).itemsize
            if not 0 <= nbytes <= _MAX_STORAGE_BYTES:
                raise WeightsError("a storage has an implausible size")
            raw = f.read(nbytes)
            if len(raw) != nbytes:
                raise WeightsError("the checkpoint is truncated")
            storage.data = np.frombuffer(raw, dtype=storage.dtype)
    except (pickle.UnpicklingError, EOFError, KeyError, struct.error, TypeError, AttributeError) as exc:
        raise WeightsError(f"not a readable torch checkpoint ({type(exc).__name__})") from None
    state = obj.get("model_state") if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        raise WeightsError("the checkpoint has no model_state")
    return {str(k): v.array() for k, v in state.items() if isinstance(v, _Tensor)}


def check(state: dict[str, np.ndarray]) -> None:
    """Raise `WeightsError` unless `state` has the encoder's tensors with the encoder's shapes."""
    shapes = {"linear.weight": (256, 256), "linear.bias": (256,)}
    for layer in range(3):
        shapes[f"lstm.weight_ih_l{layer}"] = (1024, 40 if layer == 0 else 256)
        shapes[f"lstm.weight_hh_l{layer}"] = (1024, 256)
        shapes[f"lstm.bias_ih_l{layer}"] = (1024,)
        shapes[f"lstm.bias_hh_l{layer}"] = (1024,)
    for key, shape in shapes.items():
        if key not in state or state[key].shape != shape:
            raise WeightsError(f"the weights lack {key} of shape {shape}")
        if not np.isfinite(state[key]).all():
            raise WeightsError(f"{key} holds non-finite values")


def from_wheel(wheel: Path) -> dict[str, np.ndarray]:
    """The encoder's weights read from resemblyzer's wheel file."""
    try:
        with zipfile.ZipFile(wheel) as z, z.open(MEMBER) as f:
            return read_legacy_pt(io.BytesIO(f.read()))
    except (zipfile.BadZipFile, KeyError) as exc:
        raise WeightsError(f"{wheel.name} is not resemblyzer's wheel ({type(exc).__name__})") from None


def from_file(path: Path) -> dict[str, np.ndarray]:
    """Weights from a wheel, a pretrained.pt or an encoder.npz an operator hands over."""
    if zipfile.is_zipfile(path) and path.suffix != ".npz":
        return from_wheel(path)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            return {k: np.asarray(z[k], dtype=np.float32) for k in z.files}
    with path.open("rb") as f:
        return read_legacy_pt(f)


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file's content."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save(state: dict[str, np.ndarray], dest: Path) -> Path:
    """Write the checked weights as `dest/encoder.npz`, atomically; returns the file."""
    check(state)
    dest.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest, prefix=".encoder-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, allow_pickle=False, **{k: state[k] for k in KEYS})
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest / NPZ_NAME)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest / NPZ_NAME


def load(dest: Path) -> dict[str, np.ndarray]:
    """The installed weights in `dest`, checked; `FileNotFoundError` when not installed."""
    state = from_file(dest / NPZ_NAME)
    check(state)
    return state
