"""Checkpoints: atomic, checksummed, self-describing (full config and data settings inside).

File layout: an 8-byte magic, the 64-byte hex SHA-256 of the payload, then the payload (a
``torch.save`` of a dict). A file cut short or altered fails the checksum with a clear error
instead of loading garbage. Writes go to a temp file that replaces the target only when
complete, so a write killed half-way leaves the previous checkpoint intact.
"""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path
from typing import Any

import torch

from tacotrain.fsutil import atomic_write

MAGIC = b"TCTRN01\n"
_STEP = re.compile(r"^step-(\d+)\.pt$")


class CheckpointError(RuntimeError):
    pass


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getvalue()
    digest = hashlib.sha256(data).hexdigest().encode()

    def write(fh) -> None:
        fh.write(MAGIC)
        fh.write(digest)
        fh.write(data)

    atomic_write(path, write)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint not found: {path}") from None
    if not raw.startswith(MAGIC):
        raise CheckpointError(f"{path} is not a tacotrain checkpoint (bad header)")
    digest, data = raw[len(MAGIC): len(MAGIC) + 64], raw[len(MAGIC) + 64:]
    if hashlib.sha256(data).hexdigest().encode() != digest:
        raise CheckpointError(f"{path}: checksum mismatch (file truncated or corrupted)")
    return torch.load(io.BytesIO(data), map_location=map_location, weights_only=False)


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
