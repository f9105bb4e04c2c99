"""Weights from elsewhere: warm start from a checkpoint, and a model export that needs no pickle.

A Tacotron 2 state dict is portable because our tensor names and shapes are those of
NVIDIA/tacotron2 ``model.py`` (``embedding.weight``, ``encoder.convolutions.0.0.conv.weight``,
``decoder.attention_rnn.weight_ih`` ...): only the embedding rows mean something different from
one model to the next, since row i is symbol i of *that model's* symbol table. So every source
of weights is read into one :class:`SourceModel` (tensors + the symbol table they are indexed
by + the settings that rebuild the network), whatever the file looked like:

- an NVIDIA/tacotron2 checkpoint: a plain ``torch.save`` of ``{"state_dict": ..., "optimizer",
  "iteration", "learning_rate"}`` (or of the bare state dict; ``module.`` prefixes from
  DistributedDataParallel are removed). Its embedding is indexed by :data:`NVIDIA_SYMBOLS`, its
  sizes are our ``default`` preset's and its audio features are ours (:data:`NVIDIA_AUDIO`);
- a tacotrain checkpoint (``train/checkpoint.py``): weights, config, symbol table, audio.

Then:

- :func:`plan_warm_start` checks a source against the model a run is about to build (before
  anything is written) and :meth:`WarmStart.apply` copies it in: embedding rows symbol by
  symbol, every other tensor by name when the shapes agree. Only weights travel: the optimiser,
  step, schedules, guard and early stopping of the new run start fresh.
- :func:`export_model` writes ``DIR/model.safetensors`` (tensors, bit-equal to the source's) and
  ``DIR/config.json`` (model sizes, audio, text settings, the symbol table as a list), which
  :func:`load_pretrained` and :func:`build_model` read back with safetensors and json only, so
  a shared model can be loaded without unpickling anything.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import pickle
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import Tensor

from tacotrain.config import (
    AlignmentConfig,
    AudioConfig,
    Config,
    ModelConfig,
    SynthConfig,
    load_config,
    validate_as,
)
from tacotrain.fsutil import atomic_write_bytes, atomic_write_json, file_sha256
from tacotrain.infer.checkpoint import MAGIC, Checkpoint
from tacotrain.model import Tacotron2

log = logging.getLogger(__name__)

_ARPABET = (
    "AA AA0 AA1 AA2 AE AE0 AE1 AE2 AH AH0 AH1 AH2 AO AO0 AO1 AO2 AW AW0 AW1 AW2 AY AY0 AY1 AY2 "
    "B CH D DH EH EH0 EH1 EH2 ER ER0 ER1 ER2 EY EY0 EY1 EY2 F G HH IH IH0 IH1 IH2 IY IY0 IY1 "
    "IY2 JH K L M N NG OW OW0 OW1 OW2 OY OY0 OY1 OY2 P R S SH T TH UH UH0 UH1 UH2 UW UW0 UW1 UW2 "
    "V W Y Z ZH"
).split()

NVIDIA_SYMBOLS: tuple[str, ...] = (
    "_", "-", *"!'(),.:;? ", *string.ascii_uppercase, *string.ascii_lowercase,
    *(f"@{p}" for p in _ARPABET),
)
"""NVIDIA/tacotron2 ``text/symbols.py`` in order (148): pad, "-", punctuation ending with the
space, A-Z, a-z, then the ARPAbet phones prefixed by "@". Row i of its embedding is symbol i."""

NVIDIA_AUDIO: dict[str, float] = {
    "sample_rate": 22050, "n_fft": 1024, "hop_length": 256, "win_length": 1024, "n_mels": 80,
    "fmin": 0.0, "fmax": 8000.0, "log_clamp": 1e-5,
}
"""NVIDIA/tacotron2 ``hparams.py`` audio settings (sampling_rate, filter_length, hop_length,
win_length, n_mel_channels, mel_fmin, mel_fmax) and its log floor (``clip_val`` of
``dynamic_range_compression``), under our AudioConfig names."""

EMBEDDING = "embedding.weight"
FORMAT = "tacotrain-model"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
_DDP_PREFIX = "module."


class PretrainedError(ValueError):
    """A checkpoint or exported model cannot be read, mapped onto a model or written."""


def cleaner_name(language: str) -> str:
    """What ``config.json`` calls the cleaner synthesis applies: ``tacotrain.text.clean_text``
    for the language (NFC, typographic punctuation, numbers spelled out, English abbreviations
    expanded, lower case: for English what NVIDIA's ``english_cleaners`` does)."""
    return f"tacotrain:{language}"


@dataclass(frozen=True)
class SourceModel:
    """Weights read from a checkpoint and what is needed to reuse them."""

    path: Path
    kind: Literal["nvidia", "tacotrain"]
    state: dict[str, Tensor]  # NVIDIA's names (= ours), on the CPU
    symbols: list[str]  # the table the embedding rows are indexed by
    language: str
    phonemes: bool
    audio: AudioConfig
    model: ModelConfig  # the sizes that rebuild the network
    r: int  # reduction factor to synthesise with
    synth: SynthConfig = field(default_factory=SynthConfig)
    alignment: AlignmentConfig = field(default_factory=AlignmentConfig)
    sha256: str = ""  # of the file, recorded with a warm start

    def describe(self) -> str:
        what = "NVIDIA/tacotron2" if self.kind == "nvidia" else "tacotrain"
        kind = "phoneme" if self.phonemes else "letter"
        return (f"{what} checkpoint {self.path} ({self.language} {kind} table, "
                f"{len(self.symbols)} symbols)")



def _strip_ddp(state: dict[str, Any]) -> dict[str, Any]:
    """Remove the ``module.`` prefix DistributedDataParallel puts on every name."""
    if state and all(k.startswith(_DDP_PREFIX) for k in state):
        return {k[len(_DDP_PREFIX):]: v for k, v in state.items()}
    return state


def read_source(path: str | Path, trust: bool = False) -> SourceModel:
    """An NVIDIA/tacotron2 or tacotrain checkpoint as a :class:`SourceModel`.

    ``trust`` (``--trust-checkpoint``) allows arbitrary unpickling; without it only tensors and
    plain containers load, which is all either format needs."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            head = fh.read(len(MAGIC))
    except FileNotFoundError:
        raise PretrainedError(f"checkpoint not found: {path}") from None
    if head == MAGIC:
        return _read_tacotrain(path, trust)
    return _read_nvidia(path, trust)


def _read_tacotrain(path: Path, trust: bool) -> SourceModel:
    ck = Checkpoint.read(path, map_location="cpu", trust=trust)
    cfg = Config.from_saved(ck.config)
    return SourceModel(
        path=path, kind="tacotrain", state=_strip_ddp(dict(ck.model)),
        symbols=list(ck.data.symbols), language=ck.data.language, phonemes=ck.data.phonemes,
        audio=AudioConfig.model_validate(ck.data.audio), model=cfg.model,
        r=ck.reduction(cfg.model), synth=cfg.synth,
        alignment=cfg.alignment, sha256=file_sha256(path))


def _read_nvidia(path: Path, trust: bool) -> SourceModel:
    raw = path.read_bytes()
    garbage = (f"{path} is neither a tacotrain checkpoint nor a torch.save file (an "
               "NVIDIA/tacotron2 checkpoint)")
    if not raw.startswith((b"PK\x03\x04", b"\x80")):  # torch.save: a zip, or a legacy pickle
        raise PretrainedError(garbage)
    try:
        obj = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as exc:
        # torch's message is a page long; its "Unsupported global" line says what was refused
        lines = [ln.strip() for ln in str(exc).splitlines() if "Unsupported global" in ln]
        why = f" ({lines[0].split(' was not')[0]})" if lines else ""
        raise PretrainedError(
            f"{path}: holds Python objects besides tensors{why}; pass --trust-checkpoint to "
            "unpickle it, only if you trust where the file comes from") from None
    except Exception as exc:  # torch raises RuntimeError, EOFError, zip errors ... on garbage
        raise PretrainedError(f"{garbage}: {type(exc).__name__}: {exc}") from None
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise PretrainedError(f"{path}: expected a dict with a 'state_dict' of tensors (an "
                              "NVIDIA/tacotron2 checkpoint) or a tacotrain checkpoint")
    state = _strip_ddp(state)
    return SourceModel(
        path=path, kind="nvidia", state=state, symbols=list(NVIDIA_SYMBOLS), language="en",
        phonemes=False, audio=AudioConfig(), model=load_config("default").model, r=1,
        sha256=hashlib.sha256(raw).hexdigest())


# ---------------------------------------------------------------------------------------------
# warm start


def _matches(key: str, prefixes: Sequence[str]) -> bool:
    """``key`` is ``p`` or lies under ``p`` at a dot boundary (``decoder.prenet`` matches
    ``decoder.prenet.layers.0.linear_layer.weight`` but not ``decoder.prenet2.x``)."""
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def model_shapes(model_cfg: ModelConfig, n_symbols: int, n_mels: int) -> dict[str, torch.Size]:
    """Name -> shape of every tensor of the model these settings build, without building its
    weights (meta device: no memory, no random numbers drawn)."""
    with torch.device("meta"):
        model = Tacotron2(model_cfg, n_symbols, n_mels)
    return {k: v.shape for k, v in model.state_dict().items()}


def _shape(s: Sequence[int]) -> str:
    return "[" + ", ".join(str(d) for d in s) + "]"


@dataclass(frozen=True)
class WarmStart:
    """What a warm start will copy, checked against the run's model (see :func:`plan_warm_start`).

    Holds the source tensors until :meth:`apply`; keep only its returned record afterwards."""

    source: SourceModel
    ignore: tuple[str, ...]
    copy: tuple[str, ...]  # run keys copied whole (the embedding is not among them)
    rows: tuple[tuple[int, int], ...]  # embedding (run row, source row) pairs to copy
    fresh_symbols: tuple[str, ...]  # run symbols whose rows keep their initialisation
    n_symbols: int  # rows of the run's embedding
    ignored: tuple[str, ...]  # run keys left fresh by --ignore-layers
    extra: tuple[str, ...]  # source keys the run's model has no place for

    def describe(self) -> list[str]:
        """The counts, as logged and printed."""
        src = self.source.path
        lines = [f"warm start from {self.source.describe()}: {len(self.copy)} tensors copied"]
        if EMBEDDING in self.ignored:
            lines.append(f"embedding: not copied (--ignore-layers), {self.n_symbols} symbols "
                         "initialised")
        else:
            fresh = len(self.fresh_symbols)
            shown = " ".join(repr(s) for s in self.fresh_symbols[:40])
            more = " ..." if fresh > 40 else ""
            lines.append(f"embedding: {len(self.rows)} of {self.n_symbols} symbols copied from "
                         f"{src}, {fresh} initialised" + (f" ({shown}{more})" if fresh else ""))
        other_ignored = [k for k in self.ignored if k != EMBEDDING]
        if other_ignored:
            lines.append(f"{len(other_ignored)} tensors initialised (--ignore-layers "
                         f"{' '.join(self.ignore)}): {', '.join(other_ignored)}")
        return lines

    def record(self) -> dict[str, Any]:
        """JSON-ready account of the warm start (RUN/init_from.json, the events stream)."""
        return {
            "init_from": str(self.source.path.resolve()), "format": self.source.kind,
            "sha256": self.source.sha256, "ignore_layers": list(self.ignore),
            "tensors_copied": len(self.copy),
            "embedding": {"copied": len(self.rows), "symbols": self.n_symbols,
                          "initialised": list(self.fresh_symbols),
                          "ignored": EMBEDDING in self.ignored},
            "ignored": list(self.ignored), "extra_in_source": list(self.extra),
        }

    @torch.no_grad()
    def apply(self, model: Tacotron2) -> dict[str, Any]:
        """Copy the planned tensors into ``model`` (in place, on its device and dtype); log the
        counts; return :meth:`record`. Draws no random numbers, so the tensors left fresh are
        what a run with the same seed and no warm start has."""
        target = model.state_dict()
        for key in self.copy:
            target[key].copy_(self.source.state[key])
        if self.rows:
            src = self.source.state[EMBEDDING]
            run_rows, src_rows = zip(*self.rows, strict=True)
            target[EMBEDDING][list(run_rows)] = src[list(src_rows)].to(target[EMBEDDING])
        for line in self.describe():
            log.info("%s", line)
        return self.record()


def plan_warm_start(source: SourceModel | str | Path, model_cfg: ModelConfig,
                    symbols: Sequence[str], n_mels: int, ignore: Sequence[str] = (),
                    trust: bool = False) -> WarmStart:
    """Check ``source`` against the model ``model_cfg`` builds for ``symbols`` and plan the copy.

    Embedding rows are matched by symbol (rows of symbols in both tables are copied); every
    other tensor by name and shape. Keys under an ``ignore`` prefix keep their initialisation.
    Fails, listing every key, when a tensor's shape differs or the source lacks one the run
    needs (unless ignored); source keys the run has no use for only give a warning. Nothing is
    built or written, so a refused warm start leaves no trace."""
    if not isinstance(source, SourceModel):
        source = read_source(source, trust=trust)
    ignore = tuple(ignore)
    shapes = model_shapes(model_cfg, len(symbols), n_mels)
    state = source.state
    unused = [p for p in ignore if not any(_matches(k, [p]) for k in (*shapes, *state))]
    if unused:
        raise PretrainedError(
            f"--ignore-layers (train.ignore_layers) {' '.join(unused)} matches no tensor of the "
            "model or the source; give name prefixes such as embedding, encoder, "
            "decoder.linear_projection, decoder.gate_layer, postnet")
    ignored = tuple(k for k in shapes if _matches(k, ignore))
    mismatched: list[str] = []
    missing: list[str] = []
    copy: list[str] = []
    for key, shape in shapes.items():
        if key in ignored:
            continue
        if key not in state:
            missing.append(key)
        elif key == EMBEDDING:  # rows are symbols, remapped below: only the width must agree
            if state[key].dim() != 2 or state[key].shape[1] != shape[1]:
                mismatched.append(key)
        elif state[key].shape != shape:
            mismatched.append(key)
        else:
            copy.append(key)
    if mismatched or missing:
        prefixes = sorted({k.rsplit(".", 1)[0] for k in mismatched + missing})
        parts = [f"cannot warm-start from {source.describe()}:"]
        if mismatched:
            parts.append("tensors whose shapes differ:")
            parts += [f"  {k}: source {_shape(state[k].shape)}, this model {_shape(shapes[k])}"
                      + (" (only the width must agree: rows are remapped by symbol)"
                         if k == EMBEDDING else "") for k in mismatched]
        if missing:
            parts.append("tensors this model has and the source lacks:")
            parts += [f"  {k} {_shape(shapes[k])}" for k in missing]
        parts.append("pass --ignore-layers (train.ignore_layers) with name prefixes of these "
                     "keys to leave them freshly initialised, e.g. --ignore-layers "
                     + " ".join(prefixes))
        raise PretrainedError("\n".join(parts))
    extra = tuple(k for k in state if k not in shapes and not _matches(k, ignore))
    if extra:
        log.warning("warm start: %d tensors of %s are not in this model and are not used: %s",
                    len(extra), source.path, ", ".join(extra))
    rows: list[tuple[int, int]] = []
    fresh: list[str] = []
    if EMBEDDING not in ignored:
        if len(source.symbols) != state[EMBEDDING].shape[0]:
            raise PretrainedError(
                f"{source.path}: {EMBEDDING} has {state[EMBEDDING].shape[0]} rows but its symbol "
                f"table ({'NVIDIA' if source.kind == 'nvidia' else 'the checkpoint'}'s) has "
                f"{len(source.symbols)}, so rows cannot be matched to symbols; pass "
                "--ignore-layers embedding to start the embedding fresh")
        src_index = {s: i for i, s in enumerate(source.symbols)}
        for i, sym in enumerate(symbols):
            if sym in src_index:
                rows.append((i, src_index[sym]))
            else:
                fresh.append(sym)
    return WarmStart(source, ignore, tuple(copy), tuple(rows), tuple(fresh), len(symbols),
                     ignored, extra)


# ---------------------------------------------------------------------------------------------
# export and loading


@dataclass(frozen=True)
class PretrainedModel:
    """An exported model as read back: tensors and the settings that rebuild and feed it."""

    directory: Path
    state: dict[str, Tensor]
    model: ModelConfig
    audio: AudioConfig
    language: str
    phonemes: bool
    symbols: list[str]
    r: int
    synth: SynthConfig
    alignment: AlignmentConfig


def check_nvidia_audio(audio: AudioConfig) -> None:
    """NVIDIA's features must be ours, or its mels would mean something else here."""
    ours = audio.model_dump()
    diff = [f"{k}: NVIDIA {v}, tacotrain {ours[k]}" for k, v in NVIDIA_AUDIO.items()
            if ours[k] != v]
    if diff:
        raise PretrainedError("NVIDIA/tacotron2's audio settings differ from this version's "
                              "defaults (audio section): " + "; ".join(diff))


def _check_state(source: SourceModel) -> None:
    """Every tensor of the model the source's settings build, with its shape, and no other."""
    shapes = model_shapes(source.model, len(source.symbols), source.audio.n_mels)
    state = source.state
    problems = [f"  {k}: missing (expected {_shape(s)})" for k, s in shapes.items()
                if k not in state]
    problems += [f"  {k}: {_shape(state[k].shape)}, expected {_shape(s)}"
                 for k, s in shapes.items() if k in state and state[k].shape != s]
    problems += [f"  {k}: not a tensor of this model" for k in state if k not in shapes]
    if problems:
        sizes = ("the `default` preset's model section (NVIDIA's hparams)"
                 if source.kind == "nvidia" else "its own config's model section")
        raise PretrainedError(f"{source.describe()} does not match the model {sizes} builds:\n"
                              + "\n".join(problems))


def export_model(checkpoint: str | Path, out: str | Path, trust: bool = False,
                 overwrite: bool = False) -> SourceModel:
    """Write ``OUT/model.safetensors`` and ``OUT/config.json`` from a checkpoint (ours or
    NVIDIA's), both atomically. The tensors are the source's, unchanged (bit-equal, same dtype);
    the names are NVIDIA's, which are ours. Returns what was exported."""
    out = Path(out)
    existing = [out / f for f in (WEIGHTS_FILE, CONFIG_FILE) if (out / f).exists()]
    if existing and not overwrite:
        raise PretrainedError(f"{existing[0]} exists; choose another --out or pass --force to "
                              "replace it")
    source = read_source(checkpoint, trust=trust)
    if source.kind == "nvidia":
        check_nvidia_audio(source.audio)
    _check_state(source)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in source.state.items()}
    atomic_write_bytes(out / WEIGHTS_FILE, save_safetensors(tensors, metadata={"format": "pt"}))
    atomic_write_json(out / CONFIG_FILE, {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": "tacotron2",
        "source": {"format": source.kind, "file": source.path.name, "sha256": source.sha256},
        "model": source.model.model_dump(mode="json"),
        "r": source.r,  # reduction factor to synthesise with
        "audio": source.audio.model_dump(mode="json"),
        "text": {"language": source.language, "phonemes": source.phonemes,
                 "cleaner": cleaner_name(source.language), "symbols": list(source.symbols)},
        "synth": source.synth.model_dump(mode="json"),
        "alignment": source.alignment.model_dump(mode="json"),
    })
    return source


def load_pretrained(directory: str | Path) -> PretrainedModel:
    """Read an exported model (``DIR/config.json`` + ``DIR/model.safetensors``) with json and
    safetensors only: nothing is unpickled. Tensors come back on the CPU."""
    directory = Path(directory)
    cfg_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    for p in (cfg_path, weights_path):
        if not p.is_file():
            raise PretrainedError(f"{p} not found: DIR must hold {CONFIG_FILE} and {WEIGHTS_FILE} "
                                  "as written by `tacotrain export`")
    try:
        meta = json.loads(cfg_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise PretrainedError(f"{cfg_path}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise PretrainedError(f"{cfg_path}: 'format' must be {FORMAT!r}; not an export of "
                              "`tacotrain export`")
    if meta.get("format_version") != FORMAT_VERSION:
        raise PretrainedError(f"{cfg_path}: format_version {meta.get('format_version')!r} is not "
                              f"supported (this version reads {FORMAT_VERSION})")

    def need(section: dict[str, Any], key: str, where: str) -> Any:
        if key not in section:
            raise PretrainedError(f"{cfg_path}: key {where}{key!r} missing")
        return section[key]

    text = need(meta, "text", "")
    language, phonemes = need(text, "language", "text."), bool(need(text, "phonemes", "text."))
    symbols = need(text, "symbols", "text.")
    if language not in ("en", "ru"):
        raise PretrainedError(f"{cfg_path}: text.language {language!r} is not supported (en, ru)")
    if need(text, "cleaner", "text.") != cleaner_name(language):
        raise PretrainedError(f"{cfg_path}: text.cleaner {text['cleaner']!r} is unknown; this "
                              f"version cleans {language} text with {cleaner_name(language)!r}")
    if not isinstance(symbols, list) or not all(isinstance(s, str) for s in symbols):
        raise PretrainedError(f"{cfg_path}: text.symbols must be a list of strings")
    model = validate_as(ModelConfig, need(meta, "model", ""), f"{cfg_path}: model")
    audio = validate_as(AudioConfig, need(meta, "audio", ""), f"{cfg_path}: audio")
    synth = validate_as(SynthConfig, meta.get("synth", {}), f"{cfg_path}: synth")
    alignment = validate_as(AlignmentConfig, meta.get("alignment", {}), f"{cfg_path}: alignment")
    r = need(meta, "r", "")
    if not isinstance(r, int) or not 1 <= r <= model.n_frames_per_step:
        raise PretrainedError(f"{cfg_path}: r must be an integer in 1..model.n_frames_per_step "
                              f"({model.n_frames_per_step}), got {r!r}")
    try:
        state = load_safetensors(weights_path.read_bytes())
    except SafetensorError as exc:
        raise PretrainedError(f"{weights_path}: not a readable safetensors file ({exc})") from None
    return PretrainedModel(directory, state, model, audio, language, phonemes, list(symbols), r,
                           synth, alignment)


def build_model(pre: PretrainedModel, device: torch.device | str = "cpu") -> Tacotron2:
    """The Tacotron 2 of an exported model, its weights loaded, at its reduction factor."""
    model = Tacotron2(pre.model, len(pre.symbols), pre.audio.n_mels)
    try:
        model.load_state_dict(pre.state)
    except RuntimeError as exc:
        raise PretrainedError(f"{pre.directory / WEIGHTS_FILE} does not fit the model "
                              f"{pre.directory / CONFIG_FILE} describes: {exc}") from None
    model.set_r(pre.r)
    return model.to(device)
