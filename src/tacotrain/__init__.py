"""tacotrain: train Tacotron 2 voices and keep the training honest."""

__version__ = "0.1.0"
