"""Audio: load/resample/trim/save, the log-mel spectrogram, and vocoders (mel -> waveform)."""

from tacotrain.audio.io import (
    AudioReadError,
    LoadedAudio,
    frame_rms,
    load_audio,
    peak_dbfs,
    save_wav,
    trim_silence,
)
from tacotrain.audio.mel import MelSpectrogram, mel_filterbank, mel_spectrogram
from tacotrain.audio.vocoder import GriffinLim, Vocoder, load_vocoder

__all__ = [
    "AudioReadError",
    "GriffinLim",
    "LoadedAudio",
    "MelSpectrogram",
    "Vocoder",
    "frame_rms",
    "load_audio",
    "load_vocoder",
    "mel_filterbank",
    "mel_spectrogram",
    "peak_dbfs",
    "save_wav",
    "trim_silence",
]
