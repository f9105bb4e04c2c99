"""Synthesis safeguards (model.infer_*): each one on a runaway decoder whose gate never fires
and whose attention is scripted to jump back, skip ahead, stall or rest on the last token.
Exact step counts with the safeguard on, and the step cap with it off."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from tacotrain.config import ModelConfig
from tacotrain.model import Tacotron2
from tacotrain.model.tacotron2 import STOP_REASONS, InferenceOutput

N_SYMBOLS, N_MELS, R = 30, 16, 2
LENGTHS = [8, 6]


def make_model(gate_bias: float = -100.0, **over: object) -> Tacotron2:
    cfg = ModelConfig.model_validate({
        "symbols_embedding_dim": 32, "encoder_embedding_dim": 32, "attention_rnn_dim": 64,
        "attention_dim": 32, "attention_location_n_filters": 8,
        "attention_location_kernel_size": 7, "prenet_dim": 32, "decoder_rnn_dim": 64,
        "postnet_embedding_dim": 32, "n_frames_per_step": R, **over})
    torch.manual_seed(0)
    model = Tacotron2(cfg, N_SYMBOLS, N_MELS).eval()
    with torch.no_grad():  # the gate never fires (or, with a positive bias, always does)
        model.decoder.gate_layer.linear_layer.weight.zero_()
        model.decoder.gate_layer.linear_layer.bias.fill_(gate_bias)
    return model


Script = Callable[[int, Tensor], Tensor]  # (step, text lengths [B]) -> wanted token [B]


def script(model: Tacotron2, wanted: Script) -> None:
    """Make the attention peak on ``wanted(step, lengths)``: energies -10 |n - wanted|, so among
    the tokens the decoder allows it goes to the one nearest the wanted token."""
    lengths = torch.tensor(LENGTHS)

    def adjust(energies: Tensor, state) -> Tensor:
        step = round(float(state.cum_weights[0].sum()))  # each earlier step added 1
        tokens = torch.arange(energies.size(1))[None, :]
        return -10.0 * (tokens - wanted(step, lengths)[:, None]).abs().float()

    model.decoder.attention_layer.adjust = adjust


def synth(model: Tacotron2) -> InferenceOutput:
    text = torch.randint(1, N_SYMBOLS, (len(LENGTHS), max(LENGTHS)),
                         generator=torch.Generator().manual_seed(0))
    text[1, LENGTHS[1]:] = 0
    return model.infer(text, torch.tensor(LENGTHS))


def path(out: InferenceOutput, i: int) -> list[int]:
    """Item i's attention argmax at each of its decoder steps."""
    return out.alignments[i, : int(out.dec_lengths[i])].argmax(-1).tolist()


def check_cut(out: InferenceOutput, dec: list[int], reason: str) -> None:
    assert out.dec_lengths.tolist() == dec
    assert out.mel_lengths.tolist() == [R * d for d in dec]
    assert out.stop_reasons() == [reason] * len(dec)
    assert out.stopped_by_gate.tolist() == [False] * len(dec)  # never counted as a gate stop


def jump_back(step: int, lengths: Tensor) -> Tensor:
    """Reads tokens 0..3, then jumps back to the start for good (a repeat)."""
    return torch.full_like(lengths, step if step < 4 else 0)


def skip_to_end(step: int, lengths: Tensor) -> Tensor:
    return lengths - 1


def read_then_rest(step: int, lengths: Tensor) -> Tensor:
    """One token per step, then rests on the last token, the gate never firing."""
    return (lengths - 1).clamp(max=step)


def stuck(step: int, lengths: Tensor) -> Tensor:
    return torch.zeros_like(lengths)


def test_window_off_lets_attention_jump_back_to_the_step_cap() -> None:
    model = make_model(max_decoder_steps_per_token=3.0)  # caps 24 and 18 steps
    script(model, jump_back)
    out = synth(model)
    check_cut(out, [24, 18], "step_limit")
    assert path(out, 0) == [0, 1, 2, 3] + [0] * 20


@pytest.mark.parametrize(("wanted", "expected"), [
    (jump_back, ([0, 1, 2, 3] + [3] * 20, [0, 1, 2, 3] + [3] * 14)),  # holds, no way back
    (skip_to_end, ([2, 4, 6] + [7] * 21, [2, 4] + [5] * 16)),  # at most 2 tokens a step
])
def test_window_keeps_attention_forward_and_near(wanted: Script, expected: tuple) -> None:
    model = make_model(max_decoder_steps_per_token=3.0, infer_attention_window=2)
    script(model, wanted)
    out = synth(model)
    check_cut(out, [24, 18], "step_limit")  # the window corrects, it does not stop
    assert (path(out, 0), path(out, 1)) == expected
    for i in range(2):  # no weight at all outside p..p+2, p the previous argmax
        prev = 0
        for k, p in enumerate(path(out, i)):
            w = out.alignments[i, k]
            assert float(w[:prev].sum()) == 0.0 and float(w[prev + 3:].sum()) == 0.0
            prev = p


def test_stop_after_last_token() -> None:
    model = make_model(max_decoder_steps_per_token=3.0)
    script(model, read_then_rest)
    check_cut(synth(model), [24, 18], "step_limit")  # off: rests on the last token to the cap
    model = make_model(max_decoder_steps_per_token=3.0, infer_stop_after_last_token=3)
    script(model, read_then_rest)
    out = synth(model)
    # the last token (7 and 5) is reached at steps 7 and 5; the third step resting there ends
    check_cut(out, [10, 8], "last_token")
    assert path(out, 0) == list(range(8)) + [7, 7]


@pytest.mark.parametrize(("cap", "per_token"), [(3.0, 4), (2.5, 3)])
def test_dwell_cap_pushes_a_stuck_attention_forward(cap: float, per_token: int) -> None:
    model = make_model(max_decoder_steps_per_token=5.0)  # caps 40 and 30 steps
    script(model, stuck)
    out = synth(model)
    check_cut(out, [40, 30], "step_limit")
    assert path(out, 0) == [0] * 40
    model = make_model(max_decoder_steps_per_token=5.0, infer_max_steps_per_token=cap)
    script(model, stuck)
    out = synth(model)
    # each token gets the first steps beyond the cap, then the attention must move on;
    # stuck on the last token as long, the item stops
    check_cut(out, [per_token * n for n in LENGTHS], "dwell")
    assert path(out, 0) == [t for t in range(8) for _ in range(per_token)]


def test_last_token_stop_comes_before_the_dwell_stop() -> None:
    model = make_model(max_decoder_steps_per_token=5.0, infer_max_steps_per_token=3.0,
                       infer_stop_after_last_token=2)
    script(model, stuck)
    out = synth(model)
    # 4 steps per token up to the last (reached at steps 28 and 20), then 2 steps there
    check_cut(out, [30, 22], "last_token")


def test_gate_stop_wins_and_is_counted_as_gate() -> None:
    model = make_model(gate_bias=100.0, infer_attention_window=1, infer_max_steps_per_token=0.5,
                       infer_stop_after_last_token=1)
    script(model, stuck)
    out = synth(model)
    assert out.stop_reasons() == ["gate", "gate"]
    assert out.stopped_by_gate.tolist() == [True, True]
    assert out.dec_lengths.tolist() == [1, 1] and out.mel_lengths.tolist() == [1, 1]


@pytest.mark.parametrize("attention", ["location", "location_prior", "dca"])
def test_window_holds_for_every_attention_type(attention: str) -> None:
    """Untrained random attention, no script: the window bounds every step."""
    model = make_model(attention=attention, infer_attention_window=1, max_decoder_steps=15)
    out = synth(model)
    assert out.dec_lengths.tolist() == [15, 15]
    for i, n in enumerate(LENGTHS):
        prev = 0
        for k, p in enumerate(path(out, i)):
            w = out.alignments[i, k]
            assert prev <= p <= min(prev + 1, n - 1)
            assert float(w[:prev].sum()) == 0.0 and float(w[prev + 2:].sum()) == 0.0
            torch.testing.assert_close(w.sum(), torch.tensor(1.0))
            prev = p


def test_safeguards_leave_teacher_forcing_alone() -> None:
    guarded = make_model(infer_attention_window=1, infer_stop_after_last_token=1,
                         infer_max_steps_per_token=1.0)
    plain = make_model()
    text = torch.randint(1, N_SYMBOLS, (2, 8), generator=torch.Generator().manual_seed(0))
    mels = torch.randn(2, N_MELS, 12, generator=torch.Generator().manual_seed(1))
    args = (text, torch.tensor(LENGTHS), mels, torch.tensor([12, 9]))
    torch.manual_seed(2)  # the prenet keeps its dropout in eval mode
    out_guarded = guarded(*args)
    torch.manual_seed(2)
    for x, y in zip(out_guarded, plain(*args), strict=True):
        assert torch.equal(x, y)
    # while free-running differs: the window bounds the first step to tokens 0..1
    assert float(synth(guarded).alignments[:, 0, 2:].sum()) == 0.0
    assert float(synth(plain).alignments[:, 0, 2:].sum()) > 0.0


def test_stop_reasons_without_the_new_field() -> None:
    old = InferenceOutput(torch.zeros(2, N_MELS, 3), torch.tensor([3, 2]), torch.zeros(2, 3, 4),
                          torch.tensor([3, 2]), torch.tensor([True, False]))
    assert old.stop_reason is None and old.stop_reasons() == ["gate", "step_limit"]
    assert STOP_REASONS[:2] == ("gate", "step_limit")


def test_gate_is_heeded_only_near_the_end_of_the_text() -> None:
    model = make_model(gate_bias=100.0)  # a gate that fires at once: a stop in mid-sentence
    script(model, read_then_rest)
    out = synth(model)
    assert out.dec_lengths.tolist() == [1, 1] and out.stop_reasons() == ["gate", "gate"]
    model = make_model(gate_bias=100.0, infer_gate_last_tokens=2)
    script(model, read_then_rest)
    out = synth(model)
    # token k at step k: the gate counts from the second-last token on, at step len - 2
    assert out.dec_lengths.tolist() == [n - 1 for n in LENGTHS]
    assert out.stop_reasons() == ["gate", "gate"] and out.stopped_by_gate.tolist() == [True] * 2
    assert out.mel_lengths.tolist() == [R * (n - 2) + 1 for n in LENGTHS]  # first frame fired
    assert path(out, 0) == list(range(LENGTHS[0] - 1))
