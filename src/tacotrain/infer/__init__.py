"""Inference: reading checkpoints, choosing the device, loading pretrained weights and
synthesising speech.

It imports nothing from training; training imports it (the checkpoint format lives here, so
the one module that writes checkpoints is the one that reads them).
"""
