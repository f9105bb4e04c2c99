"""Audio: load/resample/trim/save, the log-mel spectrogram, and vocoders (mel -> waveform:
Griffin-Lim, HiFi-GAN)."""

from tacotrain.audio.hifigan import HifiGan, HifiGanConfig, HifiGanError
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
from tacotrain.audio.vocoder import GriffinLim, Vocoder, VocoderError, load_vocoder, read_mel

__all__ = [
    "AudioReadError",
    "GriffinLim",
    "HifiGan",
    "HifiGanConfig",
    "HifiGanError",
    "LoadedAudio",
    "MelSpectrogram",
    "Vocoder",
    "VocoderError",
    "frame_rms",
    "load_audio",
    "load_vocoder",
    "mel_filterbank",
    "mel_spectrogram",
    "peak_dbfs",
    "read_mel",
    "save_wav",
    "trim_silence",
]
