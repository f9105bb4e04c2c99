"""Warm start from NVIDIA/tacotron2 and tacotrain checkpoints, safetensors export, from_pretrained,
and the package-level Python API.

The NVIDIA checkpoint is built here from NVIDIA's hparams, names and shapes written out by hand
(not from our model), with random weights, so a drift of our names or shapes from NVIDIA's
fails these tests.
"""

from __future__ import annotations

import argparse
import json
import string
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tacotrain.cli import main
from tacotrain.config import AudioConfig, ConfigError, load_config
from tacotrain.data.loader import PreparedData
from tacotrain.infer.checkpoint import load_checkpoint
from tacotrain.infer.pretrained import (
    NVIDIA_SYMBOLS,
    PretrainedError,
    check_nvidia_audio,
    export_model,
    load_pretrained,
    plan_warm_start,
    read_source,
)
from tacotrain.infer.synth import SynthesisError, Synthesizer
from tacotrain.model import Tacotron2
from tacotrain.train.trainer import Trainer, TrainError

from conftest import tiny_cfg

# NVIDIA/tacotron2 text/symbols.py, written out from its definition
ARPABET = ("AA AA0 AA1 AA2 AE AE0 AE1 AE2 AH AH0 AH1 AH2 AO AO0 AO1 AO2 AW AW0 AW1 AW2 AY AY0 "
           "AY1 AY2 B CH D DH EH EH0 EH1 EH2 ER ER0 ER1 ER2 EY EY0 EY1 EY2 F G HH IH IH0 IH1 IH2 "
           "IY IY0 IY1 IY2 JH K L M N NG OW OW0 OW1 OW2 OY OY0 OY1 OY2 P R S SH T TH UH UH0 UH1 "
           "UH2 UW UW0 UW1 UW2 V W Y Z ZH").split()
NV_SYMBOLS = (["_", "-"] + list("!'(),.:;? ") + list(string.ascii_uppercase)
              + list(string.ascii_lowercase) + ["@" + p for p in ARPABET])

# NVIDIA/tacotron2 hparams.py (model and audio sections)
HP = {
    "n_symbols": 148, "symbols_embedding_dim": 512, "encoder_n_convolutions": 3,
    "encoder_embedding_dim": 512, "encoder_kernel_size": 5, "attention_rnn_dim": 1024,
    "decoder_rnn_dim": 1024, "prenet_dim": 256, "attention_dim": 128,
    "attention_location_n_filters": 32, "attention_location_kernel_size": 31,
    "postnet_embedding_dim": 512, "postnet_kernel_size": 5, "postnet_n_convolutions": 5,
    "n_mel_channels": 80, "n_frames_per_step": 1,
    "sampling_rate": 22050, "filter_length": 1024, "hop_length": 256, "win_length": 1024,
    "mel_fmin": 0.0, "mel_fmax": 8000.0,
}


def nvidia_shapes() -> dict[str, tuple[int, ...]]:
    """Name -> shape of NVIDIA/tacotron2 model.py's state dict for ``HP``."""
    h = HP
    emb, enc, mels = h["symbols_embedding_dim"], h["encoder_embedding_dim"], h["n_mel_channels"]
    att_rnn, dec_rnn, pre, att = (h["attention_rnn_dim"], h["decoder_rnn_dim"], h["prenet_dim"],
                                  h["attention_dim"])
    post, k_enc, k_post = h["postnet_embedding_dim"], h["encoder_kernel_size"], h[
        "postnet_kernel_size"]
    s: dict[str, tuple[int, ...]] = {"embedding.weight": (h["n_symbols"], emb)}

    def conv_bn(prefix: str, c_in: int, c_out: int, k: int) -> None:
        s[f"{prefix}.0.conv.weight"] = (c_out, c_in, k)
        s[f"{prefix}.0.conv.bias"] = (c_out,)
        for name in ("weight", "bias", "running_mean", "running_var"):
            s[f"{prefix}.1.{name}"] = (c_out,)
        s[f"{prefix}.1.num_batches_tracked"] = ()

    for i in range(h["encoder_n_convolutions"]):
        conv_bn(f"encoder.convolutions.{i}", emb if i == 0 else enc, enc, k_enc)
    half = enc // 2  # BiLSTM: encoder_embedding_dim / 2 per direction
    for sfx in ("", "_reverse"):
        s[f"encoder.lstm.weight_ih_l0{sfx}"] = (4 * half, enc)
        s[f"encoder.lstm.weight_hh_l0{sfx}"] = (4 * half, half)
        s[f"encoder.lstm.bias_ih_l0{sfx}"] = (4 * half,)
        s[f"encoder.lstm.bias_hh_l0{sfx}"] = (4 * half,)
    s["decoder.prenet.layers.0.linear_layer.weight"] = (pre, mels * h["n_frames_per_step"])
    s["decoder.prenet.layers.1.linear_layer.weight"] = (pre, pre)
    s["decoder.attention_rnn.weight_ih"] = (4 * att_rnn, pre + enc)
    s["decoder.attention_rnn.weight_hh"] = (4 * att_rnn, att_rnn)
    s["decoder.attention_rnn.bias_ih"] = (4 * att_rnn,)
    s["decoder.attention_rnn.bias_hh"] = (4 * att_rnn,)
    a = "decoder.attention_layer"
    s[f"{a}.query_layer.linear_layer.weight"] = (att, att_rnn)
    s[f"{a}.memory_layer.linear_layer.weight"] = (att, enc)
    s[f"{a}.v.linear_layer.weight"] = (1, att)
    s[f"{a}.location_layer.location_conv.conv.weight"] = (
        h["attention_location_n_filters"], 2, h["attention_location_kernel_size"])
    s[f"{a}.location_layer.location_dense.linear_layer.weight"] = (
        att, h["attention_location_n_filters"])
    s["decoder.decoder_rnn.weight_ih"] = (4 * dec_rnn, att_rnn + enc)
    s["decoder.decoder_rnn.weight_hh"] = (4 * dec_rnn, dec_rnn)
    s["decoder.decoder_rnn.bias_ih"] = (4 * dec_rnn,)
    s["decoder.decoder_rnn.bias_hh"] = (4 * dec_rnn,)
    s["decoder.linear_projection.linear_layer.weight"] = (mels * h["n_frames_per_step"],
                                                         dec_rnn + enc)
    s["decoder.linear_projection.linear_layer.bias"] = (mels * h["n_frames_per_step"],)
    s["decoder.gate_layer.linear_layer.weight"] = (1, dec_rnn + enc)
    s["decoder.gate_layer.linear_layer.bias"] = (1,)
    n_post = h["postnet_n_convolutions"]
    for i in range(n_post):
        conv_bn(f"postnet.convolutions.{i}", mels if i == 0 else post,
                mels if i == n_post - 1 else post, k_post)
    return s


def nvidia_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in nvidia_shapes().items():
        if name.endswith("num_batches_tracked"):
            out[name] = torch.tensor(4321, dtype=torch.long)
        elif name.endswith("running_var"):
            out[name] = torch.rand(shape, generator=gen) + 0.5
        else:
            out[name] = torch.randn(shape, generator=gen) * 0.1
    return out


def save_nvidia(path: Path, state: dict[str, torch.Tensor], **extra) -> Path:
    torch.save({"state_dict": state, "optimizer": {}, "iteration": 12000,
                "learning_rate": 1e-3, **extra}, path)
    return path


@pytest.fixture(scope="module")
def nvidia(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    state = nvidia_state_dict()
    return save_nvidia(tmp_path_factory.mktemp("nv") / "tacotron2_statedict.pt", state), state


@pytest.fixture(scope="module")
def nvidia_export(nvidia, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("nv_export")
    export_model(nvidia[0], out)
    return out


@pytest.fixture(scope="module")
def tiny_ckpt(tiny_data, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("own") / "run"
    return Trainer(tiny_cfg(), tiny_data, run, progress=False).fit(max_steps=1).last_checkpoint


def default_cfg(*extra: str):
    return load_config("default", ["train.threads=1", "train.device=cpu", *extra])


# ---------------------------------------------------------------------------------------------


def test_nvidia_table_and_audio_match_nvidia_hparams():
    assert list(NVIDIA_SYMBOLS) == NV_SYMBOLS and len(NVIDIA_SYMBOLS) == 148
    assert NVIDIA_SYMBOLS[11] == " " and NVIDIA_SYMBOLS[12] == "A" and NVIDIA_SYMBOLS[38] == "a"
    assert NVIDIA_SYMBOLS[64] == "@AA" and NVIDIA_SYMBOLS[-1] == "@ZH"
    a = AudioConfig()
    assert (a.sample_rate, a.n_fft, a.hop_length, a.win_length, a.n_mels, a.fmin, a.fmax) == (
        HP["sampling_rate"], HP["filter_length"], HP["hop_length"], HP["win_length"],
        HP["n_mel_channels"], HP["mel_fmin"], HP["mel_fmax"])
    check_nvidia_audio(a)
    with pytest.raises(PretrainedError, match="hop_length: NVIDIA 256, tacotrain 200"):
        check_nvidia_audio(AudioConfig(hop_length=200))


def test_default_model_has_nvidia_names_and_shapes():
    model = Tacotron2(load_config("default").model, 148, 80)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == nvidia_shapes()


def test_export_nvidia_is_bit_equal(nvidia, tmp_path, capsys):
    path, state = nvidia
    out = tmp_path / "export"
    assert main(["export", "--checkpoint", str(path), "--out", str(out)]) == 0
    assert "84 tensors" in capsys.readouterr().out
    tensors = load_file(out / "model.safetensors")
    assert tensors.keys() == state.keys()
    for k, v in state.items():
        assert tensors[k].dtype == v.dtype and torch.equal(tensors[k], v), k
    meta = json.loads((out / "config.json").read_text())
    assert meta["text"] == {"language": "en", "phonemes": False, "cleaner": "tacotrain:en",
                            "symbols": NV_SYMBOLS}
    assert meta["model"] == load_config("default").model.model_dump(mode="json")
    assert meta["audio"] == AudioConfig().model_dump(mode="json") and meta["r"] == 1
    assert meta["source"]["format"] == "nvidia"
    # never silently overwritten
    assert main(["export", "--checkpoint", str(path), "--out", str(out)]) == 1
    assert "--force" in capsys.readouterr().err
    assert main(["export", "--checkpoint", str(path), "--out", str(out), "--force"]) == 0


def test_export_refuses_a_checkpoint_that_is_not_the_default_model(tmp_path):
    state = nvidia_state_dict()
    state["decoder.gate_layer.linear_layer.weight"] = torch.zeros(1, 1000)
    path = save_nvidia(tmp_path / "odd.pt", state)
    with pytest.raises(PretrainedError, match=r"decoder\.gate_layer\.linear_layer\.weight: "
                                              r"\[1, 1000\], expected \[1, 1536\]"):
        export_model(path, tmp_path / "x")
    assert not (tmp_path / "x" / "model.safetensors").exists()


def test_warm_start_default_model_from_nvidia(nvidia, tiny_data, tmp_path):
    path, src = nvidia
    cfg = default_cfg(f"train.init_from={path}")
    warm = Trainer(cfg, tiny_data, tmp_path / "warm", progress=False)
    fresh = Trainer(default_cfg(), tiny_data, tmp_path / "fresh", progress=False)
    got = warm.model.state_dict()
    init = fresh.model.state_dict()
    symbols = warm.data.symbols
    for k, v in got.items():
        if k != "embedding.weight":
            assert torch.equal(v, src[k]), k
    shared = [s for s in symbols if s in NV_SYMBOLS]
    assert len(shared) == len(symbols) - 1 == 38  # '"' is not in NVIDIA's table
    for i, sym in enumerate(symbols):
        want = src["embedding.weight"][NV_SYMBOLS.index(sym)] if sym in NV_SYMBOLS else \
            init["embedding.weight"][i]
        assert torch.equal(got["embedding.weight"][i], want), sym
    # the fresh row is the fresh init, not a copy of anything
    assert not torch.equal(got["embedding.weight"][symbols.index('"')],
                           src["embedding.weight"][NV_SYMBOLS.index("_")])
    rec = json.loads((tmp_path / "warm" / "init_from.json").read_text())
    assert rec["format"] == "nvidia" and rec["init_from"] == str(path.resolve())
    assert rec["embedding"] == {"copied": 38, "symbols": 39, "initialised": ['"'],
                                "ignored": False}
    assert rec["tensors_copied"] == 83 and rec["extra_in_source"] == []
    assert f"init_from: {path}" in (tmp_path / "warm" / "config.yaml").read_text()
    # training state starts fresh
    assert warm.step == 0 and warm.guard.rollbacks == 0


@pytest.mark.slow
def test_cli_default_model_one_step_from_nvidia(nvidia, tiny_data, tmp_path):
    """The whole path on NVIDIA's sizes: about 15 s of CPU (a 28M-parameter step + validation)."""
    path, src = nvidia
    run = tmp_path / "run"
    assert main(["train", "--config", "default", "--data", str(tiny_data), "--out", str(run),
                 "--init-from", str(path), "--max-steps", "1", "--quiet",
                 "--set", "train.threads=1", "--set", "train.device=cpu",
                 "--set", "train.batch_size=4", "--set", "train.val_free_run_items=1"]) == 0
    ck = load_checkpoint(run / "checkpoints" / "step-0000001.pt")
    assert ck["config"]["train"]["init_from"] == str(path)
    assert json.loads((run / "init_from.json").read_text())["embedding"]["copied"] == 38
    # one optimiser step moved the copied weights a little, from the source's values
    w = "decoder.attention_rnn.weight_hh"
    assert not torch.equal(ck["model"][w], src[w])
    assert torch.allclose(ck["model"][w], src[w], atol=0.01)


def test_warm_start_with_module_prefix(nvidia, tmp_path):
    _, src = nvidia
    path = save_nvidia(tmp_path / "ddp.pt", {"module." + k: v for k, v in src.items()})
    symbols = ["_", "a", "b", "@AA", "я"]  # a table of another kind: rows matched by symbol
    model = Tacotron2(load_config("default").model, len(symbols), 80)
    before = model.embedding.weight.detach().clone()
    plan_warm_start(path, load_config("default").model, symbols, 80).apply(model)
    got = model.state_dict()
    assert all(torch.equal(got[k], src[k]) for k in src if k != "embedding.weight")
    emb = got["embedding.weight"]
    for i, sym in enumerate(symbols[:4]):
        assert torch.equal(emb[i], src["embedding.weight"][NV_SYMBOLS.index(sym)]), sym
    assert torch.equal(emb[4], before[4])


def test_cli_warm_start_of_own_checkpoint_records_it(tiny_ckpt, tiny_data, tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--config", "tiny", "--data", str(tiny_data), "--out", str(run),
                 "--init-from", str(tiny_ckpt), "--max-steps", "1", "--quiet",
                 "--set", "train.threads=1", "--set", "train.val_free_run_items=1"]) == 0
    rec = json.loads((run / "init_from.json").read_text())
    assert rec["format"] == "tacotrain"
    assert rec["embedding"]["copied"] == rec["embedding"]["symbols"] == 39
    events = [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines()]
    texts = [e for e in events if e["kind"] == "text" and e["tag"] == "init_from"]
    assert len(texts) == 1 and json.loads(texts[0]["text"]) == rec
    ck = load_checkpoint(sorted((run / "checkpoints").glob("step-*.pt"))[-1])
    assert ck["step"] == 1 and ck["config"]["train"]["init_from"] == str(tiny_ckpt)
    # --init-from does not combine with --resume
    assert main(["train", "--config", "tiny", "--data", str(tiny_data), "--out", str(run),
                 "--resume", "--init-from", str(tiny_ckpt), "--quiet"]) == 2


def test_init_from_with_resume_and_ignore_without_init_are_refused(tiny_ckpt, tiny_data,
                                                                   tmp_path):
    with pytest.raises(TrainError, match="does not combine with --resume"):
        Trainer(tiny_cfg(f"train.init_from={tiny_ckpt}"), tiny_data, tmp_path / "r",
                resume=True, progress=False)
    with pytest.raises(ConfigError, match="train.ignore_layers is set but train.init_from"):
        tiny_cfg("train.ignore_layers=[embedding]")


def test_shape_mismatch_names_keys_and_ignore_layers_fixes_it(nvidia, tiny_data, tmp_path):
    path, _ = nvidia
    with pytest.raises(PretrainedError) as err:
        Trainer(load_config("small", [f"train.init_from={path}", "train.device=cpu"]),
                tiny_data, tmp_path / "small", progress=False)
    msg = str(err.value)
    assert "decoder.linear_projection.linear_layer.weight: source [80, 1536], this model " \
           "[320, 512]" in msg
    assert "embedding.weight: source [148, 512], this model [39, 256]" in msg
    assert not (tmp_path / "small").exists()  # refused before the run directory was made
    prefixes = msg.rsplit("--ignore-layers ", 1)[1].split()
    cfg = load_config("small", [f"train.init_from={path}", "train.device=cpu",
                                f"train.ignore_layers={json.dumps(prefixes)}"])
    trainer = Trainer(cfg, tiny_data, tmp_path / "small2", progress=False)
    assert trainer.init_record["embedding"]["ignored"] is True


def test_ignore_layers_keeps_fresh_init(nvidia, tiny_data):
    path, src = nvidia
    mc = load_config("default", ["model.n_frames_per_step=2"]).model
    symbols = PreparedData.load(tiny_data).symbols
    with pytest.raises(PretrainedError) as err:
        plan_warm_start(path, mc, symbols, 80)
    msg = str(err.value)
    assert "decoder.gate_layer.linear_layer.weight: source [1, 1536], this model [2, 1536]" in msg
    assert "--ignore-layers decoder.gate_layer.linear_layer " \
           "decoder.linear_projection.linear_layer" in msg
    torch.manual_seed(7)
    fresh = Tacotron2(mc, len(symbols), 80).state_dict()
    torch.manual_seed(7)
    model = Tacotron2(mc, len(symbols), 80)
    plan = plan_warm_start(path, mc, symbols, 80,
                           ["decoder.gate_layer", "decoder.linear_projection", "embedding"])
    rec = plan.apply(model)
    got = model.state_dict()
    for k, v in got.items():
        if k.startswith(("decoder.gate_layer", "decoder.linear_projection", "embedding")):
            assert torch.equal(v, fresh[k]), k
        else:
            assert torch.equal(v, src[k]), k
    assert rec["embedding"]["ignored"] is True and rec["embedding"]["copied"] == 0
    with pytest.raises(PretrainedError, match="decoder.nothing matches no tensor"):
        plan_warm_start(path, mc, symbols, 80, ["decoder.nothing"])


def test_missing_and_extra_keys(nvidia, tmp_path, caplog):
    _, src = nvidia
    state = dict(src)
    del state["decoder.gate_layer.linear_layer.bias"]
    state["decoder.extra.weight"] = torch.zeros(3)
    path = save_nvidia(tmp_path / "partial.pt", state)
    mc = load_config("default").model
    with pytest.raises(PretrainedError, match=r"the source lacks:\n  decoder\.gate_layer\."
                                              r"linear_layer\.bias \[1\]"):
        plan_warm_start(path, mc, ["_", "a"], 80)
    plan = plan_warm_start(path, mc, ["_", "a"], 80, ["decoder.gate_layer"])
    assert plan.extra == ("decoder.extra.weight",)
    assert "decoder.extra.weight" in caplog.text


def test_untrusted_pickle_needs_trust(tmp_path):
    path = save_nvidia(tmp_path / "hp.pt", nvidia_state_dict(1), hparams=argparse.Namespace(a=1))
    with pytest.raises(PretrainedError, match="--trust-checkpoint"):
        read_source(path)
    assert read_source(path, trust=True).kind == "nvidia"
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(PretrainedError, match="neither a tacotrain checkpoint"):
        read_source(tmp_path / "junk.pt")


def test_own_checkpoint_export_synthesises_the_same(tiny_ckpt, tmp_path, capsys):
    out = tmp_path / "model"
    assert main(["export", "--checkpoint", str(tiny_ckpt), "--out", str(out)]) == 0
    ck = load_checkpoint(tiny_ckpt)
    tensors = load_file(out / "model.safetensors")
    assert tensors.keys() == ck["model"].keys()
    assert all(torch.equal(tensors[k], ck["model"][k]) for k in tensors)
    meta = json.loads((out / "config.json").read_text())
    assert meta["text"]["symbols"] == ck["data"]["symbols"] and meta["r"] == ck["r"]
    a = Synthesizer.from_checkpoint(tiny_ckpt, device="cpu")
    b = Synthesizer.from_pretrained(out, device="cpu")
    assert b.symbols == a.symbols and b.model.r == a.model.r
    ra = a.synthesize("The silver key, near the river.", seed=3)
    rb = b.synthesize("The silver key, near the river.", seed=3)
    assert torch.equal(ra.mel, rb.mel) and torch.equal(ra.alignment, rb.alignment)
    assert np.array_equal(ra.wav, rb.wav) and ra.info.frames == rb.info.frames
    # the CLI: --model, and never both sources
    wav = tmp_path / "x.wav"
    assert main(["synth", "--model", str(out), "--text", "a red boat.", "--out", str(wav),
                 "--device", "cpu"]) == 0
    frames = b.synthesize("a red boat.", seed=0).info.frames
    assert json.loads(wav.with_suffix(".json").read_text())["frames"] == frames
    with pytest.raises(SystemExit):
        main(["synth", "--model", str(out), "--checkpoint", str(tiny_ckpt), "--text", "a.",
              "--out", str(wav)])


def test_exported_nvidia_model_reads_through_its_own_table(nvidia_export):
    synth = Synthesizer.from_pretrained(nvidia_export, device="cpu")
    assert synth.symbols == NV_SYMBOLS
    cleaned, ids = synth.sequence("Hello, World!")
    assert cleaned == "hello, world!"
    assert ids == [NV_SYMBOLS.index(c) for c in "hello, world!"]
    assert ids[:2] == [45, 42]  # 'h', 'e' after pad, '-', 10 punctuation and A-Z
    seen = []
    hook = synth.model.embedding.register_forward_hook(lambda m, i, o: seen.append(i[0]))
    try:
        result = synth.synthesize("Hello, World!", seed=0)
    finally:
        hook.remove()
    assert seen[0].tolist() == [ids]
    assert result.mel.shape[0] == 80 and result.alignment.shape[1] == len(ids)
    with pytest.raises(SynthesisError, match="'\"'"):
        synth.sequence('He said "no".')


def test_load_pretrained_errors_name_the_file(nvidia_export, tmp_path):
    with pytest.raises(PretrainedError, match="config.json not found"):
        load_pretrained(tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes((nvidia_export / "model.safetensors").read_bytes())
    meta = json.loads((nvidia_export / "config.json").read_text())
    meta["text"]["cleaner"] = "english_cleaners"
    (bad / "config.json").write_text(json.dumps(meta))
    with pytest.raises(PretrainedError, match="text.cleaner 'english_cleaners' is unknown"):
        load_pretrained(bad)
    meta["text"]["cleaner"] = "tacotrain:en"
    meta["model"]["decoder_rnn_dim"] = 0
    (bad / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="decoder_rnn_dim"):
        load_pretrained(bad)


def test_python_api():
    import tacotrain
    from tacotrain import Synthesizer as S
    from tacotrain import Trainer as T
    from tacotrain import load_config as lc
    from tacotrain import prepare as p
    from tacotrain.data.prepare import prepare

    assert S is Synthesizer and T is Trainer and lc is load_config and p is prepare
    assert set(tacotrain.__all__) >= {"Synthesizer", "Trainer", "load_config", "prepare"}
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        tacotrain.nothing  # noqa: B018
    # importing the package alone stays light
    code = "import sys, tacotrain; print('torch' in sys.modules)"
    light = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True)
    assert light.stdout.strip() == "False"
