"""Checkpoints: atomic, checksummed, self-describing (full config and data settings inside).

File layout: an 8-byte magic, the 64-byte hex SHA-256 of the payload, then the payload (a
``torch.save`` of a dict). A file cut short or altered fails the checksum with a clear error
instead of loading garbage. Writes go to a temp file that replaces the target only when
complete, so a write killed half-way leaves the previous checkpoint intact.

Unpickling can run code, so a checkpoint is loaded with ``torch.load(weights_only=True)``: only
tensors and plain Python values (dict, list, tuple, str, numbers, None) come back. The payload
therefore holds nothing else (``save_checkpoint`` refuses other values), and state that is not
naturally a tensor is stored as one: the numpy RNG state's key array is an int64 tensor
(:func:`numpy_rng_to_saved`). Checkpoints written before that held the numpy array itself;
they still load, because numpy's numeric-array reconstruction (and nothing else of numpy) is
allowed. Anything else that needs unpickling is refused unless the user passes
``--trust-checkpoint`` (``trust=True``).
"""

from __future__ import annotations

import hashlib
import io
import pickle
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tacotrain.fsutil import atomic_write

MAGIC = b"TCTRN01\n"
_STEP = re.compile(r"^step-(\d+)\.pt$")


class CheckpointError(RuntimeError):
    pass


TRUST_HINT = "pass --trust-checkpoint only if you trust its source"

# what a payload may hold: each loads under weights_only=True without any allow-listing
_PLAIN_LEAVES = (str, bytes, int, float, bool, type(None), torch.dtype, torch.device)
_PLAIN_CONTAINERS = (dict, OrderedDict, list, tuple, torch.Size)


def check_plain(obj: Any, where: str = "payload") -> None:
    """Raise TypeError naming the first value of ``obj`` that would need unpickling beyond
    tensors and plain Python values (a numpy array or scalar, a custom class, a deque...).

    Types are matched exactly: ``numpy.float64`` and ``IntEnum`` subclass float and int but
    pickle as their own classes, which ``weights_only`` loading refuses."""
    if isinstance(obj, torch.Tensor):
        if type(obj) not in (torch.Tensor, torch.nn.Parameter):
            raise TypeError(f"checkpoint {where} is a {type(obj).__qualname__} (a tensor "
                            "subclass); store a plain tensor")
        return
    kind = type(obj)
    if kind in _PLAIN_LEAVES:
        return
    if kind not in _PLAIN_CONTAINERS:
        raise TypeError(f"checkpoint {where} is a {kind.__module__}.{kind.__qualname__}: a "
                        "checkpoint holds only tensors and plain Python values, so that it "
                        "loads without --trust-checkpoint; convert it (torch.as_tensor, int, "
                        "float, list) before saving")
    if isinstance(obj, dict):
        for k, v in obj.items():
            check_plain(k, f"{where} key {k!r}")
            check_plain(v, f"{where}.{k}")
    else:
        for i, v in enumerate(obj):
            check_plain(v, f"{where}[{i}]")


def numpy_rng_to_saved(state: tuple) -> dict[str, Any]:
    """``np.random.get_state()`` (bit generator name, uint32 key array [624], position,
    has_gauss, cached gaussian) as plain values and an int64 tensor [624], which load without
    unpickling numpy; :func:`numpy_rng_from_saved` gives back the identical state."""
    name, keys, pos, has_gauss, cached = state
    return {"bit_generator": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64).copy()),
            "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}


def numpy_rng_from_saved(saved: dict[str, Any] | tuple) -> tuple:
    """The ``np.random.set_state`` tuple from :func:`numpy_rng_to_saved`'s dict, or from the
    tuple itself as checkpoints written before stored it."""
    if not isinstance(saved, dict):
        return tuple(saved)
    keys = saved["keys"].detach().cpu().numpy().astype(np.uint32)
    return (saved["bit_generator"], keys, saved["pos"], saved["has_gauss"],
            saved["cached_gaussian"])


def _numpy_array_globals() -> list[Any]:
    """What unpickling a numeric numpy array needs, for checkpoints that stored the numpy RNG
    state as an array: the reconstruction function (under its numpy 2 and numpy 1 module
    names), ``ndarray``, ``dtype`` and the dtype classes of numbers. Object arrays stay
    refused (their dtype class is not listed)."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct
    numeric = (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32,
               np.uint64, np.float16, np.float32, np.float64)
    return [(_reconstruct, "numpy._core.multiarray._reconstruct"),
            (_reconstruct, "numpy.core.multiarray._reconstruct"), np.ndarray, np.dtype,
            *{type(np.dtype(t)) for t in numeric}]


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` atomically in the checkpoint format. TypeError if it holds a value that
    would not load without ``--trust-checkpoint`` (see :func:`check_plain`)."""
    check_plain(payload)
    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getvalue()
    digest = hashlib.sha256(data).hexdigest().encode()

    def write(fh) -> None:
        fh.write(MAGIC)
        fh.write(digest)
        fh.write(data)

    atomic_write(path, write)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu",
                    trust: bool = False) -> dict[str, Any]:
    """Read and verify a tacotrain checkpoint. ``trust``: allow arbitrary unpickling (the
    user's ``--trust-checkpoint``); otherwise only tensors and plain containers load (and the
    numpy arrays of older checkpoints), and a payload needing more is refused.

    Every failure (missing, bad header, checksum, refused or unreadable payload) is a
    :class:`CheckpointError` whose message starts with the path."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint not found") from None
    if not raw.startswith(MAGIC):
        raise CheckpointError(f"{path} is not a tacotrain checkpoint (bad header)")
    digest, data = raw[len(MAGIC): len(MAGIC) + 64], raw[len(MAGIC) + 64:]
    if hashlib.sha256(data).hexdigest().encode() != digest:
        raise CheckpointError(f"{path}: checksum mismatch (file truncated or corrupted)")
    if trust:
        try:
            return torch.load(io.BytesIO(data), map_location=map_location, weights_only=False)
        except Exception as exc:
            raise CheckpointError(f"{path}: unreadable payload ({type(exc).__name__}: "
                                  f"{exc})") from None
    allowed = _numpy_array_globals()
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = _refusal(data, allowed, exc)
    except Exception as exc:
        raise CheckpointError(f"{path}: unreadable payload ({type(exc).__name__}: "
                              f"{exc})") from None
    raise CheckpointError(f"{path} contains pickled Python objects ({refused}) besides tensors "
                          f"and plain values, and loading it can run code: {TRUST_HINT}")


def _refusal(data: bytes, allowed: list[Any], exc: Exception) -> str:
    """What ``weights_only`` loading refused, in a few words: the classes and functions the
    payload names (``module.name``), else the unpickler's own reason."""
    try:
        with torch.serialization.safe_globals(allowed):
            names = torch.serialization.get_unsafe_globals_in_checkpoint(io.BytesIO(data))
    except Exception:
        names = []
    if names:
        return ", ".join(sorted(names)[:5]) + (" ..." if len(names) > 5 else "")
    m = re.search(r"WeightsUnpickler error: (.+)", str(exc))
    return m.group(1).strip() if m else "objects weights-only loading cannot build"


def state_hash(state: dict[str, Any]) -> str:
    """SHA-256 over the tensors of a state dict (names, shapes and bytes), for audit logs."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name]
        if isinstance(t, torch.Tensor):
            t = t.detach().cpu().contiguous().reshape(-1)
            h.update(name.encode())
            h.update(str(tuple(t.shape)).encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def step_checkpoints(directory: str | Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of ``step-N.pt`` files, oldest first."""
    out = []
    for p in Path(directory).glob("step-*.pt"):
        m = _STEP.match(p.name)
        if m:
            out.append((int(m.group(1)), p))
    return sorted(out)


def latest_checkpoint(directory: str | Path) -> Path | None:
    found = step_checkpoints(directory)
    return found[-1][1] if found else None


def prune(directory: str | Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` step checkpoints (``best.pt`` is separate)."""
    for _, p in step_checkpoints(directory)[:-keep_last]:
        p.unlink(missing_ok=True)
