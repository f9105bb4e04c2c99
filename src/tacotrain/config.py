"""Typed, validated configuration.

Every threshold used anywhere in tacotrain lives here with a default and a comment. Models reject
unknown keys and check ranges, so a typo in a YAML file or a ``--set`` override names the key
instead of silently doing nothing. Secrets are never part of a config: they come from
environment variables at the place they are used.
"""

from __future__ import annotations

import copy
import difflib
import logging
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tacotrain import metrics as M

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A configuration file, preset or override is invalid; the message names the key."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class AudioConfig(Strict):
    """Audio loading and the log-mel used at training *and* synthesis time (one function)."""

    sample_rate: int = Field(22050, ge=8000, le=96000)  # every clip is resampled to this
    n_fft: int = Field(1024, ge=64)
    hop_length: int = Field(256, ge=16)  # samples between mel frames
    win_length: int = Field(1024, ge=64)
    n_mels: int = Field(80, ge=8, le=512)
    fmin: float = Field(0.0, ge=0.0)
    fmax: float = Field(8000.0, gt=0.0)
    log_clamp: float = Field(1e-5, gt=0.0)  # magnitude floor before the log
    trim_silence: bool = True  # cut leading/trailing silence when preparing
    trim_top_db: float = Field(40.0, gt=0.0)  # frames this many dB below the peak count as silence
    griffin_lim_iters: int = Field(60, ge=1)
    # magnitude sharpening before Griffin-Lim; 1.0 keeps the mel's own magnitudes, through
    # which the recogniser reads natural speech best of the powers 0.8-2.0
    # (benchmarks/RESULTS.md, "Griffin-Lim's power decides the floor")
    griffin_lim_power: float = Field(1.0, gt=0.0)

    @property
    def frame_ms(self) -> float:
        """Milliseconds between mel frames."""
        return 1000.0 * self.hop_length / self.sample_rate

    @model_validator(mode="after")
    def _check(self) -> AudioConfig:
        if self.win_length > self.n_fft:
            raise ValueError(
                f"audio.win_length ({self.win_length}) must be <= audio.n_fft ({self.n_fft})"
            )
        if self.fmax > self.sample_rate / 2:
            raise ValueError(
                f"audio.fmax ({self.fmax}) must be <= sample_rate/2 ({self.sample_rate / 2})"
            )
        if self.fmin >= self.fmax:
            raise ValueError(f"audio.fmin ({self.fmin}) must be < audio.fmax ({self.fmax})")
        return self


class TextConfig(Strict):
    # auto: chosen from the script (Latin or Cyrillic) of the corpus text
    language: Literal["auto", "en", "ru"] = "auto"
    # feed espeak-ng IPA phonemes instead of letters (needs espeak-ng; Russian "+" stress kept)
    phonemes: bool = False


class PrepareConfig(Strict):
    """Corpus validation thresholds used by ``tacotrain prepare``."""

    min_seconds: float = Field(0.5, ge=0.0)  # shorter clips (after trimming): too_short
    max_seconds: float = Field(12.0, gt=0.0)  # longer clips (after trimming) are rejected: too_long
    silent_peak_dbfs: float = Field(-50.0, le=0.0)  # clips peaking below this: silent_audio
    val_fraction: float = Field(0.05, ge=0.0, lt=1.0)  # share of kept items held out for validation
    val_min_items: int = Field(2, ge=0)  # at least this many validation items when possible
    val_max_items: int = Field(100, ge=0)  # and at most this many
    seed: int = 1234  # seed of the deterministic train/validation split

    @model_validator(mode="after")
    def _check(self) -> PrepareConfig:
        if self.min_seconds >= self.max_seconds:
            raise ValueError("prepare.min_seconds must be < prepare.max_seconds")
        return self


class CorpusBuildConfig(Strict):
    """``tacotrain corpus build``: cutting long recordings into clips (corpus_build/)."""

    frame_seconds: float = Field(0.01, gt=0.0, le=0.05)  # hop of the energy and feature frames
    noise_percentile: float = Field(10.0, ge=0.0, le=50.0)  # frame level taken as the noise floor
    speech_margin_db: float = Field(8.0, gt=0.0)  # speech: this far above the noise floor...
    speech_fraction: float = Field(0.25, ge=0.0, le=1.0)  # ...or this share of floor-to-peak
    min_speech: float = Field(0.06, ge=0.0)  # shorter bursts above threshold count as pause (s)
    min_pause: float = Field(0.25, gt=0.0)  # a run of non-speech at least this long is a pause (s)
    pad: float = Field(0.1, ge=0.0)  # silence kept at each end of a clip, at most (s)
    min_clip: float = Field(1.0, gt=0.0)  # shorter clips are merged with a neighbour (s)
    max_clip: float = Field(11.0, gt=0.0)  # longer stretches are split at their weakest pause (s)
    join_pause: float = Field(0.45, ge=0.0)  # no text: speech across shorter pauses stays one
    # clip while it fits max_clip (a comma's pause is usually shorter than a sentence's)
    snap_seconds: float = Field(0.5, gt=0.0)  # a sentence end moves to a pause this close (s)
    snap_inside_sentence: float = Field(0.15, gt=0.0)  # a cut inside a long sentence: this close
    min_confidence: float = Field(0.5, ge=0.0, le=1.0)  # clips below: rejected / set aside
    rate_ratio_min: float = Field(0.33, gt=0.0)  # speech seconds / espeak-ng reference seconds:
    rate_ratio_max: float = Field(3.0, gt=0.0)  # outside these the text is not this audio's
    max_rejected_share: float = Field(0.5, gt=0.0, le=1.0)  # more: "text does not match audio"
    max_unpaused_share: float = Field(0.25, gt=0.0, le=1.0)  # sentence ends without a pause:
    # more than this share of them, and the text does not match the audio either

    @model_validator(mode="after")
    def _check(self) -> CorpusBuildConfig:
        if self.min_clip >= self.max_clip:
            raise ValueError("corpus_build.min_clip must be < corpus_build.max_clip")
        if self.rate_ratio_min >= self.rate_ratio_max:
            raise ValueError("corpus_build.rate_ratio_min must be < corpus_build.rate_ratio_max")
        return self


class Settings(Strict):
    """The part of the config that ``prepare`` uses (and stores with the prepared data)."""

    audio: AudioConfig = AudioConfig()
    text: TextConfig = TextConfig()
    prepare: PrepareConfig = PrepareConfig()


class ModelConfig(Strict):
    """Tacotron 2 sizes. Defaults are NVIDIA's reference sizes (Shen et al. 2018)."""

    symbols_embedding_dim: int = Field(512, ge=8)
    encoder_embedding_dim: int = Field(512, ge=8)  # BiLSTM output: 2 x encoder_embedding_dim/2
    encoder_n_convolutions: int = Field(3, ge=0)
    encoder_kernel_size: int = Field(5, ge=1)
    encoder_dropout: float = Field(0.5, ge=0.0, lt=1.0)
    attention_rnn_dim: int = Field(1024, ge=8)
    attention_dim: int = Field(128, ge=8)
    attention_location_n_filters: int = Field(32, ge=1)
    attention_location_kernel_size: int = Field(31, ge=1)
    attention_dropout: float = Field(0.1, ge=0.0, lt=1.0)  # dropout on the attention LSTM output
    # "location": Tacotron 2's location-sensitive attention; "location_prior": the same plus a
    # static forward prior (beta-binomial filter over the previous weights), alignment-robust;
    # "dca": dynamic convolution attention (Battenberg et al. 2020), location-relative only (no
    # content term), its MLP and energy layer attention_dim wide (the paper's 128 by default)
    attention: Literal["location", "location_prior", "dca"] = "location"
    attention_prior_filter_len: int = Field(11, ge=2)  # largest forward move + 1 (tokens)
    attention_prior_alpha: float = Field(0.1, gt=0.0)  # beta-binomial shape: small alpha and
    attention_prior_beta: float = Field(0.9, gt=0.0)  # beta favour staying or small moves
    dca_static_filters: int = Field(8, ge=1)  # DCA: static filters over the previous weights
    dca_static_filter_len: int = Field(21, ge=1)  # DCA: their length (tokens)
    dca_dynamic_filters: int = Field(8, ge=1)  # DCA: filters predicted from the attention query
    dca_dynamic_filter_len: int = Field(21, ge=1)  # DCA: their length (tokens)
    dca_prior_filter_len: int = Field(11, ge=2)  # DCA prior: largest forward move + 1 (tokens)
    dca_prior_alpha: float = Field(0.1, gt=0.0)  # DCA prior: beta-binomial alpha
    dca_prior_beta: float = Field(0.9, gt=0.0)  # DCA prior: beta-binomial beta
    prenet_dim: int = Field(256, ge=8)
    prenet_n_layers: int = Field(2, ge=1)
    prenet_dropout: float = Field(0.5, ge=0.0, lt=1.0)
    prenet_dropout_at_inference: bool = True  # the paper keeps prenet dropout on when synthesising
    decoder_rnn_dim: int = Field(1024, ge=8)
    decoder_dropout: float = Field(0.1, ge=0.0, lt=1.0)
    # reduction factor r: frames per decoder step; with an r_schedule, the largest r in it
    # (the size of the frame and stop projections, whose first r slots a smaller r uses)
    n_frames_per_step: int = Field(1, ge=1, le=8)
    # teacher-forced decoder loop: "fast" runs only the items still decoding at each step, the
    # LSTM cells with one weight-gradient product per batch (model/recurrent.py), and the
    # encoder and postnet conv stacks without their padding (model/packed.py); "reference" is
    # the plain padded per-step autograd code. Same maths, equal to rounding; autocast always
    # uses "reference"
    decoder_impl: Literal["fast", "reference"] = "fast"
    # gradual training: [[step, r], ...] from step 0, steps increasing; r from the last pair
    # whose step <= the training step (train/schedules.r_at). Empty: r = n_frames_per_step
    r_schedule: list[tuple[int, int]] = []
    postnet_embedding_dim: int = Field(512, ge=8)
    postnet_kernel_size: int = Field(5, ge=1)
    postnet_n_convolutions: int = Field(5, ge=1)
    postnet_dropout: float = Field(0.5, ge=0.0, lt=1.0)
    gate_threshold: float = Field(0.5, gt=0.0, lt=1.0)  # stop when sigmoid(gate) exceeds this
    max_decoder_steps: int = Field(2000, ge=1)  # absolute cap on decoder steps at inference
    max_decoder_steps_per_token: float = Field(12.0, gt=0.0)  # cap that scales with text length
    # Synthesis-only safeguards (never used in teacher-forced training), 0 = off:
    # attend only tokens p..p+window, p = the previous step's attention argmax (forward-only)
    infer_attention_window: int = Field(0, ge=0)
    # stop an item once its attention argmax has rested this many steps on its last token
    infer_stop_after_last_token: int = Field(0, ge=0)
    # after more steps than this on one token, attention may never again reach it or earlier
    # tokens (a stuck voice moves on); on the last token the item stops
    infer_max_steps_per_token: float = Field(0.0, ge=0.0)
    # heed the stop gate only once the attention argmax is among the item's last this-many
    # tokens (a gate firing in mid-sentence, e.g. in a long list, is ignored)
    infer_gate_last_tokens: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        sched = self.r_schedule
        if not sched:
            return self
        if sched[0][0] != 0:
            raise ValueError(f"model.r_schedule must start at step 0, got {sched[0][0]}")
        for (a, _), (b, _) in zip(sched[:-1], sched[1:], strict=True):
            if b <= a:
                raise ValueError(f"model.r_schedule steps must be strictly increasing: "
                                 f"{b} follows {a}")
        bad = [r for _, r in sched if not 1 <= r <= 8]
        if bad:
            raise ValueError(f"model.r_schedule: r must be in 1..8, got {bad[0]}")
        top = max(r for _, r in sched)
        if self.n_frames_per_step != top:
            raise ValueError(f"model.n_frames_per_step ({self.n_frames_per_step}) must equal "
                             f"the largest r in model.r_schedule ({top}): it sizes the output "
                             "projections")
        return self


class GuidedAttentionConfig(Strict):
    """Guided attention loss (Tachibana et al. 2017) with a bounded schedule.

    weight(step) = initial for step < decay_start, then exponential decay by ``decay_rate`` per
    ``decay_steps`` steps, never below ``floor``. Nothing changes it at run time.
    """

    enabled: bool = True
    sigma: float = Field(0.2, gt=0.0, le=1.0)  # g in W[t,n] = 1 - exp(-(n/N - t/T)^2 / (2 g^2))
    initial_weight: float = Field(10.0, ge=0.0)
    decay_start: int = Field(2000, ge=0)
    decay_steps: int = Field(2000, ge=1)
    decay_rate: float = Field(0.5, gt=0.0, le=1.0)
    floor: float = Field(0.0, ge=0.0)
    max_weight: float = Field(50.0, gt=0.0)  # hard upper bound; configs above it are rejected

    @model_validator(mode="after")
    def _check(self) -> GuidedAttentionConfig:
        if self.initial_weight > self.max_weight:
            raise ValueError(
                f"loss.guided_attention.initial_weight ({self.initial_weight}) exceeds "
                f"max_weight ({self.max_weight})"
            )
        if self.floor > self.initial_weight:
            raise ValueError("loss.guided_attention.floor must be <= initial_weight")
        return self


class AttentionEntropyConfig(Strict):
    """Optional regulariser: the mean attention entropy (nats per decoder step), which rewards
    sharp attention. Off by default. Applied from ``start`` (once attention follows the text:
    from step 0 it would sharpen the attention onto the first token), ramped in linearly."""

    weight: float = Field(0.0, ge=0.0, le=10.0)
    start: int = Field(0, ge=0)
    ramp_steps: int = Field(100, ge=1)


class LossConfig(Strict):
    mel_loss: Literal["mse", "l1"] = "mse"  # masked; applied to decoder and postnet outputs
    gate_pos_weight: float = Field(5.0, gt=0.0)  # BCE positive weight for the rare stop frames
    attention_entropy: AttentionEntropyConfig = AttentionEntropyConfig()
    guided_attention: GuidedAttentionConfig = GuidedAttentionConfig()


class OptimConfig(Strict):
    """Optimiser and learning-rate schedule (a pure function of the step, see train/schedules)."""

    optimizer: Literal["adam", "adamw"] = "adam"
    lr: float = Field(1e-3, gt=0.0, le=1.0)  # peak learning rate, reached after warm-up
    beta1: float = Field(0.9, ge=0.0, lt=1.0)
    beta2: float = Field(0.999, ge=0.0, lt=1.0)
    eps: float = Field(1e-6, gt=0.0)
    weight_decay: float = Field(1e-6, ge=0.0)
    warmup_steps: int = Field(200, ge=0)  # linear warm-up from 0 to lr
    decay: Literal["none", "exponential", "cosine"] = "exponential"
    decay_start: int = Field(10000, ge=0)  # step at which decay begins (after warm-up)
    decay_steps: int = Field(20000, ge=1)  # exponential: lr halves (decay_rate) per decay_steps;
    decay_rate: float = Field(0.5, gt=0.0, le=1.0)  # cosine: reaches min_lr after decay_steps
    min_lr: float = Field(1e-5, ge=0.0)  # floor of every schedule
    grad_clip: float = Field(1.0, gt=0.0)  # max global gradient norm (after AMP unscaling)

    @model_validator(mode="after")
    def _check(self) -> OptimConfig:
        if self.min_lr > self.lr:
            raise ValueError(f"optim.min_lr ({self.min_lr}) must be <= optim.lr ({self.lr})")
        return self


class TrainConfig(Strict):
    # items per batch in each process: under torchrun the global batch of one optimiser update is
    # batch_size x world size x grad_accum_steps. auto: the largest batch whose training step on
    # the longest train items fits the device, chosen at the start of a run (train/batch_size.py)
    # and saved as an integer in RUN/config.yaml, which a resumed run keeps
    batch_size: Annotated[int, Field(ge=1)] | Literal["auto"] = 32
    max_batch_size: int = Field(64, ge=1)  # batch_size auto: never above this
    # batch_size auto on the CPU: GiB a training step may add to what each process holds
    # before it (activations, gradients, optimiser state), measured as resident memory
    memory_budget_gb: float = Field(8.0, gt=0.0)
    bucket_batches: int = Field(1, ge=1)  # >1 mixes neighbouring length buckets (more padding)
    # micro-batches whose gradients are summed (each loss x 1/k) into one optimiser update; a
    # larger effective batch in the same memory. An epoch is cut to whole updates
    grad_accum_steps: int = Field(1, ge=1)
    # under torchrun: how long a process waits for the others at a collective (rank 0's
    # validation and checkpoint writes included) before the run fails
    ddp_timeout_minutes: float = Field(30.0, gt=0.0)
    max_steps: int = Field(100000, ge=1)
    time_budget_minutes: float | None = Field(None, gt=0.0)  # stop (and checkpoint) after this
    seed: int = 1234
    device: str = "auto"  # auto (CUDA when available), cpu, cuda, cuda:N
    # autocast dtype; auto: bf16 (fp16 where bf16 is missing) on CUDA, fp32 on the CPU. fp16 is
    # CUDA only; bf16 applies on the CPU too
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    threads: int | None = Field(None, ge=1)  # torch CPU threads (None: torch's default)
    num_workers: int = Field(0, ge=0)  # DataLoader worker processes
    log_interval: int = Field(10, ge=1)  # steps between logged training metrics
    val_interval: int = Field(500, ge=1)  # steps between validations (and checkpoints)
    val_free_run_items: int = Field(4, ge=0)  # validation sentences synthesised free-running
    keep_last: int = Field(3, ge=1)  # checkpoints kept besides the best one
    # best.pt: the validation with the lowest value of this metric among those the verdict
    # judged aligned (a validation metric name, tacotrain/metrics.py); `tacotrain tune` sets it
    # to its quality objective, so that the checkpoint a trial keeps is the one it is scored by
    best_metric: str = M.VAL_MEL_POST
    stop_when_aligned: bool = False  # stop once free-running validation meets `alignment`
    # ... in this many consecutive validation rounds: one round of a few items can pass by luck
    # (benchmarks/RESULTS.md, "Two aligned rounds before the demo stops")
    stop_when_aligned_rounds: int = Field(2, ge=1)
    # warm start (infer/pretrained.py): the model's weights from this checkpoint (tacotrain's or
    # NVIDIA/tacotron2's), embedding rows matched by symbol; optimiser, step and schedules start
    # fresh. None: a fresh initialisation. Not with --resume
    init_from: str | None = None
    # name prefixes (e.g. embedding, decoder.linear_projection) whose tensors keep their fresh
    # initialisation in a warm start instead of coming from train.init_from
    ignore_layers: list[str] = []

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.ignore_layers and not self.init_from:
            raise ValueError("train.ignore_layers is set but train.init_from is not: it only "
                             "applies to a warm start (--init-from)")
        if self.best_metric.split("/", 1)[0] not in (M.VAL, M.FREE) or "/" not in self.best_metric:
            raise ValueError(f"train.best_metric {self.best_metric!r}: name a validation metric, "
                             f"{M.VAL}/... or {M.FREE}/... (e.g. {M.VAL_MEL_POST}, "
                             f"{M.FREE_MCD_DTW})")
        return self


class AlignmentConfig(Strict):
    """The verdict on free-running synthesis (tacotrain/judge/verdict.py): when an item reads
    its text.

    Used by every decision that depends on alignment: early-stop phases, ``best.pt``, the tuner,
    notifications, ``tacotrain demo`` and ``tacotrain eval``. An item must pass every check.
    """

    require_gate_stop: bool = True  # stopped by the gate, not by the step cap
    length_ratio_min: float = Field(0.75, gt=0.0)  # free-running / ground-truth frames, where
    length_ratio_max: float = Field(1.33, gt=0.0)  # the item has ground truth
    # a token is read when its attention summed over decoder steps, times the audio one step
    # speaks (r x hop_length / sample_rate), reaches this many milliseconds: a few, since a
    # reading voice may say both characters of a double letter in one decoder step and give the
    # second only a fraction of that step
    read_ms: float = Field(6.0, gt=0.0)
    max_skipped_share: float = Field(0.1, ge=0.0, le=1.0)  # unread tokens allowed (share)
    # the attended token may step back this many tokens without counting as a repeat (a reading
    # voice's attention may step back by 2 around a word boundary)
    repeat_tolerance: int = Field(2, ge=0)
    max_repeated_tokens: int = Field(0, ge=0)  # tokens returned to beyond the tolerance
    # a token stalls when it holds more than stall_factor x the item's median per-token
    # attention and at least stall_min_ms of audio; the minimum lies above the pause a natural
    # voice makes between two sentences of one item, which it attends on the next sentence's
    # first sound (benchmarks/RESULTS.md, "Training the `natural` preset on it", run E2)
    stall_factor: float = Field(8.0, gt=1.0)
    stall_min_ms: float = Field(500.0, ge=0.0)
    max_stalled_tokens: int = Field(0, ge=0)
    # shape of the attention (see judge/alignment.py); diagonality alone is not evidence of reading
    diagonality: float = Field(0.8, ge=0.0, le=1.0)
    focus: float = Field(0.5, ge=0.0, le=1.0)
    coverage: float = Field(0.5, ge=0.0, le=1.0)
    # content: nearer (MCD-DTW) to its own ground truth than to any other of >= min_candidates
    require_identified: bool = True
    min_candidates: int = Field(8, ge=2)
    # mutual nearest, and own distance x (1 + margin) below the median distance to the other
    # sentences, both ways; the margin lies above those of 95% of the items of a voice that does
    # not read yet, among 8, 16 or 30 candidates alike (benchmarks/RESULTS.md, "The content
    # test's margin")
    identify_margin: float = Field(0.2, ge=0.0, le=1.0)
    n_cepstra: int = Field(13, ge=1)  # mel-cepstral coefficients c1..cN in MCD-DTW
    max_mcd_dtw_db: float | None = Field(None, gt=0.0)  # optional upper bound on MCD-DTW
    round_share: float = Field(1.0, gt=0.0, le=1.0)  # share of a round's items that must pass
    # intelligibility (tacotrain/judge/intelligibility.py): a recogniser transcribes each synthesis
    # through the vocoder; the round's WER must stay within max_wer_ratio x the WER of the same
    # items' ground truth through our mel and vocoder (the resynthesis floor, lifted to
    # min_floor_wer). auto: PocketSphinx for English where installed; pocketsphinx: required;
    # vosk: required, the Vosk model directory in asr_model (any language it has a model for);
    # off: content rests on identification alone
    asr: Literal["auto", "pocketsphinx", "vosk", "off"] = "auto"
    asr_model: str | None = None  # with asr: vosk, the model directory
    max_wer_ratio: float = Field(1.5, ge=1.0)
    min_floor_wer: float = Field(0.05, ge=0.0, le=1.0)
    # a floor above this means the recogniser cannot read the ground truth (as with espeak-ng's
    # robot voice): it is then no judge, and intelligibility is reported as untested
    max_floor_wer: float = Field(0.6, gt=0.0)
    # whether the recogniser can read this voice is decided once per run, on this many ground
    # truths (validation items first, then training items), not on a round's few items: on 4
    # espeak-ng items the floor was 0.50 for one corpus seed and 0.80 for another
    floor_items: int = Field(24, ge=1)

    @model_validator(mode="after")
    def _check(self) -> AlignmentConfig:
        if self.length_ratio_min >= self.length_ratio_max:
            raise ValueError("alignment.length_ratio_min must be < alignment.length_ratio_max")
        if (self.asr == "vosk") != (self.asr_model is not None):
            raise ValueError("alignment.asr: vosk needs alignment.asr_model (a Vosk model "
                             "directory), and alignment.asr_model is read only with asr: vosk")
        return self

    def asr_required(self) -> bool:
        """A named recogniser: a round it cannot judge never passes."""
        return self.asr in ("pocketsphinx", "vosk")


# Parameters an intervention may set: each is read by the live training step (train/trainer.py,
# ``Trainer.param``), so a change takes effect on the next step. Anything else is rejected.
WIRED_PARAMETERS = ("loss.guided_attention.weight", "optim.lr", "optim.grad_clip")


class InterventionConfig(Strict):
    """A bounded, reversible change made when a metric misbehaves (see train/guard.py)."""

    name: str
    metric: str  # e.g. free/aligned_share, free/mcd_dtw_db, val/mel_post (validation figures)
    compare: Literal["<", ">"]  # trigger when metric < threshold (or > threshold)
    threshold: float
    not_before_step: int = Field(0, ge=0)
    parameter: str  # one of WIRED_PARAMETERS
    value: float  # the value set while the intervention is active (inside [min, max])
    min: float
    max: float
    cooldown_steps: int = Field(500, ge=1)  # at least this many steps between two triggers
    probation_steps: int = Field(300, ge=1)  # judged at the first validation after this
    min_improvement: float = Field(0.0, ge=0.0)  # success: metric moved this far the right way
    rollback_on_failure: bool = False  # also restore the weights of the trigger step on revert
    max_count: int = Field(2, ge=1)  # at most this many triggers per run

    @model_validator(mode="after")
    def _check(self) -> InterventionConfig:
        if self.parameter not in WIRED_PARAMETERS:
            raise ValueError(f"intervention {self.name!r}: parameter {self.parameter!r} is not "
                             "wired to the training step; use one of "
                             f"{', '.join(WIRED_PARAMETERS)}")
        if not self.min <= self.value <= self.max:
            raise ValueError(f"intervention {self.name!r}: value {self.value} outside "
                             f"[{self.min}, {self.max}]")
        return self


class GuardConfig(Strict):
    """NaN/Inf and loss-spike recovery (on by default) and optional interventions (off)."""

    enabled: bool = True
    nonfinite_patience: int = Field(3, ge=1)  # non-finite steps in a row before a rollback
    spike_factor: float = Field(10.0, gt=1.0)  # loss above this x running median is a spike
    spike_window: int = Field(50, ge=5)  # steps in the running median
    spike_patience: int = Field(3, ge=1)  # spike steps in a row before a rollback
    rollback_lr_factor: float = Field(0.5, gt=0.0, lt=1.0)  # LR multiplied by this per rollback
    max_rollbacks: int = Field(3, ge=0)  # one more reason to roll back stops the run (exit 3)
    snapshot_interval: int = Field(25, ge=1)  # steps between in-memory good-state snapshots
    interventions: list[InterventionConfig] = []


class PhaseConfig(Strict):
    metric: str  # validation metric watched in this phase
    mode: Literal["min", "max"]
    patience: int = Field(10, ge=1)  # validation rounds without improvement
    min_delta: float = Field(0.0, ge=0.0)  # smaller changes are not improvements


class EarlyStopConfig(Strict):
    """Three phases: alignment -> learning -> fine-tuning (see train/early_stop.py). The
    alignment phase ends at the first validation the verdict (``alignment``) judges aligned."""

    enabled: bool = False
    alignment: PhaseConfig = PhaseConfig(metric=M.FREE_MCD_DTW, mode="min", patience=20,
                                         min_delta=0.05)
    learning: PhaseConfig = PhaseConfig(metric=M.VAL_MEL_POST, mode="min", patience=10,
                                        min_delta=0.001)
    fine_tuning: PhaseConfig = PhaseConfig(metric=M.VAL_MEL_POST, mode="min", patience=5,
                                           min_delta=0.0)
    fine_tuning_share: float = Field(0.8, gt=0.0, le=1.0)  # of max_steps: fine-tuning starts


class MlflowConfig(Strict):
    """MLflow sink (optional). Credentials, if the server needs them, come from MLflow's own
    environment variables (MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD), never config."""

    enabled: bool = False
    tracking_uri: str | None = None  # None: sqlite:///RUN/mlflow.db; or http://host:port
    experiment: str = "tacotrain"
    run_name: str | None = None  # None: the run directory's name


class TrackConfig(Strict):
    """Where the one metrics stream goes; RUN/events.jsonl is always written."""

    tensorboard: bool = True  # RUN/tb
    mlflow: MlflowConfig = MlflowConfig()
    log_audio: bool = True  # Griffin-Lim audio of a free-running validation sentence


# Notifications. Secrets are deliberately *not* fields: the bot token and chat id come only from
# the environment variables TACOTRAIN_TELEGRAM_TOKEN and TACOTRAIN_TELEGRAM_CHAT_ID (extra="forbid"
# rejects a `token:` key in a YAML file instead of silently accepting it).


class TelegramConfig(Strict):
    """Telegram Bot API sink; active only when the token and chat id env vars are both set."""

    enabled: bool = True  # false: never send to Telegram even when the env vars are set
    # Bot API root; only changed for a self-hosted Bot API server or tests
    base_url: str = "https://api.telegram.org"
    send_photos: bool = True  # events with an image (alignment plot) go out as sendPhoto


class WebhookConfig(Strict):
    """Generic webhook sink: each message is POSTed as one JSON object."""

    # http(s) URL receiving the JSON; None: no webhook. A URL that embeds a secret belongs in the
    # TACOTRAIN_WEBHOOK_URL environment variable instead (it takes precedence over this field)
    url: str | None = None


class NotifyConfig(Strict):
    """How rare, deduplicated and severity-ranked the alerts are, and how they are delivered."""

    # events below this severity are dropped silently (not even counted in the digest)
    min_severity: Literal["info", "warning", "critical"] = "info"
    # a non-critical event whose key was *sent* less than this many seconds ago is suppressed
    dedupe_seconds: float = Field(600.0, ge=0.0)
    # global token bucket: long-run ceiling of messages per minute, all keys together ...
    rate_limit_per_minute: float = Field(6.0, gt=0.0)
    # ... and how many may go out back to back when the bucket is full
    burst: int = Field(3, ge=1)
    # at most one "N events suppressed" summary per this many seconds (plus one at close)
    digest_interval_seconds: float = Field(300.0, ge=0.0)
    # messages waiting for the sender thread; when full, new messages are dropped (and counted)
    queue_size: int = Field(100, ge=1)
    # extra attempts after the first for retryable failures (HTTP 429, 5xx, connection errors)
    max_retries: int = Field(4, ge=0)
    # first retry waits this long, each further retry twice as long (HTTP 429 uses retry_after)
    retry_backoff_seconds: float = Field(1.0, ge=0.0)
    timeout_seconds: float = Field(10.0, gt=0.0)  # per HTTP request
    # training events: warn when free-running validation is still not aligned at this step ...
    no_alignment_step: int = Field(5000, ge=1)
    # ... and when validation mel loss has risen this many validation rounds in a row
    val_rising_rounds: int = Field(3, ge=2)
    telegram: TelegramConfig = TelegramConfig()
    webhook: WebhookConfig = WebhookConfig()


class DemoConfig(Strict):
    # the voice of the mini corpus and of the held-out ground truth: kokoro (natural-sounding,
    # the `natural` extra), espeak (espeak-ng: robotic, fast) or auto (kokoro for English,
    # espeak for Russian: no Russian recogniser ships offline to judge a natural voice by)
    engine: Literal["auto", "kokoro", "espeak"] = "auto"
    style: str = "jm_kumo"  # Kokoro voice style (data/kokoro.py)
    corpus_size: int | None = Field(None, ge=10)  # clips; None: 600 (kokoro) or 200 (espeak)
    corpus_seed: int = 0
    time_budget_minutes: float = Field(45.0, gt=0.0)  # training stops here if not aligned
    # held-out sentences judged at the end (their ground truth spoken by the corpus's voice);
    # empty: heldout_sentences sentences that are not in the corpus, from data/english.FREE_FORM
    # (English kokoro: hand-written, outside the corpus's frames) or from the mini-corpus
    # generator with another seed (otherwise)
    sentences: list[str] = []
    heldout_sentences: int | None = Field(None, ge=1)  # None: 30 (kokoro) or 8 (espeak)
    # share of the held-out sentences that must pass the item verdict; where a recogniser
    # exists the held-out round must also be intelligible (alignment.max_wer_ratio)
    heldout_share: float = Field(0.9, gt=0.0, le=1.0)
    language: Literal["en", "ru"] = "en"  # mini corpus, held-out sentences and their voice
    # prepare the corpus as espeak-ng phonemes (text.phonemes): a phoneme voice reads the mini
    # corpus sooner than a letter voice (benchmarks/RESULTS.md, "Variants to the verdict")
    phonemes: bool = True

    def voice(self) -> str:
        """The engine in effect (``auto`` resolved)."""
        if self.engine != "auto":
            return self.engine
        return "kokoro" if self.language == "en" else "espeak"

    def size(self) -> int:
        return self.corpus_size or (600 if self.voice() == "kokoro" else 200)

    def heldout_count(self) -> int:
        return self.heldout_sentences or (30 if self.voice() == "kokoro" else 8)


class SynthConfig(Strict):
    """``Synthesizer.synthesize``: long text is read sentence by sentence (text/sentences.py)."""

    # a sentence longer than this (raw characters) is cut at ; : , or a space; about the length
    # of a training clip's transcript, so every piece is as long as what the model learnt
    max_sentence_chars: int = Field(150, ge=10)
    sentence_pause_seconds: float = Field(0.3, ge=0.0, le=10.0)  # silence between pieces


class ServeConfig(Strict):
    """``tacotrain serve``: the limits that keep one web page from taking the machine down."""

    # longer text is refused with 422 before it reaches a model (a page of text takes minutes)
    max_text_chars: int = Field(500, ge=1)
    # requests that may wait per model besides those being synthesised; one more: 503
    queue_size: int = Field(4, ge=0)
    # syntheses running at once per model (its worker threads); each draws from a generator of
    # its own, so a seed gives the same audio however the threads interleave
    concurrent_per_model: int = Field(1, ge=1)
    # queue wait + synthesis; after this the request answers 504 (a queued one is dropped, a
    # running synthesis stopped at its next decoder step or Griffin-Lim iteration)
    request_timeout_seconds: float = Field(120.0, gt=0.0)
    max_models: int = Field(2, ge=1)  # models kept loaded; the least recently used is unloaded
    max_results: int = Field(50, ge=1)  # results (wav + images) kept for their URLs; oldest go
    retry_after_seconds: int = Field(5, ge=1)  # the Retry-After header of a 503 (queue full)
    # on Ctrl-C / SIGTERM, requests still open after this many seconds are cut off
    shutdown_grace_seconds: int = Field(5, ge=0)


class ServeSettings(Strict):
    """What ``tacotrain serve --set serve.KEY=VALUE`` validates: the ``serve`` section alone."""

    serve: ServeConfig = ServeConfig()


class Config(Strict):
    """Everything ``tacotrain train`` needs besides the prepared data (which carries audio/text)."""

    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    alignment: AlignmentConfig = AlignmentConfig()
    guard: GuardConfig = GuardConfig()
    early_stop: EarlyStopConfig = EarlyStopConfig()
    track: TrackConfig = TrackConfig()
    notify: NotifyConfig = NotifyConfig()
    demo: DemoConfig = DemoConfig()
    synth: SynthConfig = SynthConfig()

    @classmethod
    def from_saved(cls, data: dict[str, Any]) -> Config:
        """The config stored in a checkpoint. Keys this version does not read are dropped:
        ``early_stop.*.min_diagonality`` (the verdict decides alignment) and the thresholds in
        decoder steps ``alignment.read_threshold`` and ``alignment.stall_min_steps``, which a
        config without the audio settings cannot convert to ``read_ms`` and ``stall_min_ms``:
        those keep their defaults, and a non-default step threshold is named in a warning."""
        data = copy.deepcopy(data)
        for phase in ("alignment", "learning", "fine_tuning"):
            data.get("early_stop", {}).get(phase, {}).pop("min_diagonality", None)
        for old, new, default in (("read_threshold", "read_ms", 0.25),
                                  ("stall_min_steps", "stall_min_ms", 10.0)):
            value = data.get("alignment", {}).pop(old, None)
            if value is not None and value != default:
                log.warning("alignment.%s = %s (decoder steps) in a saved config is no longer "
                            "read: alignment.%s (milliseconds) applies instead", old, value, new)
        return cls.model_validate(data)

    @model_validator(mode="after")
    def _check(self) -> Config:
        ga_max = self.loss.guided_attention.max_weight
        for iv in self.guard.interventions:
            if iv.parameter == "loss.guided_attention.weight" and iv.max > ga_max:
                raise ValueError(f"guard.interventions {iv.name!r}: max {iv.max} exceeds "
                                 f"loss.guided_attention.max_weight ({ga_max})")
        return self


# ---------------------------------------------------------------------------------------------
# generic helpers: YAML in/out, dotted overrides


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``tree['a']['b'] = value`` for ``dotted == 'a.b'``, creating dicts on the way."""
    parts = dotted.split(".")
    if not all(parts):
        raise ConfigError(f"invalid key path {dotted!r}")
    node = tree
    for p in parts[:-1]:
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{dotted!r}: {p!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``'train.lr=3e-4'`` -> ``('train.lr', 0.0003)``; the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.path=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc})") from exc
    return key.strip(), value


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``over`` into a copy of ``base``."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _sibling_keys(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> list[str]:
    """The keys valid beside the one at ``loc`` (empty where the path leaves the models)."""
    for part in loc[:-1]:
        field = model.model_fields.get(str(part)) if model else None
        model = field.annotation if field else None
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return []
    return list(model.model_fields) if model else []


def format_validation_error(exc: ValidationError, source: str,
                            model: type[BaseModel] | None = None) -> str:
    lines = [f"invalid configuration ({source}):"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(root)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            known = _sibling_keys(model, tuple(err["loc"]))
            close = difflib.get_close_matches(str(err["loc"][-1]), known, n=3, cutoff=0.5)
            prefix = ".".join(str(p) for p in err["loc"][:-1])
            msg = "unknown key (check the spelling"
            if close:
                msg += "; did you mean " + " or ".join(
                    f"{prefix}.{c}" if prefix else c for c in close) + "?"
            msg += "; every key and its default: tacotrain/config.py)"
        lines.append(f"  {key}: {msg}")
    return "\n".join(lines)


def validate_as(model: type[BaseModel], data: dict[str, Any], source: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source, model)) from None


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``: plain parameter names for trackers."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of sections")
    return data


def to_yaml(model: BaseModel) -> str:
    return yaml.safe_dump(model.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def build(model: type[BaseModel], base: dict[str, Any], overrides: list[str], source: str) -> Any:
    """Validate ``base`` with ``--set`` style overrides applied on top."""
    # start from the model's defaults so that a partial section or a --set into a nested
    # model (e.g. early_stop.alignment.patience) keeps the other fields' defaults
    data = merge(model().model_dump(mode="json"), base)
    for text in overrides:
        key, value = parse_override(text)
        set_dotted(data, key, value)
    return validate_as(model, data, source + (f" with overrides {overrides}" if overrides else ""))


PRESETS_DIR = Path(__file__).resolve().parent / "presets"


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def load_config(config_or_preset: str | Path, overrides: list[str] | None = None) -> Config:
    """A training :class:`Config` from a preset name (``default``, ``small``, ``tiny``) or a
    YAML path, with ``key.path=value`` overrides applied and everything validated."""
    name = str(config_or_preset)
    if name in preset_names():
        base, source = load_yaml(PRESETS_DIR / f"{name}.yaml"), f"preset {name}"
    elif Path(name).suffix in (".yaml", ".yml") or Path(name).exists():
        base, source = load_yaml(name), name
    else:
        raise ConfigError(f"{name!r} is neither a preset ({', '.join(preset_names())}) "
                          "nor a YAML file")
    return build(Config, base, overrides or [], source)
