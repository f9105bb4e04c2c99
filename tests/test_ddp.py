"""Gradient accumulation and training in several processes (DDP, gloo on the CPU).

The multi-process tests start two ranks with ``torch.multiprocessing.spawn`` and the environment
torchrun gives its workers (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), so the code
path is the one of ``torchrun -m tacotrain train``; one test runs torchrun itself. The two ranks
run every scenario in one job (process start-up dominates the cost on a small CPU), and the
tests read what they left in ``out/`` (never in a run directory).
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from tacotrain.data.loader import BucketBatchSampler, DistributedBucketSampler
from tacotrain.infer.checkpoint import load_checkpoint, step_checkpoints
from tacotrain.train.ddp import SINGLE, Dist, DistError, from_env, process_group
from tacotrain.train.inject import InjectError, parse
from tacotrain.train.trainer import GuardStop, Trainer

from conftest import checkpoint_weights, free_port, guard_log, tiny_cfg, wait_for_file

# Dropout draws its masks from each rank's own RNG (seed + rank), so two ranks and one process
# can only be compared without it.
NO_DROPOUT = ("model.encoder_dropout=0", "model.attention_dropout=0", "model.prenet_dropout=0",
              "model.decoder_dropout=0", "model.postnet_dropout=0")
# batch 2: the 12 training items give 6-7 batches an epoch, 3 updates of 2 x 1 or 1 x 2 batches
SMALL = ("train.batch_size=2", "train.val_interval=100")

# the scenarios the two ranks run, in order: (name, config overrides, TACOTRAIN_INJECT, steps,
# resume)
SCENARIOS = [
    ("equal", (*SMALL, *NO_DROPOUT), "", 3, False),
    # rank 1 alone: NaN at iterations 2, 4, 5 (patience 2: skip, skip, rollback), a loss spike
    # at 9 (5 good losses before it fill the running median's window: skip)
    ("nan", (*SMALL, "guard.nonfinite_patience=2", "guard.snapshot_interval=1",
             "guard.spike_window=5"), "nan@2,4-5:rank1; spike@9:rank1", 6, False),
    ("stop", (*SMALL, "guard.nonfinite_patience=1", "guard.max_rollbacks=0"), "nan@2+:rank1",
     5, False),
    ("whole", SMALL, "", 4, False),
    ("half", SMALL, "", 2, False),
    ("half", SMALL, "", 4, True),
]


def _params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def _cancelled_by_batch_norm(name: str) -> bool:
    """The bias of a conv followed by batch norm: the norm subtracts it again, so its true
    gradient is 0 and what backward gives is float rounding noise (~1e-10), which Adam, dividing
    by its magnitude, turns into steps of up to lr either way. Two computations that differ only
    in rounding move these biases differently; comparisons of weights leave them out."""
    return name.endswith("conv.bias") and ".convolutions." in name


def _assert_weights_close(model: torch.nn.Module, other: dict[str, torch.Tensor],
                          atol: float) -> None:
    compared = 0
    for name, p in model.named_parameters():
        if not _cancelled_by_batch_norm(name):
            torch.testing.assert_close(p.detach(), other[name], atol=atol, rtol=0, msg=name)
            compared += 1
    assert compared >= 20


def _listing(run: Path) -> list[str]:
    """Files under ``run``, TensorBoard's host/pid-named event file reduced to its kind."""
    names = []
    for p in run.rglob("*"):
        if p.is_file():
            rel = p.relative_to(run).as_posix()
            names.append("tb/events.out.tfevents" if rel.startswith("tb/events.out") else rel)
    return sorted(names)


_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_CHANGE_EVENTS = {"os.mkdir", "os.rename", "os.remove", "os.rmdir", "os.truncate", "os.chmod",
                  "os.link", "os.symlink", "os.utime", "tempfile.mkstemp", "shutil.rmtree"}


def _write_recorder(root: Path, found: list[str]):
    """An audit hook recording every write, creation, rename or removal under ``root``."""
    prefix = str(root)

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = (tuple(args) + (None, None, None))[:3]
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or \
                (isinstance(flags, int) and flags & _WRITE_FLAGS)
            if writing and isinstance(path, str | os.PathLike) and \
                    os.fspath(path).startswith(prefix):
                found.append(f"{event} {os.fspath(path)}")
        elif event in _CHANGE_EVENTS:
            for a in args:
                if isinstance(a, str | os.PathLike) and os.fspath(a).startswith(prefix):
                    found.append(f"{event} {os.fspath(a)}")
    return hook


def _rank_worker(rank: int, world: int, port: int, data: str, root: str) -> None:
    """One rank of the spawned job: every scenario in turn, in the process group torchrun's
    environment sets up; rank 1 records any write it makes under ``runs/``."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    runs, out = Path(root) / "runs", Path(root) / "out"
    writes: list[str] = []
    if rank == 1:
        sys.addaudithook(_write_recorder(runs, writes))
    with process_group(torch.device("cpu"), timeout_minutes=3) as dist:
        assert dist == Dist(rank, rank, world)
        for name, overrides, inject, steps, resume in SCENARIOS:
            os.environ["TACOTRAIN_INJECT"] = inject
            tr = Trainer(tiny_cfg(*overrides), data, runs / name, resume=resume, progress=False,
                         dist=dist)
            code = 0
            try:
                tr.fit(max_steps=steps)
            except GuardStop:
                code = 3
            label = f"{name}{'-resumed' if resume else ''}"
            torch.save({"params": _params(tr.model), "code": code, "step": tr.step,
                        "iteration": tr.iteration}, out / f"{label}-rank{rank}.pt")
    if rank == 1:
        (out / "writes-rank1.json").write_text(json.dumps(writes))


@pytest.fixture(scope="module")
def ddp_job(tiny_data, tmp_path_factory) -> Path:
    """Run the scenarios in two ranks once; their results are in ROOT/out."""
    root = tmp_path_factory.mktemp("ddp")
    (root / "out").mkdir()
    (root / "runs").mkdir()
    mp.spawn(_rank_worker, args=(2, free_port(), str(tiny_data), str(root)), nprocs=2,
             join=True)
    return root


def _result(root: Path, label: str, rank: int) -> dict:
    return torch.load(root / "out" / f"{label}-rank{rank}.pt", weights_only=True)


# ---------------------------------------------------------------------------- units
def test_distributed_sampler_deals_one_global_order():
    lengths = [int(x) for x in torch.randint(20, 400, (101,), generator=torch.Generator()
                                             .manual_seed(0))]
    for epoch in (0, 1):
        base = BucketBatchSampler(lengths, 8, seed=3, bucket_batches=2)
        base.set_epoch(epoch)
        every = base.batches()
        ranks = [DistributedBucketSampler(lengths, 8, seed=3, bucket_batches=2, num_replicas=3,
                                          rank=r, group=2) for r in range(3)]
        for s in ranks:
            s.set_epoch(epoch)
        per = [s.batches() for s in ranks]
        n = len(every) // 6 * 6  # whole updates of 3 ranks x 2 micro-batches; the tail dropped
        assert n < len(every) and all(len(p) == n // 3 for p in per)
        # global batch g is dealt to rank g mod 3, in order
        assert [per[g % 3][g // 3] for g in range(n)] == every[:n]
        # a data position is a global batch index: every rank resumes the same deal
        assert [s.batches(6) for s in ranks] == [p[2:] for p in per]
        one = DistributedBucketSampler(lengths, 8, seed=3, bucket_batches=2)
        one.set_epoch(epoch)
        assert one.batches() == every and one.stride == 1 and ranks[0].stride == 6
    with pytest.raises(ValueError, match="rank 2"):
        DistributedBucketSampler(lengths, 8, num_replicas=2, rank=2)


def test_inject_rank_selector():
    inj = parse("nan@3:rank1; spike@5")
    assert inj.active("nan", 3, rank=1) and not inj.active("nan", 3, rank=0)
    assert not inj.active("nan", 3)  # rank 0 by default: a one-process run
    assert inj.active("spike", 5, rank=0) and inj.active("spike", 5, rank=1)
    for bad in ("nan@3:rank", "nan@3:node1", "nan@3:rank1:rank2"):
        with pytest.raises(InjectError, match="rankN"):
            parse(bad)


def test_torchrun_environment_is_read_or_refused():
    assert from_env({}) is None
    assert from_env({"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "0"}) == Dist(1, 0, 4)
    with pytest.raises(DistError, match="WORLD_SIZE, LOCAL_RANK not"):
        from_env({"RANK": "0"})
    with pytest.raises(DistError, match="0 <= RANK < WORLD_SIZE"):
        from_env({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})
    assert SINGLE.reduce({"a": 1.5, "n": 3.0}, total=("n",)) == {"a": 1.5, "n": 3.0}
    assert SINGLE.place(torch.device("cuda", 1)) == torch.device("cuda", 1)
    assert Dist(1, 3, 4).place(torch.device("cuda", 0)) == torch.device("cuda", 3)
    assert Dist(1, 3, 4).seed(10) == 11 and SINGLE.seed(10) == 10


# ---------------------------------------------------------------------------- accumulation
def _micro_batches(tr: Trainer, *groups: list[int]):
    return [tr.collate([tr.train_set[i] for i in g]) for g in groups]


def test_accumulated_update_equals_the_double_batch_on_duplicated_items(tiny_data, tmp_path):
    """k=2 micro-batches of b items vs one batch of 2b, on the same items.

    Exact equality with a batch twice as large holds only when the two micro-batches carry the
    same items, for three reasons that belong to the model, not to the accumulation: batch norm
    normalises with the statistics of its batch, the losses are means over the batch's frames
    (not per-item means), and dropout draws masks of the batch's shape. So the double batch
    here is the micro-batch twice, dropout is off, and the claim checked is: one optimiser update
    per k micro-batches, gradients scaled by 1/k (the grad norm would double without it).
    Tolerance 1e-6: the double batch sums each term twice in another order (float rounding)."""
    cfg = tiny_cfg(*NO_DROPOUT, "train.grad_accum_steps=2")
    acc = Trainer(cfg, tiny_data, tmp_path / "acc", progress=False)
    big = Trainer(cfg, tiny_data, tmp_path / "big", progress=False)
    for a, b in zip(acc.model.parameters(), big.model.parameters(), strict=True):
        assert torch.equal(a, b)  # same seed, same start
    for k in range(3):
        items = [2 * k, 2 * k + 1]
        da, ma = acc.train_step(_micro_batches(acc, items, items))
        db, mb = big.train_step(_micro_batches(big, items + items)[0])
        assert da.action == db.action == "ok"
        assert ma["train/grad_norm"] == pytest.approx(mb["train/grad_norm"], rel=1e-5)
        assert ma["train/loss"] == pytest.approx(mb["train/loss"], rel=1e-6)
        assert ma["train/frames"] == mb["train/frames"]  # throughput counts both micro-batches
    assert acc.step == big.step == 3 and acc.iteration == 3
    _assert_weights_close(acc.model, _params(big.model), atol=1e-6)


def test_accumulated_gradient_is_the_mean_of_the_micro_batch_gradients(tiny_data, tmp_path):
    """Two different micro-batches: the update equals an Adam step (clipped the same way) on
    (grad L1 + grad L2) / 2 computed by hand on a copy of the model, with the same dropout masks
    (the RNG state replayed). Tolerance 1e-6: the trainer sums the scaled gradients in backward,
    the reference adds them afterwards."""
    tr = Trainer(tiny_cfg("train.grad_accum_steps=2"), tiny_data, tmp_path / "r", progress=False)
    m1, m2 = _micro_batches(tr, [0, 1], [5, 6])
    ref = copy.deepcopy(tr.model)
    ga_w = tr.param("loss.guided_attention.weight")
    rng = torch.get_rng_state()
    decision, m = tr.train_step([m1, m2])
    assert decision.action == "ok" and tr.step == 1

    torch.set_rng_state(rng)
    losses = []
    grads = [torch.zeros_like(p) for p in ref.parameters()]
    for b in (m1, m2):
        ref.zero_grad()
        loss = tr.criterion(ref(b.text, b.text_lengths, b.mels, b.mel_lengths), b, ga_w)["loss"]
        loss.backward()
        losses.append(float(loss.detach()))
        for g, p in zip(grads, ref.parameters(), strict=True):
            g += p.grad / 2
    for g, p in zip(grads, ref.parameters(), strict=True):
        p.grad = g
    norm = float(torch.nn.utils.clip_grad_norm_(ref.parameters(), tr.cfg.optim.grad_clip))
    assert m["train/loss"] == pytest.approx(sum(losses) / 2, rel=1e-6)
    assert m["train/grad_norm"] == pytest.approx(norm, rel=1e-5)
    opt = type(tr.optimizer)(ref.parameters(), **{**tr.optimizer.defaults, "lr": m["train/lr"]})
    opt.step()
    _assert_weights_close(tr.model, _params(ref), atol=1e-6)


def test_nan_in_one_micro_batch_skips_the_whole_update(tiny_data, tmp_path):
    tr = Trainer(tiny_cfg("train.grad_accum_steps=2"), tiny_data, tmp_path / "r", progress=False)
    assert tr.train_step(_micro_batches(tr, [0, 1], [2, 3]))[0].action == "ok"
    before = _params(tr.model)
    opt_before = copy.deepcopy(tr.optimizer.state_dict()["state"])
    good, bad = _micro_batches(tr, [4, 5], [6, 7])
    bad.mels[0, 0, 0] = float("nan")  # the second micro-batch alone is broken
    decision, m = tr.train_step([good, bad])
    assert decision.action == "skip" and math.isnan(m["train/loss"])
    assert tr.step == 1 and tr.iteration == 2 and tr.guard.skipped == 1
    for k, v in _params(tr.model).items():
        assert torch.equal(v, before[k]), k  # the good micro-batch's gradient went too
    for i, st in tr.optimizer.state_dict()["state"].items():
        for k, v in st.items():
            assert torch.equal(v, opt_before[i][k]), (i, k)


def test_accumulated_run_logs_the_skip_and_resumes_exactly(tiny_data, tmp_path, monkeypatch):
    """A full run with k=2: an injected NaN skips update 3 (guard.jsonl), throughput counts
    both micro-batches, and 2 steps + resume + 3 steps equal 5 steps straight (bit-exact: the
    data position counts micro-batches, and the epoch of 3 updates is crossed)."""
    cfg = tiny_cfg(*SMALL, "train.grad_accum_steps=2", "train.log_interval=1")
    monkeypatch.setenv("TACOTRAIN_INJECT", "nan@3")
    nan = Trainer(cfg, tiny_data, tmp_path / "nan", progress=False)
    assert nan.fit(max_steps=3).step == 3
    log = guard_log(tmp_path / "nan")
    assert [(r["action"], r["iteration"], r["step"]) for r in log] == [("skip", 3, 2)]
    events = [json.loads(x) for x in (tmp_path / "nan" / "events.jsonl").read_text().splitlines()]
    rates = [e["values"] for e in events if "train/items_per_second" in e.get("values", {})]
    # items per update: both micro-batches (2 items each, 1 at a grid edge); update 3 skipped
    sampler = DistributedBucketSampler(nan.train_set.lengths, 2, seed=cfg.train.seed, group=2)
    per_update = []
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        b = sampler.batches()
        per_update += [len(b[i]) + len(b[i + 1]) for i in range(0, len(b), 2)]
    assert [round(v["train/items_per_second"] / v["train/steps_per_second"]) for v in rates] == \
        [per_update[0], per_update[1], per_update[3]]
    monkeypatch.delenv("TACOTRAIN_INJECT")

    whole = Trainer(cfg, tiny_data, tmp_path / "whole", progress=False)
    whole.fit(max_steps=5)
    assert whole.epoch == 1  # the run crossed an epoch (3 updates each)
    Trainer(cfg, tiny_data, tmp_path / "half", progress=False).fit(max_steps=2)
    ck = load_checkpoint(tmp_path / "half" / "checkpoints" / "step-0000002.pt")
    assert ck["batch_in_epoch"] == 4  # global micro-batches consumed in the epoch
    again = Trainer(cfg, tiny_data, tmp_path / "half", resume=True, progress=False)
    again.fit(max_steps=5)
    a, b = whole.model.state_dict(), again.model.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_too_few_batches_for_one_update_is_refused(tiny_data, tmp_path):
    from tacotrain.train.trainer import TrainError

    with pytest.raises(TrainError, match="train.grad_accum_steps 20"):
        Trainer(tiny_cfg("train.grad_accum_steps=20"), tiny_data, tmp_path / "r",
                progress=False)


# ---------------------------------------------------------------------------- two ranks
def test_two_ranks_equal_one_process_accumulating_their_batches(ddp_job, tiny_data, tmp_path):
    """2 ranks x batch 2 vs 1 process x 2 micro-batches of 2 over the same global order: the
    process sees exactly the union of the ranks' batches in each update (rank r's batch is its
    micro-batch r), dropout off. Per-rank gradients are averaged by DDP's all-reduce and summed
    /2 by accumulation, which differ only in float rounding: atol 1e-5 after 3 Adam steps
    (measured: below 1e-6, except the biases batch norm cancels, left out). The two ranks hold
    bit-identical parameters."""
    r0, r1 = _result(ddp_job, "equal", 0), _result(ddp_job, "equal", 1)
    assert r0["step"] == r1["step"] == 3
    for k in r0["params"]:
        assert torch.equal(r0["params"][k], r1["params"][k]), k
    one = Trainer(tiny_cfg(*SMALL, *NO_DROPOUT, "train.grad_accum_steps=2"), tiny_data,
                  tmp_path / "one", progress=False)
    one.fit(max_steps=3)
    start = Trainer(tiny_cfg(*SMALL, *NO_DROPOUT), tiny_data, tmp_path / "start",
                    progress=False)
    _assert_weights_close(one.model, r0["params"], atol=1e-5)
    # and training did move the weights by more than the tolerance
    moved = [not torch.allclose(p, r0["params"][k], atol=1e-5)
             for k, p in start.model.named_parameters()]
    assert sum(moved) > 10
    # checkpoints hold the bare model's names: they load in one process
    ck = load_checkpoint(ddp_job / "runs" / "equal" / "checkpoints" / "step-0000003.pt")
    assert not any(k.startswith("module.") for k in ck["model"])
    start.model.load_state_dict(ck["model"])
    assert ck["world_size"] == 2 and len(ck["rng_ranks"]) == 2


def test_rank_1_writes_nothing(ddp_job, tiny_data, tmp_path):
    """Rank 1 ran every scenario under an audit hook recording each file it opened for writing,
    created, renamed or removed under the run directories: none. And the DDP run directory holds
    the same files as a one-process run of the same configuration."""
    assert json.loads((ddp_job / "out" / "writes-rank1.json").read_text()) == []
    one = tmp_path / "one"
    Trainer(tiny_cfg(*SMALL, *NO_DROPOUT, "train.grad_accum_steps=2"), tiny_data, one,
            progress=False).fit(max_steps=3)
    listing = _listing(ddp_job / "runs" / "equal")
    assert listing == _listing(one)
    assert {"config.yaml", "events.jsonl", "train_result.json",
            "checkpoints/step-0000003.pt"} <= set(listing)


def test_nan_on_one_rank_skips_and_rolls_back_on_both(ddp_job):
    """NaNs and a loss spike on rank 1 alone: the guard of both ranks judges the figures
    reduced over the ranks, so both skip, roll back and skip again at the same iterations.
    (DDP's gradient all-reduce spreads a NaN by itself; a spike it does not: rank 0's own loss
    is normal, so without the reduction rank 0 would apply the update rank 1 skips.)"""
    run = ddp_job / "runs" / "nan"
    log = guard_log(run)
    assert [(r["action"], r["iteration"]) for r in log] == \
        [("skip", 2), ("skip", 4), ("rollback", 5), ("skip", 9)]
    assert all("non-finite" in r["cause"] for r in log[:3]) and "spike" in log[3]["cause"]
    r0, r1 = _result(ddp_job, "nan", 0), _result(ddp_job, "nan", 1)
    # both ranks skipped the same iterations (6 good updates in 10 attempts) ...
    assert (r0["step"], r0["iteration"]) == (r1["step"], r1["iteration"]) == (6, 10)
    # ... and hold the same weights after the skips and the rollback
    for k in r0["params"]:
        assert torch.equal(r0["params"][k], r1["params"][k]), k
        assert torch.isfinite(r0["params"][k]).all(), k
    ck = load_checkpoint(run / "checkpoints" / "step-0000006.pt")
    assert ck["lr_scale"] == 0.5 and ck["iteration"] == 10


def test_guard_stop_is_agreed_by_both_ranks(ddp_job):
    r0, r1 = _result(ddp_job, "stop", 0), _result(ddp_job, "stop", 1)
    assert r0["code"] == r1["code"] == 3  # GuardStop raised on both (the CLI returns 3)
    assert (r0["step"], r0["iteration"]) == (r1["step"], r1["iteration"]) == (1, 2)
    run = ddp_job / "runs" / "stop"
    assert [r["action"] for r in guard_log(run)] == ["stop"]
    assert json.loads((run / "train_result.json").read_text())["stop_reason"] == "guard"


def test_resume_under_ddp_is_exact(ddp_job):
    """2 steps + resume + 2 steps equal 4 steps straight, bit for bit, on both ranks, with
    dropout on: each rank resumes its own RNG stream (rng_ranks in the checkpoint)."""
    for rank in (0, 1):
        whole = _result(ddp_job, "whole", rank)
        resumed = _result(ddp_job, "half-resumed", rank)
        assert resumed["step"] == whole["step"] == 4
        for k in whole["params"]:
            assert torch.equal(whole["params"][k], resumed["params"][k]), (rank, k)
    half = _result(ddp_job, "half", 0)
    assert any(not torch.equal(half["params"][k], whole["params"][k]) for k in half["params"])


def test_guard_stop_exits_3_on_every_rank(tiny_data, tmp_path):
    """Two ``python -m tacotrain train`` processes with torchrun's environment (each process's
    own exit code, which torchrun itself may mask by stopping the slower worker once the
    first has exited) and a NaN on rank 1 only: the guard stop is agreed and both exit 3.
    Then the real launcher, ``torchrun -m tacotrain train``, fails with exit code 3."""
    train = ["train", "--config", "tiny", "--data", str(tiny_data), "--max-steps", "5",
             "--quiet", "--set", "train.threads=1", "--set", "train.batch_size=2",
             "--set", "guard.nonfinite_patience=1", "--set", "guard.max_rollbacks=0"]
    env = {**os.environ, "TACOTRAIN_INJECT": "nan@2+:rank1", "OMP_NUM_THREADS": "1",
           "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    run = tmp_path / "r"
    procs = [subprocess.Popen([sys.executable, "-m", "tacotrain", *train, "--out", str(run)],
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in range(2)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [3, 3], outs
    assert "training stopped by the guard at step 1" in outs[0]
    assert "training stopped by the guard" not in outs[1]  # rank 0 alone reports
    assert [r["action"] for r in guard_log(run)] == ["stop"]

    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "TACOTRAIN_INJECT": "nan@2+:rank1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", "2", "-m",
                           "tacotrain", *train, "--out", str(tmp_path / "t")],
                          env=env, capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and 3 in _exit_codes(out).values(), out


def _exit_codes(text: str) -> dict[int, int]:
    """Each rank's exit code from torchrun's failure report
    (``rank      : 1 (local_rank: 1)`` then ``exitcode  : 3 (pid: ...)``)."""
    found = re.findall(r"rank\s*:\s*(\d+) \(local_rank: \d+\)\s*\n\s*exitcode\s*:\s*(-?\d+)",
                       text)
    return {int(r): int(c) for r, c in found}


# ------------------------------------------------------- a stopped or killed torchrun job
def _torchrun(data: Path, run: Path, steps: int, *extra: str) -> subprocess.Popen:
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "tacotrain", "train",
           "--config", "tiny", "--data", str(data), "--out", str(run), "--max-steps", str(steps),
           "--quiet", "--set", "train.threads=1", "--set", "train.batch_size=2",
           "--set", "train.val_interval=4", *extra]
    return subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _rank_pid(agent: int, rank: int) -> int:
    """The pid of torchrun's worker of ``rank`` (a child of the agent with RANK=rank)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for task in Path(f"/proc/{agent}/task").iterdir():
            for pid in (task / "children").read_text().split():
                try:
                    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                except OSError:
                    continue
                if f"RANK={rank}".encode() in env:
                    return int(pid)
        time.sleep(0.1)
    raise AssertionError(f"no worker of rank {rank} under torchrun {agent}")


def test_signalled_or_killed_rank_under_torchrun_resumes_exactly(tiny_data, tmp_path):
    """Real torchrun, dropout on. SIGTERM to rank 1 alone: both ranks stop after the same
    update, write one checkpoint with both ranks' random streams and exit 130; SIGKILL of rank
    1: the job fails and the last regular checkpoint stays the newest. From either, ``--resume``
    under torchrun reaches step 20 with the weights of the uninterrupted run, bit for bit."""
    whole = tmp_path / "whole"
    proc = _torchrun(tiny_data, whole, 20)
    assert proc.wait(timeout=300) == 0, proc.communicate()[0]
    expected = checkpoint_weights(whole, 20)

    for how, sig in (("term", signal.SIGTERM), ("kill", signal.SIGKILL)):
        run = tmp_path / how
        proc = _torchrun(tiny_data, run, 200)
        wait_for_file(run / "checkpoints" / "step-0000004.pt", proc)
        os.kill(_rank_pid(proc.pid, 1), sig)
        out = proc.communicate(timeout=300)[0]
        assert proc.returncode != 0, out
        steps = [s for s, _ in step_checkpoints(run / "checkpoints")]
        assert 4 <= steps[-1] < 20, (steps, out)
        last = load_checkpoint(run / "checkpoints" / f"step-{steps[-1]:07d}.pt")
        assert len(last["rng_ranks"]) == 2  # a checkpoint of every rank's state
        result = json.loads((run / "train_result.json").read_text())
        if how == "term":
            codes = _exit_codes(out)  # torchrun may stop the slower rank once one has exited
            assert 130 in codes.values() and set(codes.values()) <= {130, -15}, out
            assert result["stop_reason"] == "interrupted" and result["step"] == steps[-1]
            assert f"interrupted at step {steps[-1]}; resume from" in out
        else:
            assert result["stop_reason"].startswith("crash")  # rank 0 lost its peer
            assert steps[-1] % 4 == 0  # a regular checkpoint, none written after the kill
        proc = _torchrun(tiny_data, run, 20, "--resume")
        out = proc.communicate(timeout=300)[0]
        assert proc.returncode == 0, out
        assert f"resumed from {run / 'checkpoints' / f'step-{steps[-1]:07d}.pt'}" in out
        got = checkpoint_weights(run, 20)
        assert got.keys() == expected.keys()
        for k in expected:
            assert torch.equal(got[k], expected[k]), (how, k)


@pytest.mark.parametrize("ending", ["stop", "crash", "guard", "done"])
def test_the_trainer_is_freed_before_the_process_group_is_left(ending, monkeypatch, tiny_data):
    """`tacotrain train` frees the trainer (its DDP wrapper and gloo's work objects) before it
    leaves the process group, on every way out: one still alive after the group, or at
    interpreter exit, can abort the process (SIGABRT). An exception's traceback holds fit's
    frame, and with it the trainer, unless the CLI clears it."""
    import contextlib
    import weakref
    from types import SimpleNamespace

    import tacotrain.train.ddp as ddp_module
    import tacotrain.train.trainer as trainer_module
    from tacotrain.cli import main

    made: list[weakref.ref] = []
    alive_at_leave: list[bool] = []

    class FakeTrainer:
        def __init__(self, *args, **kwargs) -> None:
            made.append(weakref.ref(self))

        def request_stop(self) -> None:
            pass

        def fit(self, max_steps=None):
            me = self  # noqa: F841  (a frame that holds the trainer, as the real fit's does)
            if ending == "stop":
                raise trainer_module.StopRequested(tiny_data / "none.pt")
            if ending == "crash":
                raise RuntimeError("peer lost")
            if ending == "guard":
                raise GuardStop("too many rollbacks")
            return SimpleNamespace(last_val=None, step=1, stop_reason="max_steps",
                                   wall_seconds=1.0, aligned=False, verdict="",
                                   last_checkpoint=None)

    @contextlib.contextmanager
    def group(device, timeout_minutes=30.0):
        try:
            yield ddp_module.SINGLE
        finally:
            alive_at_leave.append(made[-1]() is not None)

    monkeypatch.setattr(trainer_module, "Trainer", FakeTrainer)
    monkeypatch.setattr(ddp_module, "process_group", group)
    argv = ["train", "--config", "tiny", "--data", str(tiny_data), "--out", "unused", "--quiet"]
    if ending == "crash":
        with pytest.raises(RuntimeError, match="peer lost"):
            main(argv)
    else:
        assert main(argv) == {"stop": 130, "guard": 3, "done": 0}[ending]
    assert alive_at_leave == [False]
