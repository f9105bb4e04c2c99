"""The device a model runs on, chosen at run time."""

from __future__ import annotations

import torch


class DeviceError(RuntimeError):
    """The requested device is not available."""


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when available, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``; a CUDA
    device where CUDA is not available raises :class:`DeviceError`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device {name!r} requested but CUDA is not available; use auto or "
                          "cpu")
    return dev


__all__ = ["DeviceError", "resolve_device"]
