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

What a payload holds is :class:`Checkpoint`, the one schema every writer and reader goes
through (training writes it; resume, synthesis, export, warm start and the server read it).
``format`` is its version: a reader accepts every version up to :data:`FORMAT` and fills the
fields older files lack with their defaults.

Next to each file, :meth:`Checkpoint.write` puts a summary sidecar, ``NAME.pt.json`` (step, r,
language, verdict...: :class:`Summary`), so that a listing of many checkpoints (``tacotrain
serve``) reads small JSON files instead of loading, let alone unpickling, every checkpoint. The
sidecar is written after the checkpoint and carries its size and payload digest;
:func:`read_summary` ignores one that does not match the file beside it (a write cut between
the two, a file replaced by an older tacotrain). Checkpoints without a sidecar (older ones)
load as before.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tacotrain.config import ModelConfig
from tacotrain.fsutil import atomic_write, atomic_write_json
from tacotrain.model.reduction import r_at

MAGIC = b"TCTRN01\n"
FORMAT = 1  # the payload layout this code writes (Checkpoint); it reads 1..FORMAT
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


def save_checkpoint(path: str | Path, payload: dict[str, Any],
                    summary: Summary | None = None) -> None:
    """Write ``payload`` atomically in the checkpoint format, then ``summary`` (if given) as its
    sidecar (:func:`sidecar_path`); without one, a sidecar left from an earlier file goes.
    TypeError if ``payload`` holds a value that would not load without ``--trust-checkpoint``
    (see :func:`check_plain`)."""
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
    side = sidecar_path(path)
    if summary is None:
        side.unlink(missing_ok=True)
        return
    record = {**asdict(summary), "sha256": digest.decode(),
              "size": len(MAGIC) + len(digest) + len(data)}
    atomic_write_json(side, record)


def sidecar_path(path: str | Path) -> Path:
    """Where the summary of checkpoint ``path`` is kept: ``NAME.pt.json`` beside it."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def remove_checkpoint(path: str | Path) -> None:
    """Delete a checkpoint and then its sidecar (a missing one is no error)."""
    Path(path).unlink(missing_ok=True)
    sidecar_path(path).unlink(missing_ok=True)


@dataclass(frozen=True)
class Summary:
    """What a listing shows about a checkpoint, kept in its JSON sidecar."""

    step: int
    r: int | None
    elapsed: float  # training seconds up to this state
    language: str
    phonemes: bool
    aligned: bool | None  # the stored free-running verdict (None: no validation round)
    verdict: str  # its description
    format: int = FORMAT  # the checkpoint's payload format


def read_summary(path: str | Path) -> Summary | None:
    """The sidecar summary of checkpoint ``path``, or None when there is none or it does not
    describe the file beside it (its size and digest differ: a stale sidecar). Reads the
    sidecar and the checkpoint's 72-byte header; never the payload."""
    path = Path(path)
    try:
        record = json.loads(sidecar_path(path).read_text(encoding="utf-8"))
        with open(path, "rb") as fh:
            header = fh.read(len(MAGIC) + 64)
            size = os.fstat(fh.fileno()).st_size
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or header[:len(MAGIC)] != MAGIC:
        return None
    if record.get("size") != size or record.get("sha256") != header[len(MAGIC):].decode(
            "ascii", "replace"):
        return None
    try:
        return Summary(**{f.name: record[f.name] for f in fields(Summary) if f.name in record})
    except TypeError:  # a field missing: written by something else
        return None


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
    """Delete all but the newest ``keep_last`` step checkpoints (``best.pt`` is separate), each
    with its sidecar."""
    for _, p in step_checkpoints(directory)[:-keep_last]:
        remove_checkpoint(p)


@dataclass
class CheckpointData:
    """The prepared data a checkpoint was trained on: what synthesis needs to feed it."""

    language: str
    symbols: list[str]
    audio: dict[str, Any]  # AudioConfig as JSON
    phonemes: bool = False  # the model reads espeak-ng IPA (False: letters, as older files)
    root: str = ""

    @classmethod
    def of(cls, prepared: Any) -> CheckpointData:
        """From a data.loader.PreparedData."""
        return cls(language=prepared.language, symbols=prepared.symbols,
                   audio=prepared.settings.audio.model_dump(mode="json"),
                   phonemes=prepared.phonemes, root=str(prepared.root))


@dataclass
class Checkpoint:
    """One training state, as every checkpoint file holds it.

    ``model``, ``config`` and ``data`` rebuild the model for inference; the rest makes
    ``--resume`` exact (positions, optimiser, scaler, RNG states, guard and early-stop state).
    ``val`` and ``verdict`` are the validation round the file was written after (empty for a
    snapshot). ``r`` is the reduction factor of ``step`` (None in files older than
    ``model.r_schedule``: :meth:`reduction` derives it)."""

    step: int
    model: dict[str, torch.Tensor]
    config: dict[str, Any]  # Config as JSON (Config.from_saved reads it)
    data: CheckpointData
    r: int | None = None
    iteration: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # global batches (all ranks) of the epoch consumed
    world_size: int = 1
    lr_scale: float = 1.0
    overrides: dict[str, float | None] = field(default_factory=dict)
    guard: dict[str, Any] = field(default_factory=dict)
    early_stop: dict[str, Any] = field(default_factory=dict)
    elapsed: float = 0.0  # training wall seconds up to this state, over every session
    optimizer: dict[str, Any] = field(default_factory=dict)
    scaler: dict[str, Any] = field(default_factory=dict)
    schedule: dict[str, float] = field(default_factory=dict)
    rng: dict[str, Any] = field(default_factory=dict)
    rng_ranks: list[dict[str, Any]] | None = None  # every rank's RNG states (DDP)
    val: dict[str, float] = field(default_factory=dict)
    verdict: dict[str, Any] = field(default_factory=dict)
    format: int = FORMAT

    def to_payload(self) -> dict[str, Any]:
        """The plain dict the file stores (``rng_ranks`` only where there is one)."""
        out = {"format": self.format, "step": self.step, "iteration": self.iteration,
               "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
               "world_size": self.world_size, "lr_scale": self.lr_scale,
               "overrides": self.overrides, "guard": self.guard,
               "early_stop": self.early_stop, "elapsed": self.elapsed, "model": self.model,
               "optimizer": self.optimizer, "scaler": self.scaler, "schedule": self.schedule,
               "r": self.r, "rng": self.rng, "config": self.config,
               "data": _data_payload(self.data), "val": self.val, "verdict": self.verdict}
        if self.rng_ranks is not None:
            out["rng_ranks"] = self.rng_ranks
        return out

    @classmethod
    def from_payload(cls, payload: dict[str, Any], source: str | Path = "checkpoint"
                     ) -> Checkpoint:
        """Read a payload of any format up to :data:`FORMAT`; CheckpointError naming
        ``source`` for a newer format or a missing required field."""
        version = payload.get("format", 1)
        if not isinstance(version, int) or version > FORMAT:
            raise CheckpointError(f"{source}: checkpoint format {version!r} is newer than this "
                                  f"version of tacotrain reads ({FORMAT}); upgrade tacotrain")
        missing = [k for k in ("step", "model", "config", "data") if k not in payload]
        data = payload.get("data") or {}
        missing += [f"data.{k}" for k in ("language", "symbols", "audio") if k not in data]
        if missing:
            raise CheckpointError(f"{source}: not a training checkpoint (missing "
                                  f"{', '.join(missing)})")
        known = {f.name for f in fields(cls)} - {"data"}
        values = {k: v for k, v in payload.items() if k in known}
        return cls(**values, data=CheckpointData(
            language=data["language"], symbols=list(data["symbols"]), audio=data["audio"],
            phonemes=bool(data.get("phonemes", False)), root=str(data.get("root", ""))))

    @classmethod
    def read(cls, path: str | Path, map_location: str | torch.device = "cpu",
             trust: bool = False) -> Checkpoint:
        """Load, verify (see :func:`load_checkpoint`) and type a checkpoint file."""
        return cls.from_payload(load_checkpoint(path, map_location, trust), path)

    def write(self, path: str | Path) -> None:
        """The file, then its summary sidecar (see the module docstring)."""
        save_checkpoint(path, self.to_payload(), self.summary())

    def summary(self) -> Summary:
        return Summary(step=self.step, r=self.r, elapsed=round(float(self.elapsed), 1),
                       language=self.data.language, phonemes=self.data.phonemes,
                       aligned=self.verdict.get("aligned"),
                       verdict=self.verdict.get("description", "no free-running validation"),
                       format=self.format)

    def cpu_copy(self) -> Checkpoint:
        """A copy whose tensors are CPU copies, independent of the live training state."""
        return replace(self, **{f.name: cpu_copy(getattr(self, f.name)) for f in fields(self)
                                if f.name != "data"})

    def reduction(self, model_cfg: ModelConfig) -> int:
        """The reduction factor the model was validated with: ``r``, or for files older than
        ``model.r_schedule`` the schedule's r at ``step``."""
        return self.r or r_at(self.step, model_cfg)


def _data_payload(data: CheckpointData) -> dict[str, Any]:
    return {"language": data.language, "symbols": data.symbols, "phonemes": data.phonemes,
            "audio": data.audio, "root": data.root}


def cpu_copy(obj: Any) -> Any:
    """A deep copy of a state (nested dicts, lists, tuples) with every tensor copied to the
    CPU: independent of the live training state it was taken from."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        out = type(obj)((k, cpu_copy(v)) for k, v in obj.items())
        if hasattr(obj, "_metadata"):  # a module state dict's per-module versions
            out._metadata = cpu_copy(obj._metadata)
        return out
    if isinstance(obj, list | tuple):
        return type(obj)(cpu_copy(v) for v in obj)
    return obj
