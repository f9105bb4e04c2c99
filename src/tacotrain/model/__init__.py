"""Tacotron 2 model, its attention mechanisms, the training batch and the losses."""

from tacotrain.batch import Batch, make_gate_targets

from .attention import (
    AttentionMechanism,
    AttentionState,
    LocationLayer,
    LocationSensitiveAttention,
    ProcessedMemory,
    masked_softmax,
)
from .layers import ConvNorm, LinearNorm, frame_mask
from .losses import (
    Tacotron2Loss,
    attention_entropy,
    gate_loss,
    guided_attention_loss,
    guided_attention_weights,
    masked_mel_loss,
)
from .tacotron2 import (
    Decoder,
    DecoderState,
    DecoderStep,
    Encoder,
    InferenceOutput,
    Postnet,
    Prenet,
    Tacotron2,
    Tacotron2Output,
)

__all__ = [
    "attention_entropy",
    "AttentionMechanism",
    "AttentionState",
    "Batch",
    "ConvNorm",
    "Decoder",
    "DecoderState",
    "DecoderStep",
    "Encoder",
    "InferenceOutput",
    "LinearNorm",
    "LocationLayer",
    "LocationSensitiveAttention",
    "Postnet",
    "Prenet",
    "ProcessedMemory",
    "Tacotron2",
    "Tacotron2Loss",
    "Tacotron2Output",
    "frame_mask",
    "gate_loss",
    "guided_attention_loss",
    "guided_attention_weights",
    "make_gate_targets",
    "masked_mel_loss",
    "masked_softmax",
]
