"""The ``tacotrain eval`` HTML page: string checks, then a real headless Chromium opening it.

The browser test fails (never skips) when Playwright or Chromium is missing: ``make test``
installs both, and a skipped test would hide a page that no longer plays or sorts.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from tacotrain.evaluate.html import write_report_html
from tacotrain.judge.alignment import plot_alignment

from conftest import import_playwright, launch_chromium

SR = 22050
EVIL_TEXT = 'Привет <b>мир</b> & "quotes" \'single\''


def _media(out_dir: Path, name: str, seed: int) -> tuple[str, str]:
    """A real 0.5 s sine WAV and a real alignment PNG under ``out_dir``; their relative paths."""
    wav, png = f"wav/{name}.wav", f"align/{name}.png"
    (out_dir / "wav").mkdir(parents=True, exist_ok=True)
    t = np.arange(int(0.5 * SR)) / SR
    sf.write(out_dir / wav, 0.3 * np.sin(2 * np.pi * (220 + 110 * seed) * t), SR, subtype="PCM_16")
    attn = np.random.default_rng(seed).random((40, 12))
    plot_alignment(attn / attn.sum(axis=1, keepdims=True), out_dir / png, title=name)
    return wav, png


def _item(item_id: str, source: str, **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": item_id, "source": source, "category": None, "text": "plain text",
        "aligned": True, "reasons": [], "stopped_by_gate": True, "frames": 100,
        "length_ratio": 1.02, "skipped_tokens": 0, "repeated_tokens": 0, "diagonality": 0.91,
        "focus": 0.72, "coverage": 0.98, "monotonicity": 0.99, "mcd_dtw_db": 6.5432,
        "rtf": 0.123, "extra_unknown_key": {"ignored": True},
    }
    base.update(kw)
    return base


@pytest.fixture
def report_dir(tmp_path: Path) -> Path:
    """A 3-item report: not aligned (with reasons), robustness item full of nulls, aligned.

    Not in frames order, so that sorting by frames visibly moves rows.
    """
    out = tmp_path / "eval"
    items = [
        _item("sentences-0001", "sentences", text=EVIL_TEXT, aligned=False, frames=300,
              reasons=["skipped_tokens", "not_identified"], skipped_tokens=3, length_ratio=1.8,
              stopped_by_gate=False),
        _item("robustness-0001", "robustness", category="numbers", text="12 < 13 & 14",
              frames=None, length_ratio=None, skipped_tokens=None, repeated_tokens=None,
              diagonality=None, focus=None, coverage=None, monotonicity=None,
              mcd_dtw_db=None, rtf=None, stopped_by_gate=None),
        _item("validation-0001", "validation", frames=120),
    ]
    for seed, item in enumerate(items):
        item["wav"], item["alignment_png"] = _media(out, item["id"], seed)
    report = {
        "checkpoint": "runs/ru/<best>.pt",
        "summary": {
            "items": 3, "aligned_share": 2 / 3, "gate_stop_share": 1 / 3,
            "median_length_ratio": 1.41, "median_mcd_dtw_db": 6.5432,
            "gt_resynthesis_mcd_dtw_db": None, "rtf": 0.123,
            "by_source": {"validation": {"items": 1, "aligned_share": 1.0},
                          "sentences": {"items": 1, "aligned_share": 0.0},
                          "robustness": {"items": 1, "aligned_share": 1.0}},
            "robustness_failure_rate": {"numbers": 0.0},
        },
        "items": items,
    }
    assert write_report_html(report, out) == out / "report.html"
    return out


def test_html_is_offline_and_escaped(report_dir: Path) -> None:
    html = (report_dir / "report.html").read_text(encoding="utf-8")
    assert "http://" not in html and "https://" not in html
    assert '<meta charset="utf-8">' in html
    assert "Привет &lt;b&gt;мир&lt;/b&gt; &amp; &quot;quotes&quot; &#x27;single&#x27;" in html
    assert "<b>мир</b>" not in html
    assert "runs/ru/&lt;best&gt;.pt" in html
    assert "12 &lt; 13 &amp; 14" in html
    assert "aligned share: 0.667 (2/3)" in html
    assert html.count('preload="metadata" src="data:audio/wav;base64,') == 3
    assert html.count('src="data:image/png;base64,') == 3


def test_missing_media_says_missing(tmp_path: Path) -> None:
    report = {"checkpoint": "x.pt", "summary": {},
              "items": [_item("a", "heldout", wav="wav/none.wav", alignment_png=None)]}
    target = write_report_html(report, tmp_path, tmp_path / "sub" / "page.html")
    html = target.read_text(encoding="utf-8")
    assert target == tmp_path / "sub" / "page.html"
    assert html.count('<span class="missing">missing</span>') == 2
    assert "<audio" not in html


def _row_ids(page: Any) -> list[str]:
    return page.eval_on_selector_all("#items tr.item", "rows => rows.map(r => r.dataset.id)")


def test_report_in_browser(report_dir: Path, tmp_path: Path) -> None:
    sync_playwright = import_playwright()

    with sync_playwright() as pw:
        browser = launch_chromium(pw)
        try:
            context = browser.new_context(viewport={"width": 1600, "height": 1000})
            page = context.new_page()
            page.set_default_timeout(30_000)
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.goto((report_dir / "report.html").as_uri())

            assert page.locator("#items tr.item").count() == 3
            assert "runs/ru/<best>.pt" in page.locator("h1").inner_text()
            fail = page.locator("#items tr.item.fail")
            assert fail.count() == 1
            assert fail.get_attribute("data-id") == "sentences-0001"
            assert "skipped_tokens, not_identified" in fail.locator("td.c-reasons").inner_text()
            assert EVIL_TEXT in fail.locator("td.c-text").inner_text()

            assert page.locator("#items tr.item audio").count() == 3
            page.wait_for_function(
                "() => [...document.querySelectorAll('#items audio')]"
                ".every(a => a.readyState >= 1 && a.duration > 0)"
            )
            durations = page.eval_on_selector_all("#items audio", "as => as.map(a => a.duration)")
            assert durations == pytest.approx([0.5] * 3, abs=0.01)

            imgs = page.locator("#items img.align")
            assert imgs.count() == 3
            page.wait_for_function(
                "() => [...document.querySelectorAll('#items img.align')]"
                ".every(i => i.complete && i.naturalWidth > 0)"
            )
            for i in range(3):
                assert imgs.nth(i).is_visible()

            assert _row_ids(page) == ["sentences-0001", "robustness-0001", "validation-0001"]
            header = page.locator('#items th[data-key="frames"]')
            header.click()  # ascending; the null frames stay last
            assert _row_ids(page) == ["validation-0001", "sentences-0001", "robustness-0001"]
            header.click()  # descending; nulls still last
            assert _row_ids(page) == ["sentences-0001", "validation-0001", "robustness-0001"]
            page.locator('#items th[data-key="id"]').click()  # text sort
            assert _row_ids(page) == ["robustness-0001", "sentences-0001", "validation-0001"]

            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            assert all(u.startswith(("file:", "data:")) for u in requests), requests
        finally:
            browser.close()


def test_the_content_tested_count_says_what_the_test_establishes(tmp_path: Path) -> None:
    """The content test identifies which sentence a synthesis says, told apart by recordings of
    several sentences: the count is not "items with ground truth" (an item with a recording
    among too few sentences is not tested) nor a comparison of sound with its recording."""
    from tacotrain.evaluate.run import format_summary

    summary = {"items": 5, "content_tested_items": 3, "aligned_share": 0.6,
               "gate_stop_share": 1.0, "median_length_ratio": 1.0, "median_mcd_dtw_db": 4.0,
               "gt_resynthesis_mcd_dtw_db": 3.5, "rtf": 0.2, "robustness_failure_rate": {},
               "by_source": {"validation": {"items": 5, "aligned_share": 0.6}}}
    report = {"checkpoint": "c.pt", "summary": summary, "items": []}
    page = write_report_html(report, tmp_path / "eval").read_text()
    label = re.search(r"<li>(items tested for content[^<]*): 3</li>", page)
    assert label, page
    words = label.group(1)
    assert "own sentence" in words and "not how near its sound" in words
    line = format_summary(report).splitlines()[0]
    assert line.startswith("5 items (3 tested for content: identified as their own sentence")
    for text in (page, format_summary(report)):
        assert "with ground truth" not in text
