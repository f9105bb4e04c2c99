"""HiFi-GAN vocoder: released file format, the forward pass against an independent functional
implementation, ``tacotrain vocode`` and ``synth --save-mel``.

The generators here have random weights in the released format (weight_g / weight_v per conv);
the reference forward is written out with F.conv1d / F.conv_transpose1d on weights folded from
the raw state dict, sharing no code with tacotrain.audio.hifigan.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from tacotrain.audio import (
    GriffinLim,
    HifiGan,
    HifiGanError,
    Vocoder,
    VocoderError,
    load_audio,
    load_vocoder,
    mel_spectrogram,
    save_wav,
)
from tacotrain.audio.hifigan import fold_weight_norm
from tacotrain.cli import main
from tacotrain.config import AudioConfig
from tacotrain.infer.checkpoint import save_checkpoint
from tacotrain.train.trainer import Trainer

from conftest import tiny_cfg, tone, write

_COMMON = {"num_mels": 80, "num_freq": 1025, "n_fft": 1024, "hop_size": 256, "win_size": 1024,
           "sampling_rate": 22050, "fmin": 0, "fmax": 8000, "fmax_for_loss": None,
           "segment_size": 8192, "batch_size": 16, "learning_rate": 0.0002, "adam_b1": 0.8,
           "adam_b2": 0.99, "lr_decay": 0.999, "seed": 1234, "num_gpus": 0, "num_workers": 4,
           "dist_config": {"dist_backend": "nccl", "dist_url": "tcp://localhost:54321",
                           "world_size": 1}}
# the released config_v1/v2/v3.json (generator part as published, training keys kept: ignored)
RELEASED = {
    "v1": {"resblock": "1", "upsample_rates": [8, 8, 2, 2],
           "upsample_kernel_sizes": [16, 16, 4, 4], "upsample_initial_channel": 512,
           "resblock_kernel_sizes": [3, 7, 11],
           "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]], **_COMMON},
    "v2": {"resblock": "1", "upsample_rates": [8, 8, 2, 2],
           "upsample_kernel_sizes": [16, 16, 4, 4], "upsample_initial_channel": 128,
           "resblock_kernel_sizes": [3, 7, 11],
           "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]], **_COMMON},
    "v3": {"resblock": "2", "upsample_rates": [8, 8, 4],
           "upsample_kernel_sizes": [16, 16, 8], "upsample_initial_channel": 256,
           "resblock_kernel_sizes": [3, 5, 7],
           "resblock_dilation_sizes": [[1, 2], [2, 6], [3, 12]], **_COMMON},
}
SMALL_CHANNELS = {"v1": 32, "v2": 16, "v3": 16}  # same structure, fewer channels: fast


def small(version: str, **changes: Any) -> dict[str, Any]:
    return {**RELEASED[version], "upsample_initial_channel": SMALL_CHANNELS[version], **changes}


def released_state(h: dict[str, Any], seed: int = 0) -> dict[str, torch.Tensor]:
    """A random generator state dict with the released names and weight-norm shapes.

    ``g`` is drawn around 1 (a conv then roughly keeps its input's scale), so the output is
    neither silent nor stuck at tanh's +-1.
    """
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}

    def conv(name: str, v_shape: tuple[int, ...], n_out: int) -> None:
        state[f"{name}.weight_g"] = 0.4 + 0.8 * torch.rand(v_shape[0], 1, 1, generator=gen)
        state[f"{name}.weight_v"] = torch.randn(*v_shape, generator=gen)
        state[f"{name}.bias"] = 0.05 * torch.randn(n_out, generator=gen)

    c = h["upsample_initial_channel"]
    conv("conv_pre", (c, h["num_mels"], 7), c)
    n_k = len(h["resblock_kernel_sizes"])
    for i, k in enumerate(h["upsample_kernel_sizes"]):
        # ConvTranspose1d weight: [in, out, k]; weight norm dim 0 -> g per input channel
        conv(f"ups.{i}", (c >> i, c >> (i + 1), k), c >> (i + 1))
    for i in range(len(h["upsample_rates"])):
        ch = c >> (i + 1)
        for j, k in enumerate(h["resblock_kernel_sizes"]):
            r = f"resblocks.{i * n_k + j}"
            lists = ("convs1", "convs2") if h["resblock"] == "1" else ("convs",)
            for lst in lists:
                for m in range(len(h["resblock_dilation_sizes"][j])):
                    conv(f"{r}.{lst}.{m}", (ch, ch, k), ch)
    conv("conv_post", (1, c >> len(h["upsample_rates"]), 7), 1)
    return state


def write_generator(root: Path, h: dict[str, Any], seed: int = 0,
                    state: dict[str, Any] | None = None) -> Path:
    """``root/g_00000000`` and ``root/config.json``, as a release lays them out."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps(h, indent=4))
    path = root / "g_00000000"
    torch.save({"generator": released_state(h, seed) if state is None else state}, path)
    return path


def reference(state: dict[str, torch.Tensor], h: dict[str, Any], mel: torch.Tensor
              ) -> torch.Tensor:
    """The published generator forward, functional: ``[num_mels, T] -> [T * hop]``."""

    def weight(name: str) -> torch.Tensor:
        v, g = state[f"{name}.weight_v"], state[f"{name}.weight_g"]
        norm = torch.sqrt((v * v).sum(dim=tuple(range(1, v.dim())), keepdim=True))
        return g * v / norm

    def conv(x: torch.Tensor, name: str, dilation: int = 1) -> torch.Tensor:
        w = weight(name)
        pad = (w.shape[-1] * dilation - dilation) // 2
        return F.conv1d(x, w, state[f"{name}.bias"], dilation=dilation, padding=pad)

    x = conv(mel[None], "conv_pre")
    n_k = len(h["resblock_kernel_sizes"])
    for i, (u, k) in enumerate(zip(h["upsample_rates"], h["upsample_kernel_sizes"],
                                   strict=True)):
        x = F.leaky_relu(x, 0.1)
        x = F.conv_transpose1d(x, weight(f"ups.{i}"), state[f"ups.{i}.bias"], stride=u,
                               padding=(k - u) // 2)
        total = None
        for j, dil in enumerate(h["resblock_dilation_sizes"]):
            r, y = f"resblocks.{i * n_k + j}", x
            for m, d in enumerate(dil):
                if h["resblock"] == "1":
                    t = conv(F.leaky_relu(y, 0.1), f"{r}.convs1.{m}", d)
                    y = y + conv(F.leaky_relu(t, 0.1), f"{r}.convs2.{m}", 1)
                else:
                    y = y + conv(F.leaky_relu(y, 0.1), f"{r}.convs.{m}", d)
            total = y if total is None else total + y
        x = total / n_k
    x = conv(F.leaky_relu(x, 0.01), "conv_post")
    return torch.tanh(x)[0, 0]


def pcm16(x: np.ndarray) -> np.ndarray:
    """The released inference's int16: ``(audio * 32768).astype(int16)``, clipped."""
    return np.clip(x.astype(np.float32) * np.float32(32768), -32768, 32767).astype(np.int16)


def random_mel(frames: int, seed: int = 0, n_mels: int = 80) -> torch.Tensor:
    """A plausible natural-log mel: values in about [-11.5, 1]."""
    gen = torch.Generator().manual_seed(seed)
    return -5.0 + 2.0 * torch.randn(n_mels, frames, generator=gen)


@pytest.mark.parametrize("version", ["v1", "v2", "v3"])
def test_released_configs_load_and_match_the_reference(version: str, tmp_path: Path) -> None:
    h = small(version)
    path = write_generator(tmp_path / version, h, seed=1)
    voc = load_vocoder(f"hifigan:{path}", AudioConfig())
    assert isinstance(voc, HifiGan) and isinstance(voc, Vocoder)
    assert voc.sample_rate == 22050
    for frames in (1, 13):
        mel = random_mel(frames, seed=frames)
        wav = voc(mel)
        assert wav.dtype == np.float32 and wav.shape == (frames * 256,)
        ref = reference(released_state(h, seed=1), h, mel).numpy()
        assert ref.shape == wav.shape
        np.testing.assert_allclose(wav, ref, atol=1e-5, rtol=0)
    # a signal, not silence or a square wave, so the comparison above means something
    assert 0.02 < float(np.std(wav)) and float(np.mean(np.abs(wav) > 0.999)) < 0.5


def test_released_v1_shapes(tmp_path: Path) -> None:
    h = RELEASED["v1"]
    state = released_state(h, seed=2)
    path = write_generator(tmp_path, h, state=state)
    voc = HifiGan.load(path)
    # every weight_v and bias of the file, folded: V1's 13.9 M
    n_file = sum(t.numel() for k, t in state.items() if not k.endswith("weight_g"))
    assert sum(p.numel() for p in voc.generator.parameters()) == n_file == 13_926_017
    mel = random_mel(6, seed=3)
    wav = voc(mel)
    assert wav.shape == (6 * 256,)
    np.testing.assert_allclose(wav, reference(state, h, mel).numpy(), atol=1e-5, rtol=0)


def test_fold_equals_torch_weight_norm() -> None:
    """dim=0 weight norm of Conv1d ([out, in, k]) and ConvTranspose1d ([in, out, k])."""
    from torch.nn.utils.parametrizations import weight_norm

    torch.manual_seed(0)
    for conv in (torch.nn.Conv1d(6, 4, 5), torch.nn.ConvTranspose1d(6, 4, 8, stride=4)):
        wn = weight_norm(conv, dim=0)
        g = torch.rand_like(wn.parametrizations.weight.original0) + 0.5
        v = torch.randn_like(wn.parametrizations.weight.original1)
        with torch.no_grad():
            wn.parametrizations.weight.original0.copy_(g)
            wn.parametrizations.weight.original1.copy_(v)
        assert g.shape == (6 if isinstance(conv, torch.nn.ConvTranspose1d) else 4, 1, 1)
        torch.testing.assert_close(fold_weight_norm(g, v), wn.weight.detach(), rtol=1e-6,
                                   atol=1e-7)


def test_odd_kernel_minus_rate_still_gives_frames_times_hop(tmp_path: Path) -> None:
    h = small("v3", upsample_kernel_sizes=[16, 15, 8])  # 15 - 8 odd: one extra sample there
    path = write_generator(tmp_path, h)
    wav = HifiGan.load(path)(random_mel(5))
    ref = reference(released_state(h), h, random_mel(5)).numpy()
    assert wav.shape == (5 * 256,) and ref.shape[0] > 5 * 256
    np.testing.assert_allclose(wav, ref[: 5 * 256], atol=1e-5, rtol=0)


def test_vocode_mel_writes_the_reference_int16(tmp_path: Path, capsys) -> None:
    h = small("v3")
    path = write_generator(tmp_path / "voc", h, seed=4)
    mel = random_mel(40, seed=5)
    np.save(tmp_path / "m.npy", mel.numpy())
    out = tmp_path / "out" / "v.wav"
    code = main(["vocode", "--mel", str(tmp_path / "m.npy"), "--vocoder", f"hifigan:{path}",
                 "--out", str(out), "--device", "cpu"])
    assert code == 0
    assert capsys.readouterr().out.strip() == (
        f"{out}: 40 frames, {40 * 256} samples, {40 * 256 / 22050:.2f} s at 22050 Hz")
    info = sf.info(str(out))
    assert info.subtype == "PCM_16" and info.samplerate == 22050
    got, _ = sf.read(str(out), dtype="int16")
    expected = pcm16(reference(released_state(h, seed=4), h, mel).numpy())
    assert got.shape == expected.shape == (40 * 256,)
    assert int(np.abs(got.astype(np.int32) - expected).max()) <= 1
    # a mel saved as a batch of one [1, n_mels, T] reads the same
    np.save(tmp_path / "m3.npy", mel.numpy()[None])
    assert main(["vocode", "--mel", str(tmp_path / "m3.npy"), "--vocoder", f"hifigan:{path}",
                 "--out", str(tmp_path / "v3.wav"), "--device", "cpu"]) == 0
    assert np.array_equal(sf.read(str(tmp_path / "v3.wav"), dtype="int16")[0], got)


def test_vocode_wav_goes_through_our_front_end(tmp_path: Path, tiny_data: Path,
                                               capsys) -> None:
    path = write_generator(tmp_path / "voc", small("v2"), seed=6)
    src = write(tmp_path / "in.wav", tone(0.5, seed=3))
    mel = mel_spectrogram(load_audio(src, 22050).samples, AudioConfig())  # [80, 1 + S // 256]
    expected = pcm16(HifiGan.load(path)(mel))
    for extra in ([], ["--data", str(tiny_data)]):
        out = tmp_path / "out.wav"
        code = main(["vocode", "--wav", str(src), "--vocoder", f"hifigan:{path}", "--out",
                     str(out), "--device", "cpu", *extra])
        assert code == 0
        frames = 1 + int(0.5 * 22050) // 256
        assert f"{frames} frames, {frames * 256} samples" in capsys.readouterr().out
        assert np.array_equal(sf.read(str(out), dtype="int16")[0], expected)
    # Griffin-Lim by default
    assert main(["vocode", "--wav", str(src), "--out", str(out), "--device", "cpu"]) == 0
    assert f"{(frames - 1) * 256} samples" in capsys.readouterr().out


def test_mismatched_mel_settings_are_refused(tmp_path: Path, capsys) -> None:
    path = write_generator(tmp_path, small("v1", num_mels=100))
    with pytest.raises(ValueError, match=r"num_mels 100 but the model's audio.n_mels is 80"):
        load_vocoder(f"hifigan:{path}", AudioConfig())
    wav = tmp_path / "in.wav"
    save_wav(wav, 0.1 * np.sin(np.arange(4096) / 10.0).astype(np.float32), 22050)
    code = main(["vocode", "--wav", str(wav), "--vocoder", f"hifigan:{path}",
                 "--out", str(tmp_path / "o.wav")])  # our front-end makes 80 mels
    err = capsys.readouterr().err
    assert code == 1 and "num_mels 100" in err and "n_mels is 80" in err
    assert not (tmp_path / "o.wav").exists()
    # a --mel file without --data is the generator's own mel: its 100 bands are what it reads
    np.save(tmp_path / "m100.npy", random_mel(4, n_mels=100).numpy())
    assert main(["vocode", "--mel", str(tmp_path / "m100.npy"), "--vocoder", f"hifigan:{path}",
                 "--out", str(tmp_path / "o.wav"), "--device", "cpu"]) == 0
    assert sf.read(tmp_path / "o.wav")[0].shape == (4 * 256,)
    # rate and hop are named together
    path = write_generator(tmp_path / "b", small("v3", sampling_rate=24000,
                                                 upsample_rates=[8, 8, 5], hop_size=320))
    with pytest.raises(VocoderError) as exc:
        load_vocoder(f"hifigan:{path}", AudioConfig())
    assert "sampling_rate 24000" in str(exc.value) and "sample_rate is 22050" in str(exc.value)
    assert "hop_size 320" in str(exc.value) and "hop_length is 256" in str(exc.value)


def test_files_not_in_the_released_format_are_refused(tmp_path: Path, capsys) -> None:
    h = small("v3")
    path = write_generator(tmp_path, h)
    do_file = tmp_path / "do_00000000"
    torch.save({"mpd": {"x": torch.zeros(1)}, "msd": {}, "steps": 10}, do_file)
    with pytest.raises(HifiGanError, match=r"no 'generator' entry \(its keys are mpd, msd, "
                                           r"steps\)"):
        HifiGan.load(do_file, tmp_path / "config.json")
    code = main(["vocode", "--mel", str(tmp_path / "x.npy"), "--vocoder", f"hifigan:{do_file}",
                 "--vocoder-config", str(tmp_path / "config.json"), "--out",
                 str(tmp_path / "o.wav")])
    assert code == 1 and "no 'generator' entry" in capsys.readouterr().err

    state = released_state(h)
    del state["conv_post.weight_g"]
    state["conv_post.weight"] = torch.zeros(1, 2, 7)
    bad = write_generator(tmp_path / "bad", h, state=state)
    with pytest.raises(HifiGanError, match=r"missing conv_post.weight_g; unexpected "
                                           r"conv_post.weight \(weight-normed"):
        HifiGan.load(bad)
    # a V3 (ResBlock2) file read with a V1-style config
    with pytest.raises(HifiGanError, match=r"missing resblocks.0.convs1.0.bias"):
        HifiGan.load(path, write_config(tmp_path / "c1.json", {**h, "resblock": "1",
                                                               "resblock_dilation_sizes":
                                                               [[1, 3, 5]] * 3}))
    # same names, other channel count
    with pytest.raises(HifiGanError, match=r"conv_pre.weight_v \[16, 80, 7\] \(config gives "
                                           r"\[32, 80, 7\]\)"):
        HifiGan.load(path, write_config(tmp_path / "c2.json",
                                        {**h, "upsample_initial_channel": 32}))
    (tmp_path / "junk").write_bytes(b"not a torch file at all")
    with pytest.raises(HifiGanError, match="cannot load it as a torch file"):
        HifiGan.load(tmp_path / "junk", tmp_path / "config.json")
    with pytest.raises(HifiGanError, match="config.json: not found"):
        HifiGan.load(tmp_path / "bad" / "nowhere" / "g")
    with pytest.raises(HifiGanError, match="missing key.*upsample_rates"):
        HifiGan.load(path, write_config(tmp_path / "c3.json", {"resblock": "1"}))
    with pytest.raises(HifiGanError, match=r"multiply to 512 but hop_size is 256"):
        HifiGan.load(path, write_config(tmp_path / "c4.json", {**h, "upsample_rates": [8, 8, 8]}))


def write_config(path: Path, h: dict[str, Any]) -> Path:
    path.write_text(json.dumps(h))
    return path


def test_vocoder_names(tmp_path: Path) -> None:
    cfg = AudioConfig()
    assert isinstance(load_vocoder(None, cfg), GriffinLim)
    path = write_generator(tmp_path, small("v3"))
    with pytest.raises(VocoderError, match=re.escape(f"'hifigan:{path}'")):
        load_vocoder(str(path), cfg)  # a bare path: the prefix is named
    with pytest.raises(VocoderError, match="vocoder is Griffin-Lim"):
        load_vocoder("griffin_lim", cfg, config_path=tmp_path / "config.json")
    # config beside the file, or given elsewhere
    other = tmp_path / "elsewhere.json"
    other.write_text((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").unlink()
    with pytest.raises(HifiGanError, match="--vocoder-config"):
        load_vocoder(f"hifigan:{path}", cfg)
    assert load_vocoder(f"hifigan:{path}", cfg, config_path=other).sample_rate == 22050


def test_vocode_bad_input_exits_1_a_usage_error_2(tmp_path: Path, capsys) -> None:
    np.save(tmp_path / "m40.npy", random_mel(10, n_mels=40).numpy())
    code = main(["vocode", "--mel", str(tmp_path / "m40.npy"), "--out", str(tmp_path / "o.wav")])
    assert code == 1 and "expected a log-mel of shape [80, T]" in capsys.readouterr().err
    code = main(["vocode", "--mel", str(tmp_path / "none.npy"), "--out", str(tmp_path / "o.wav")])
    assert code == 1 and "none.npy: no such mel file" in capsys.readouterr().err
    code = main(["vocode", "--wav", str(tmp_path / "none.wav"), "--out", str(tmp_path / "o.wav")])
    assert code == 1 and "none.wav" in capsys.readouterr().err
    code = main(["vocode", "--out", str(tmp_path / "o.wav")])
    assert code == 2 and "exactly one of --mel or --wav" in capsys.readouterr().err
    assert not (tmp_path / "o.wav").exists()


def test_synth_save_mel_is_what_was_vocoded(tiny_data: Path, tmp_path: Path, capsys) -> None:
    trainer = Trainer(tiny_cfg("model.max_decoder_steps=30"), tiny_data, tmp_path / "run",
                      progress=False)
    ckpt = tmp_path / "ck.pt"
    save_checkpoint(ckpt, trainer.state().to_payload())
    h = small("v3")
    gen = write_generator(tmp_path / "voc", h, seed=7)
    wav, mel_path = tmp_path / "s" / "a.wav", tmp_path / "s" / "a.npy"
    code = main(["synth", "--checkpoint", str(ckpt), "--text", "a red boat.", "--out", str(wav),
                 "--device", "cpu", "--vocoder", f"hifigan:{gen}", "--save-mel", str(mel_path)])
    assert code == 0, capsys.readouterr().err
    info = json.loads(wav.with_suffix(".json").read_text())
    mel = np.load(mel_path)
    assert mel.dtype == np.float32 and mel.shape == (80, info["frames"])
    got = sf.read(str(wav), dtype="int16")[0]
    expected = pcm16(reference(released_state(h, seed=7), h, torch.from_numpy(mel)).numpy())
    assert got.shape == expected.shape == (info["frames"] * 256,)
    assert int(np.abs(got.astype(np.int32) - expected).max()) <= 1
    assert math.isclose(info["seconds"], round(info["frames"] * 256 / 22050, 3))
    # eval takes the same vocoder options (and refuses a mismatched one before any work)
    wrong = write_generator(tmp_path / "wrong", small("v3", num_mels=100))
    code = main(["eval", "--checkpoint", str(ckpt), "--data", str(tiny_data), "--out",
                 str(tmp_path / "eval"), "--device", "cpu", "--vocoder", f"hifigan:{wrong}"])
    assert code == 1 and "num_mels 100 but the model's audio.n_mels is 80" in (
        capsys.readouterr().err)
    code = main(["eval", "--checkpoint", str(ckpt), "--data", str(tiny_data), "--out",
                 str(tmp_path / "eval"), "--device", "cpu", "--vocoder", f"hifigan:{wrong}",
                 "--vocoder-config", str(tmp_path / "voc" / "config.json")])
    assert code == 1 and "conv_pre.weight_v [16, 100, 7] (config gives [16, 80, 7])" in (
        capsys.readouterr().err)
    assert not (tmp_path / "eval").exists()


def test_demo_checks_its_vocoder_before_any_work(tmp_path: Path, capsys) -> None:
    gen = write_generator(tmp_path / "voc", small("v3", hop_size=512, upsample_rates=[8, 8, 8],
                                                  upsample_kernel_sizes=[16, 16, 16]))
    code = main(["demo", "--out", str(tmp_path / "demo"), "--config", "tiny", "--vocoder",
                 f"hifigan:{gen}"])
    assert code == 1 and "hop_size 512 but the model's audio.hop_length is 256" in (
        capsys.readouterr().err)
    assert not (tmp_path / "demo").exists()
