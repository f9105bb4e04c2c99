"""``tacotrain tune report`` on synthetic studies (no training): the Pareto front of a
2-objective study (time to speak, quality), the leaderboard order, the best and Pareto configs,
the train commands, importances, the per-trial media and the HTML page in headless Chromium.
An old 1-objective study (without the time-to-speak/quality attributes) reports as before.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import soundfile as sf
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from tacotrain.cli import main
from tacotrain.config import load_config
from tacotrain.tune.report import (
    format_leaderboard,
    leaderboard,
    param_importances,
    pareto_ranks,
    train_command,
)
from tacotrain.tune.report_page import write_report
from tacotrain.tune.space import to_overrides
from tacotrain.tune.study import ATTR

from conftest import import_playwright, launch_chromium

optuna.logging.set_verbosity(optuna.logging.WARNING)

CONFIG = "tiny"
OVERRIDES = ["train.val_interval=3", "optim.warmup_steps=0"]
DIST = {"optim.lr": FloatDistribution(1e-4, 1e-2, log=True),
        "train.batch_size": CategoricalDistribution([16, 32]),
        "model.prenet_dropout": FloatDistribution(0.3, 0.6)}
METRIC = "free/wer_ratio"
SR = 22050

# trial number -> (values [time to speak, quality], time_to_speak_minutes attr)
# front: 0 (10, 5), 1 (20, 3), 3 (30, 2.5); rank 2: 2 (15, 6) and 4 (25, 4);
# rank 3: 5 (censored: never passed; its time value is a 60-minute penalty, quality 4.5)
TWO = {0: ([10.0, 5.0], 10.0), 1: ([20.0, 3.0], 20.0), 2: ([15.0, 6.0], 15.0),
       3: ([30.0, 2.5], 30.0), 4: ([25.0, 4.0], 25.0), 5: ([60.0, 4.5], None)}


def _record(out: Path, data: str | None = "/data/prepared") -> dict[str, Any]:
    rec = {"config": CONFIG, "overrides": list(OVERRIDES),
           "base": load_config(CONFIG, OVERRIDES).model_dump(mode="json"),
           "space": {"params": {}}, "max_steps": 6, "out": str(out)}
    if data is not None:
        rec["data"] = data
    return rec


def _params(k: int) -> dict[str, Any]:
    return {"optim.lr": 1e-4 * 1.7 ** k, "train.batch_size": [16, 32][k % 2],
            "model.prenet_dropout": 0.3 + 0.03 * k}


def _png(path: Path, seed: int) -> None:
    from matplotlib.figure import Figure

    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(3, 2))
    fig.add_subplot().imshow(np.random.default_rng(seed).random((20, 30)))
    fig.savefig(path, dpi=50)


def _run_dir(root: Path, number: int, audio_steps: list[int], plots: list[str]) -> Path:
    """A trial run directory laid out as training writes it: RUN/plots/*.png, the free-running
    audio under RUN/audio/val_free_run_audio/step-N.wav, recorded in RUN/events.jsonl."""
    run = root / "trials" / f"{number:04d}"
    for k, name in enumerate(plots):
        _png(run / "plots" / name, number * 10 + k)
    events = []
    for step in audio_steps:
        rel = f"audio/val_free_run_audio/step-{step:07d}.wav"
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        t = np.arange(int(0.5 * SR)) / SR
        sf.write(run / rel, 0.3 * np.sin(2 * np.pi * 220 * t), SR, subtype="PCM_16")
        events.append({"time": 0.0, "step": step, "kind": "audio",
                       "tag": "val/free_run_audio", "path": rel, "sample_rate": SR,
                       "seconds": 0.5})
    events += [{"time": 0.0, "step": max(audio_steps, default=3), "kind": "image", "tag": name,
                "path": f"plots/{name}"} for name in plots]
    run.mkdir(parents=True, exist_ok=True)
    (run / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    return run


ALL_PLOTS = ["val-free-run-alignment.png", "val-free-run-mel.png",
             "val-teacher-forced-alignment.png", "val-mel.png"]


def two_objective_study(tmp_path: Path) -> tuple[optuna.Study, str]:
    storage = f"sqlite:///{tmp_path / 'tune.db'}"
    study = optuna.create_study(study_name="pareto", storage=storage,
                                directions=["minimize", "minimize"])
    study.set_user_attr(ATTR, _record(tmp_path / "study"))
    for n, (values, tts) in TWO.items():
        run = tmp_path / "study" / "trials" / f"{n:04d}"
        if n in (0, 1):  # full media; trial 1's best validation (step 6) is not its last
            run = _run_dir(tmp_path / "study", n, [3, 6, 9], ALL_PLOTS)
        elif n == 3:  # only the free-running alignment, no audio
            run = _run_dir(tmp_path / "study", n, [], ["val-free-run-alignment.png"])
        ua = {"objective_kind": "both", "time_to_speak_minutes": tts, "passed": tts is not None,
              "quality": values[1], "quality_metric": METRIC, "run_dir": str(run),
              "outcome": "aligned" if tts is not None else "unaligned",
              "wall_minutes": values[0] + 1.0, "best_step": 6, "best_loss": values[1]}
        study.add_trial(create_trial(params=_params(n), distributions=DIST, values=values,
                                     user_attrs=ua))
    study.add_trial(create_trial(params=_params(6), distributions=DIST,
                                 state=TrialState.PRUNED, user_attrs={"outcome": "pruned"}))
    study.add_trial(create_trial(params=_params(7), distributions=DIST, state=TrialState.FAIL,
                                 user_attrs={"fail_reason": "training crashed (exit code 1)"}))
    study.add_trial(create_trial(params=_params(8), distributions=DIST,
                                 state=TrialState.RUNNING))
    return study, storage


def _sets(command: str) -> tuple[str, str, list[str]]:
    """(--config, --data, the --set values) of a ``tacotrain train`` command line."""
    argv = shlex.split(command)
    assert argv[:2] == ["tacotrain", "train"]
    sets = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    return argv[argv.index("--config") + 1], argv[argv.index("--data") + 1], sets


def test_two_objective_front_order_configs_and_commands(tmp_path: Path, capsys) -> None:
    study, storage = two_objective_study(tmp_path)
    out = tmp_path / "report"
    (out / "pareto").mkdir(parents=True)
    (out / "pareto" / "trial-0002.yaml").write_text("stale\n")  # not on the front any more

    assert sorted(t.number for t in study.best_trials) == [0, 1, 3]
    ranks = pareto_ranks(study)
    assert ranks == {0: 1, 1: 1, 3: 1, 2: 2, 4: 2, 5: 3}
    rows = leaderboard(study)
    assert [r.number for r in rows] == [0, 1, 3, 2, 4, 5, 6, 7, 8]
    assert [r.state for r in rows[-3:]] == ["PRUNED", "FAIL", "RUNNING"]
    assert rows[5].censored and rows[5].time_to_speak is None and rows[5].passed is False
    assert rows[0].time_to_speak == 10.0 and rows[0].quality == 5.0

    assert main(["tune", "report", "--study", "pareto", "--storage", storage,
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    table = [ln.split() for ln in printed.splitlines() if ln.split() and ln.split()[0].isdigit()]
    assert [int(r[1]) for r in table] == [0, 1, 3, 2, 4, 5, 6, 7, 8]
    assert [r[3] for r in table[:6]] == ["1", "1", "1", "2", "2", "3"]
    assert table[5][4] == "censored"
    assert METRIC in printed.splitlines()[0]
    assert "  trial 0: 10.0 min, 5 free/wer_ratio" in printed
    assert "  trial 3: 30.0 min, 2.5 free/wer_ratio" in printed
    assert "  trial 2:" not in printed and "  trial 5:" not in printed
    assert f"report: {out / 'report.html'}" in printed

    # best_config.yaml: the base config with the fastest front trial's (0) parameters
    t = {tr.number: tr for tr in study.trials}
    expected = load_config(CONFIG, [*OVERRIDES, *to_overrides(t[0].params)])
    got = load_config(out / "best_config.yaml")
    assert got.model_dump() == expected.model_dump()
    assert got.optim.lr == pytest.approx(t[0].params["optim.lr"])
    assert got.train.batch_size == 16 and got.optim.warmup_steps == 0
    assert "trial 0, time to speak 10.0 min" in (out / "best_config.yaml").read_text()
    assert sorted(p.name for p in (out / "pareto").iterdir()) == \
        ["trial-0000.yaml", "trial-0001.yaml", "trial-0003.yaml"]
    for n in (0, 1, 3):
        cfg = load_config(out / "pareto" / f"trial-{n:04d}.yaml")
        assert cfg.model.prenet_dropout == pytest.approx(t[n].params["model.prenet_dropout"])

    # the command of every trial: each parameter as --set k=v, round trip through load_config
    fastest = [ln for ln in printed.splitlines() if ln.startswith("train the fastest")]
    assert fastest == [f"train the fastest (trial 0): {train_command(study, t[0])}"]
    for n in (0, 3, 7):
        command = train_command(study, t[n])
        config, data, sets = _sets(command)
        assert (config, data) == (CONFIG, "/data/prepared")
        assert f"--out runs/trial-{n:04d}" in command
        assert sets[:len(OVERRIDES)] == OVERRIDES
        assert sets[len(OVERRIDES):] == to_overrides(t[n].params)
        assert [s.split("=")[0] for s in sets[len(OVERRIDES):]] == list(t[n].params)
        cfg = load_config(config, sets)
        assert cfg.optim.lr == t[n].params["optim.lr"]
        assert cfg.train.batch_size == t[n].params["train.batch_size"]
        assert cfg.model.prenet_dropout == t[n].params["model.prenet_dropout"]
        assert cfg.model_dump() == load_config(
            CONFIG, [*OVERRIDES, *to_overrides(t[n].params)]).model_dump()

    # the plots, the importances per objective, the copied media
    assert (out / "plots" / "pareto_front.png").stat().st_size > 5000
    html = (out / "report.html").read_text(encoding="utf-8")
    links = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert len(links) > 20
    assert all(not link.startswith("/") and ":" not in link for link in links), links
    assert "<script" not in html
    for objective in ("time to speak", f"quality ({METRIC})"):
        assert f"<th>{objective}</th>" in html
    media = out / "report-media"
    assert sorted(p.name for p in (media / "0001").glob("*.wav")) == \
        ["free-run-step-0000006.wav", "free-run-step-0000009.wav"]  # best (6) and last (9)
    assert sorted(p.name for p in (media / "0000").glob("*.png")) == sorted(ALL_PLOTS)
    assert not list((media / "0003").glob("*.wav"))
    section3 = html.split('id="trial-0003"')[1].split("</section>")[0]
    assert section3.count('<span class="missing">missing</span>') == 3
    assert "no free-running audio" in section3
    assert "<figcaption>free-running alignment (step 3)</figcaption>" in section3
    section1 = html.split('id="trial-0001"')[1].split("</section>")[0]
    for caption in ("free-running alignment (step 9)", "teacher-forced mel (step 9)",
                    "free-running audio, best validation (step 6)",
                    "free-running audio, last validation (step 9)"):
        assert f"<figcaption>{caption}</figcaption>" in section1


def test_report_page_in_browser_and_without_run_dirs(tmp_path: Path) -> None:
    import shutil

    study, storage = two_objective_study(tmp_path)
    out = tmp_path / "report"
    write_report(study, out, "sqlite:///somewhere/tune.db")
    shutil.rmtree(tmp_path / "study" / "trials" / "0000")  # the copies keep the page whole
    rep = write_report(study, out, "sqlite:///somewhere/tune.db")
    assert rep.html == out / "report.html"
    html = rep.html.read_text(encoding="utf-8")
    assert "no longer exists; showing earlier copies" in html

    sync_playwright = import_playwright()
    with sync_playwright() as pw:
        browser = launch_chromium(pw)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(30_000)
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.goto(rep.html.as_uri())

            assert page.locator("h1").inner_text() == "Study pareto"
            assert page.locator('td[data-fact="storage"]').inner_text() == \
                "sqlite:///somewhere/tune.db"
            rows = page.eval_on_selector_all("#leaderboard tbody tr",
                                             "rs => rs.map(r => Number(r.dataset.trial))")
            assert rows == [0, 1, 3, 2, 4, 5, 6, 7, 8]
            assert page.locator("#leaderboard tbody tr.front").count() == 3
            censored = page.locator('#leaderboard tr[data-trial="5"] td').nth(4).inner_text()
            assert censored == "censored"
            front = page.eval_on_selector_all("#front tbody tr",
                                              "rs => rs.map(r => Number(r.dataset.trial))")
            assert front == [0, 1, 3]

            page.wait_for_function("() => { const i = document.querySelector('#pareto_front');"
                                   " return i && i.complete && i.naturalWidth > 0; }")
            assert page.eval_on_selector("#pareto_front", "i => i.naturalWidth") == 900

            for n, count in ((0, 2), (1, 2), (3, 0), (2, 0)):
                audio = page.locator(f"#trial-{n:04d} audio.free-run")
                assert audio.count() == count, n
            page.wait_for_function(
                "() => [...document.querySelectorAll('audio.free-run')]"
                ".every(a => a.readyState >= 1 && a.duration > 0)")
            durations = page.eval_on_selector_all("audio.free-run",
                                                  "as => as.map(a => a.duration)")
            assert durations == pytest.approx([0.5] * 4, abs=0.01)
            page.wait_for_function(
                "() => [...document.querySelectorAll('#trial-0000 img.media')]"
                ".every(i => i.complete && i.naturalWidth > 0)")
            assert page.locator("#trial-0000 img.media").count() == 4
            cmd = page.locator("#trial-0001 pre.cmd").inner_text()
            assert cmd == train_command(study, study.trials[1])
            assert all(u.startswith(("file:", "data:")) for u in requests), requests
        finally:
            browser.close()


def old_style_study(tmp_path: Path) -> tuple[optuna.Study, str]:
    """A 1-objective study as ``tacotrain tune`` made it before time to speak existed."""
    storage = f"sqlite:///{tmp_path / 'old.db'}"
    study = optuna.create_study(study_name="old", storage=storage, direction="minimize")
    study.set_user_attr(ATTR, _record(tmp_path / "old", data=None))
    for n, (value, outcome) in enumerate([(1007.5, "unaligned"), (6.25, "aligned"),
                                          (3000.0, "diverged"), (5.5, "aligned")]):
        study.add_trial(create_trial(
            params=_params(n), distributions=DIST, value=value,
            user_attrs={"outcome": outcome, "best_loss": value % 1000, "best_step": 6,
                        "wall_minutes": 1.5 + n, "run_dir": str(tmp_path / f"gone-{n}")}))
    study.add_trial(create_trial(params=_params(4), distributions=DIST,
                                 state=TrialState.PRUNED, intermediate_values={3: 1009.0}))
    study.add_trial(create_trial(params=_params(5), distributions=DIST,
                                 state=TrialState.PRUNED, intermediate_values={3: 1004.0}))
    study.add_trial(create_trial(params=_params(6), distributions=DIST, state=TrialState.FAIL,
                                 user_attrs={"fail_reason": "interrupted"}))
    return study, storage


def test_old_one_objective_study_reports_as_before(tmp_path: Path, capsys) -> None:
    study, storage = old_style_study(tmp_path)
    out = tmp_path / "report"
    assert main(["tune", "report", "--study", "old", "--storage", storage,
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    assert lines[0].split() == ["rank", "trial", "state", "objective", "aligned", "metric",
                                "min", "params", "/", "note"]
    table = [ln.split() for ln in lines if ln.split() and ln.split()[0].isdigit()]
    assert [int(r[1]) for r in table] == [3, 1, 0, 2, 5, 4, 6]
    assert [r[4] for r in table[:4]] == ["yes", "yes", "no", "diverged"]
    assert table[0][3] == "5.5000" and table[4][3] == "1004.0000"
    assert lines[5].endswith("batch_size=32  pruned at step 3")  # trial 5
    assert lines[7].endswith("batch_size=16  interrupted")  # trial 6
    assert format_leaderboard(leaderboard(study)) == "\n".join(lines[:8])
    assert "Pareto" not in printed
    assert f"train the best (trial 3): {train_command(study, study.trials[3])}" in printed

    cfg = load_config(out / "best_config.yaml")
    best = study.trials[3]
    assert cfg.optim.lr == pytest.approx(best.params["optim.lr"])
    assert cfg.model_dump() == load_config(
        CONFIG, [*OVERRIDES, *to_overrides(best.params)]).model_dump()
    assert "Best trial of study 'old': trial 3, objective 5.5000 (aligned" in \
        (out / "best_config.yaml").read_text()
    assert not (out / "pareto").exists()
    for name in ("optimization_history", "param_importances", "intermediate_values"):
        assert (out / "plots" / f"{name}.png").stat().st_size > 1000

    html = (out / "report.html").read_text(encoding="utf-8")
    assert 'id="optimization_history"' in html and 'id="pareto_front"' not in html
    assert "DATA (not recorded by this study)" in html
    _, data, _ = _sets(train_command(study, best))
    assert data == "DATA"
    assert html.count('<tr class="') == 7
    assert "<th>objective</th>" in html  # the importances table
    for n in range(4):
        assert f"run directory {tmp_path / f'gone-{n}'} no longer exists" in html


def test_importances_are_skipped_with_a_note(tmp_path: Path) -> None:
    study = optuna.create_study(directions=["minimize", "minimize"])
    study.add_trial(create_trial(params=_params(0), distributions=DIST, values=[1.0, 2.0]))
    imp, notes = param_importances(study)
    assert imp == {} and notes == ["parameter importances: need 2 complete trials, "
                                   "the study has 1"]
    study.add_trial(create_trial(params=_params(0), distributions=DIST, values=[2.0, 1.0]))
    imp, notes = param_importances(study)
    assert imp == {} and "no parameter varies" in notes[0]
    for k in range(1, 8):
        study.add_trial(create_trial(params=_params(k), distributions=DIST,
                                     values=[1.0 + k, 10.0 - k * (k % 3)]))
    imp, notes = param_importances(study, ["time", "quality"])
    assert notes == [] and list(imp) == ["time", "quality"]
    for d in imp.values():
        assert set(d) == set(DIST) and math.isclose(sum(d.values()), 1.0, abs_tol=1e-6)
