"""``tacotrain demo`` end to end with a tiny model: an honest failure, described in words."""

from __future__ import annotations

import json
from pathlib import Path

from tacotrain.cli import main


def test_demo_that_does_not_read_fails_and_says_why(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(["demo", "--out", str(out), "--config", "tiny", "--quiet",
                 "--set", "demo.corpus_size=12", "--set", "train.max_steps=4",
                 "--set", "train.val_interval=2", "--set", "demo.heldout_sentences=3",
                 "--set", "train.threads=1"])
    captured = capsys.readouterr()
    assert code == 1
    assert "not passed: the checkpoint's validation round failed the verdict" in captured.err
    assert "held-out sentences: 0% of 3 passed the verdict (needed 90%); failed:" \
        in captured.err
    s = json.loads((out / "summary.json").read_text())
    assert s["passed"] is False and s["language"] == "en" and s["engine"] == "kokoro"
    # natural English: the recogniser judged the held-out round against its floor
    heard = s["heldout"]["intelligibility"]
    assert heard["tested"] and not heard["intelligible"] and heard["floor_wer"] < 0.6
    assert heard["wer"] > heard["wer_bound"] and s["heldout"]["intelligible"] is False
    assert "held-out sentences are not intelligible: recogniser WER" in captured.err
    assert "held-out intelligibility: recogniser WER" in captured.out
    assert json.loads((out / "corpus" / "corpus.json").read_text())["engine"] == "kokoro"
    # the demo reads espeak-ng phonemes by default (demo.phonemes)
    assert json.loads((out / "data" / "manifest.json").read_text())["phonemes"] is True
    # the summary describes the checkpoint the samples came from (no aligned round: the last)
    ck = s["checkpoint"]
    assert ck["step"] == 4 and ck["aligned"] is False and "0/2 items aligned" in ck["verdict"]
    assert (out / ck["path"]).resolve() == (out / s["run_dir"] / "checkpoints" /
                                            "step-0000004.pt").resolve()
    held = s["heldout"]
    assert held["items"] == 3 and held["aligned_share"] == 0.0 and held["failed"]
    assert held["sentences"] == 3 and held["rejected"] == {}  # none lost to prepare
    for smp in held["samples"]:  # paths relative to the summary, so the folder can move
        assert not Path(smp["wav"]).is_absolute() and (out / smp["wav"]).is_file()
        assert smp["mcd_dtw_db"] > 0 and smp["length_ratio"] > 0
    assert s["eval_summary"]["by_source"]["heldout"]["items"] == 3
    assert [c["step"] for c in s["curve"]] == [2, 4]
    for rel in (s["report"]["html"], s["plots"]["training_curves"], s["plots"]["free_run_mel"]):
        assert (out / rel).stat().st_size > 1000
    report = json.loads((out / s["report"]["json"]).read_text())
    assert {i["source"] for i in report["items"]} == {"validation", "heldout"}
