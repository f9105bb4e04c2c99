"""``tacotrain eval`` on a real (tiny) checkpoint: the report's figures, files, bad input, and
the page in a real headless Chromium."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf

from tacotrain.cli import main
from tacotrain.config import AudioConfig, Settings
from tacotrain.data.prepare import prepare
from tacotrain.evaluate.robustness import CATEGORIES
from tacotrain.train.trainer import Trainer

from conftest import import_playwright, launch_chromium, tiny_cfg

ITEM_KEYS = {"id", "source", "category", "text", "aligned", "reasons", "stopped_by_gate",
             "frames", "length_ratio", "skipped_tokens", "repeated_tokens", "diagonality",
             "focus", "coverage", "monotonicity", "mcd_dtw_db", "rtf", "wav", "alignment_png"}
SUMMARY_KEYS = {"items", "aligned_share", "gate_stop_share", "median_length_ratio",
                "median_mcd_dtw_db", "gt_resynthesis_mcd_dtw_db", "rtf", "by_source",
                "robustness_failure_rate"}


@pytest.fixture(scope="module")
def evaluated(tiny_data, tmp_path_factory) -> tuple[Path, dict, Path]:
    root = tmp_path_factory.mktemp("eval")
    cfg = tiny_cfg("train.val_interval=4", "model.max_decoder_steps=120")
    res = Trainer(cfg, tiny_data, root / "run", progress=False).fit(max_steps=4)
    sentences = root / "sentences.txt"
    sentences.write_text("The old map.\n\nWe waited quietly, after dinner.\n", encoding="utf-8")
    out = root / "eval"
    code = main(["eval", "--checkpoint", str(res.last_checkpoint), "--data", str(tiny_data),
                 "--sentences", str(sentences), "--robustness", "--out", str(out), "--quiet",
                 "--no-asr", "--heldout", str(tiny_data)])
    assert code == 0
    return out, json.loads((out / "report.json").read_text()), res.last_checkpoint


def test_report_has_every_item_and_figure(evaluated, tiny_data):
    out, rep, ckpt = evaluated
    assert rep["checkpoint"] == str(Path(ckpt).resolve())
    assert set(rep["summary"]) >= SUMMARY_KEYS
    items = rep["items"]
    assert all(set(i) >= ITEM_KEYS for i in items)
    by = {s: [i for i in items if i["source"] == s] for s in ("validation", "sentences",
                                                              "robustness")}
    n_val = len((tiny_data / "val.txt").read_text().splitlines())
    assert len(by["validation"]) == n_val and len(by["sentences"]) == 2
    assert {i["category"] for i in by["robustness"]} == set(CATEGORIES)
    assert rep["summary"]["items"] == len(items)
    n_all = len(json.loads((tiny_data / "manifest.json").read_text())["items"])
    assert rep["summary"]["by_source"]["heldout"]["items"] == n_all
    # only items with ground truth get the content test
    assert rep["summary"]["content_tested_items"] == n_val + n_all
    assert rep["summary"]["by_source"]["sentences"]["items"] == 2
    # ground truth only for validation items: length ratio and MCD there, null elsewhere
    assert all(i["length_ratio"] > 0 and i["mcd_dtw_db"] > 0 and i["mel_mcd_dtw_db"] > 0
               for i in by["validation"])
    assert all(i["length_ratio"] is None and i["mcd_dtw_db"] is None
               for i in by["sentences"] + by["robustness"])
    # a four-step model reads nothing: every item is judged not aligned, with its reasons
    assert rep["summary"]["aligned_share"] == 0.0
    assert all(not i["aligned"] and i["reasons"] for i in items)
    assert rep["summary"]["robustness_failure_rate"]["all"] == 1.0
    assert rep["summary"]["gt_resynthesis_mcd_dtw_db"] > 0
    for i in items:
        wav, sr = sf.read(out / i["wav"])
        assert sr == 22050 and abs(len(wav) - i["frames"] * 256) <= 256
        assert (out / i["alignment_png"]).stat().st_size > 1000
        assert i["rtf"] > 0


def test_bad_input_is_a_clear_error(evaluated, tiny_data, tmp_path, capsys):
    _, _, ckpt = evaluated
    bad = tmp_path / "bad.txt"
    bad.write_text("Fine.\nHello 你好 world\n", encoding="utf-8")
    code = main(["eval", "--checkpoint", str(ckpt), "--data", str(tiny_data), "--sentences",
                 str(bad), "--out", str(tmp_path / "e"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "line 2" in err and "你" in err
    assert not (tmp_path / "e" / "report.json").exists()
    code = main(["eval", "--checkpoint", str(tmp_path / "none.pt"), "--data", str(tiny_data),
                 "--out", str(tmp_path / "e")])
    assert code == 1 and "none.pt" in capsys.readouterr().err
    other = tmp_path / "other"  # held-out data prepared with other mel settings
    prepare(tiny_data.parent / "corpus", other, Settings(audio=AudioConfig(fmax=7000.0)),
            workers=1, progress=False)
    code = main(["eval", "--checkpoint", str(ckpt), "--data", str(tiny_data), "--heldout",
                 str(other), "--out", str(tmp_path / "e"), "--quiet"])
    assert code == 1 and "audio settings differ" in capsys.readouterr().err


def test_report_page_in_a_browser(evaluated, tmp_path):
    sync_playwright = import_playwright()
    out, rep, _ = evaluated
    with sync_playwright() as pw:
        browser = launch_chromium(pw)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto((out / "report.html").as_uri())
        rows = page.locator("#items tr.item")
        assert rows.count() == len(rep["items"])
        assert page.locator("#items tr.item.fail").count() == len(rep["items"])
        assert page.locator("#items audio").count() == len(rep["items"])
        page.wait_for_function(
            "() => [...document.querySelectorAll('#items audio')].every(a => a.duration > 0)",
            timeout=30_000)
        widths = page.eval_on_selector_all("#items img.align",
                                           "imgs => imgs.map(i => i.naturalWidth)")
        assert len(widths) == len(rep["items"]) and min(widths) > 0
        # the mel under its ground truth, for the items that have one (validation, held-out)
        n_gt = sum(i["mel_png"] is not None for i in rep["items"])
        assert n_gt == sum(i["source"] in ("validation", "heldout") for i in rep["items"]) > 0
        assert page.eval_on_selector_all("#items img.mel",
                                         "imgs => imgs.filter(i => i.naturalWidth > 0).length"
                                         ) == n_gt
        page.screenshot(path=str(tmp_path / "eval.png"), full_page=True)
        browser.close()
    assert (tmp_path / "eval.png").stat().st_size > 20_000
