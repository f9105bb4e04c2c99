"""The one entry point: ``tacotrain COMMAND ...``. ``tacotrain COMMAND --help`` explains each."""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_GUARD = 0, 1, 2, 3
VOCODER_HELP = ("griffin_lim (default), or hifigan:PATH: a HiFi-GAN generator file in the "
                "jik876/hifi-gan format, its config.json beside it")
VOCODER_CONFIG_HELP = "the HiFi-GAN config.json, where it is not beside the generator file"
TRUST_HELP = ("allow the checkpoint to unpickle arbitrary Python objects, which can run code: "
              "only for files you trust; by default only tensors and plain values load")


def _settings_from(args: argparse.Namespace):
    from tacotrain.config import Settings, build, load_yaml

    base = load_yaml(args.config) if args.config else {}
    source = str(args.config) if args.config else "defaults"
    if args.lang:
        args.set = [f"text.language={args.lang}", *args.set]
    return build(Settings, base, args.set, source)


def cmd_prepare(args: argparse.Namespace) -> int:
    from tacotrain.data.prepare import format_summary, prepare

    settings = _settings_from(args)
    result = prepare(args.corpus, args.out, settings, fmt=args.format, workers=args.workers,
                     progress=not args.quiet)
    print(format_summary(result.report))
    print(f"report: {Path(args.out) / 'report.json'}")
    if args.strict and result.rejected:
        print(f"--strict: {result.rejected} item(s) rejected", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def cmd_corpus_mini(args: argparse.Namespace) -> int:
    from tacotrain.data.mini import corpus_info, make_mini_corpus

    meta = make_mini_corpus(args.out, args.lang, args.size, args.seed, workers=args.workers,
                            progress=not args.quiet, engine=args.engine, style=args.style,
                            speed=args.speed)
    print(f"mini corpus: {args.size} clips ({args.lang}, {args.engine}) in {meta.parent}")
    cover = corpus_info(meta.parent).get("coverage")
    if cover:
        print(f"covers {cover['words']} distinct words, {cover['phones_seen']} of "
              f"{cover['phones_total']} phones, {cover['phone_pairs']} phone pairs within words"
              + (f"; phones never heard: {' '.join(cover['phones_missing'])}"
                 if cover["phones_missing"] else ""))
    return EXIT_OK


def cmd_train(args: argparse.Namespace) -> int:
    from tacotrain.config import load_config
    from tacotrain.infer.device import resolve_device
    from tacotrain.train.ddp import process_group
    from tacotrain.train.trainer import GuardStop, Trainer

    warm = []  # --init-from / --ignore-layers are config keys; JSON is YAML, so any path parses
    if args.init_from is not None:
        warm.append(f"train.init_from={json.dumps(str(args.init_from))}")
    if args.ignore_layers:
        warm.append(f"train.ignore_layers={json.dumps(args.ignore_layers)}")
    cfg = load_config(args.config, [*args.set, *warm])
    # under torchrun: one process of several (DDP); otherwise the one process
    with process_group(resolve_device(cfg.train.device), cfg.train.ddp_timeout_minutes) as dist:
        if not dist.is_main():  # one voice on the console: the other ranks only warn
            logging.getLogger().setLevel(logging.WARNING)
        trainer = Trainer(cfg, args.data, args.out, resume=args.resume,
                          progress=not args.quiet, trust=args.trust_checkpoint, dist=dist)
        try:
            with signals_request_stop(trainer.request_stop, dist.is_main()):
                result = trainer.fit(max_steps=args.max_steps)
        except GuardStop as exc:  # agreed by every rank: every process exits 3
            if dist.is_main():
                print(f"error: {exc}", file=sys.stderr)
                print(f"resume from the last good checkpoint with: tacotrain train --resume "
                      f"--out {args.out} ... (consider a lower optim.lr)", file=sys.stderr)
            return EXIT_GUARD
        finally:
            # the DDP wrapper holds gloo's work objects: freed while the group and the
            # interpreter are alive, not at interpreter exit (seen once: SIGABRT at exit)
            del trainer
            gc.collect()
    if not dist.is_main():
        return EXIT_OK
    v = result.last_val
    print(f"stopped at step {result.step} ({result.stop_reason}) after "
          f"{result.wall_seconds / 60:.1f} min; aligned: {str(result.aligned).lower()}")
    if v:
        print(f"validation: mel {v.get('val/mel_post', float('nan')):.4f}; free-running: "
              f"{result.verdict}; MCD-DTW {v.get('free/mcd_dtw_db', float('nan')):.2f} dB, "
              f"focus {v.get('free/focus', float('nan')):.2f}, "
              f"stopped by gate {100 * v.get('free/stopped_by_gate', 0):.0f}%")
    print(f"checkpoint: {result.last_checkpoint}")
    return EXIT_OK


def cmd_synth(args: argparse.Namespace) -> int:
    from tacotrain.infer.synth import Synthesizer

    if (args.text is None) == (args.text_file is None):
        print("error: give exactly one of --text or --text-file", file=sys.stderr)
        return EXIT_USAGE
    if args.model is not None:  # an export: safetensors + json, nothing unpickled
        synth = Synthesizer.from_pretrained(args.model, device=args.device, vocoder=args.vocoder,
                                            vocoder_config=args.vocoder_config)
    else:
        synth = Synthesizer.from_checkpoint(args.checkpoint, device=args.device,
                                            vocoder=args.vocoder,
                                            vocoder_config=args.vocoder_config,
                                            trust=args.trust_checkpoint)
    if args.text is not None:
        jobs = [(args.text, args.out, args.save_mel)]
    else:
        lines = [ln.strip() for ln in args.text_file.read_text(encoding="utf-8").splitlines()]
        lines = [ln for ln in lines if ln]
        mels = args.save_mel  # a directory here, as --out is
        jobs = [(ln, args.out / f"{k:04d}.wav", None if mels is None else mels / f"{k:04d}.npy")
                for k, ln in enumerate(lines, start=1)]
    for text, path, mel_path in jobs:
        result = synth.synthesize(text, seed=args.seed)
        info = synth.save(result, path)
        if mel_path is not None:
            synth.save_mel(result, mel_path)
        verdict = "aligned" if info["aligned"] else "not aligned: " + ", ".join(info["reasons"])
        print(f"{path}: {info['seconds']:.2f} s, {verdict} (attention only, content untested: "
              f"tacotrain eval --heldout judges recorded sentences); stopped by gate: "
              f"{str(info['stopped_by_gate']).lower()}, skipped tokens {info['skipped_tokens']}, "
              f"focus {info['focus']:.2f}, rtf {info['rtf']}")
    return EXIT_OK


def cmd_eval(args: argparse.Namespace) -> int:
    from tacotrain.data.loader import PreparedData
    from tacotrain.evaluate.run import EvalError, format_summary, prepared_items, run_eval

    heldout = None
    if args.heldout:
        held, data = PreparedData.load(args.heldout), PreparedData.load(args.data)
        if (held.language, held.symbols, held.settings.audio) != (
                data.language, data.symbols, data.settings.audio):
            raise EvalError(f"--heldout {args.heldout}: its language, symbol table "
                            f"(text.phonemes) or audio settings differ "
                            f"from {args.data}'s; prepare it with the same settings "
                            f"(DATA/settings.yaml) and language")
        heldout = prepared_items(held, "heldout")
    report = run_eval(args.checkpoint, args.data, args.out, sentences=args.sentences,
                      robustness=args.robustness, vocoder=args.vocoder,
                      vocoder_config=args.vocoder_config, device=args.device,
                      seed=args.seed, asr=not args.no_asr, progress=not args.quiet,
                      heldout=heldout, trust=args.trust_checkpoint, asr_model=args.asr_model)
    print(format_summary(report))
    print(f"report: {args.out / 'report.json'} and {args.out / 'report.html'}")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from tacotrain.config import load_config
    from tacotrain.demo import describe_failure, run_demo

    lang = [f"demo.language={args.lang}"] if args.lang else []  # --lang wins over --set
    lang += [f"demo.engine={args.engine}"] if args.engine else []
    config = args.config
    if config is None:  # the natural preset for Kokoro's English, else the small one
        demo = load_config("small", args.set + lang).demo
        natural = demo.voice() == "kokoro" and demo.language == "en"
        config = "natural" if natural else "small"
    cfg = load_config(config, args.set + lang)
    s = run_demo(args.out, cfg, progress=not args.quiet, vocoder=args.vocoder,
                 vocoder_config=args.vocoder_config)
    t, ck, held = s["training"], s["checkpoint"], s["heldout"]
    print(f"training: {t['steps']} steps, {t['wall_seconds'] / 60:.1f} min ({t['stop_reason']})")
    print(f"checkpoint {ck['path']} (step {ck['step']}): {ck['verdict']}")
    print(f"held-out sentences: {held['aligned_share']:.0%} of {held['sentences']} pass the "
          f"verdict ({held['sentences'] - held['items']} rejected by prepare) "
          f"(needed {held['required_share']:.0%}); identified {held['identified_share']:.0%}")
    heard = held.get("intelligibility")
    if heard and heard.get("tested"):
        print(f"held-out intelligibility: recogniser WER {heard['wer']:.3f}, resynthesis floor "
              f"{heard['floor_wer']:.3f} (x{heard['ratio']:.2f}, bound {heard['wer_bound']:.3f}): "
              f"{'intelligible' if heard['intelligible'] else 'NOT intelligible'}")
    elif heard:
        print(f"held-out intelligibility: untested ({heard['note']})")
    for smp in held["samples"]:
        status = "aligned" if smp["aligned"] else "not aligned: " + ", ".join(smp["reasons"])
        wer = f" WER {smp['wer']:.2f} (floor {smp['floor_wer']:.2f})" \
            if smp.get("wer") is not None and smp.get("floor_wer") is not None else ""
        print(f"  {smp['wav']}: {status}{wer} <- {smp['text']!r}")
    print(f"report: {args.out / s['report']['html']}; plots: "
          f"{args.out / s['plots']['training_curves']}, {args.out / s['plots']['free_run_mel']}")
    print(f"summary: {args.out / 'summary.json'}")
    if s["passed"]:
        print("passed: the voice reads its validation sentences and the held-out sentences")
        return EXIT_OK
    for line in describe_failure(s):
        print(f"not passed: {line}", file=sys.stderr)
    return EXIT_ERROR


def cmd_vocode(args: argparse.Namespace) -> int:
    from tacotrain.audio import (
        VocoderError,
        load_audio,
        load_vocoder,
        mel_spectrogram,
        read_mel,
        save_wav,
    )
    from tacotrain.config import AudioConfig
    from tacotrain.data.loader import PreparedData
    from tacotrain.infer.device import resolve_device

    if (args.mel is None) == (args.wav is None):
        print("error: give exactly one of --mel or --wav", file=sys.stderr)
        return EXIT_USAGE
    audio = PreparedData.load(args.data).settings.audio if args.data else AudioConfig()
    device = resolve_device(args.device)
    # a --mel file without --data is taken as the vocoder's own mel (its config says which)
    fit = audio if args.data or args.wav is not None else None
    vocoder = load_vocoder(args.vocoder, fit, args.vocoder_config, device=device)
    if args.mel is not None:
        mel = read_mel(args.mel, getattr(vocoder, "n_mels", audio.n_mels))  # [n_mels, T]
    else:
        samples = load_audio(args.wav, audio.sample_rate).samples
        if len(samples) <= audio.n_fft // 2:
            raise VocoderError(f"{args.wav}: {len(samples)} samples at {audio.sample_rate} Hz "
                               f"are too short for one mel frame (need more than "
                               f"{audio.n_fft // 2})")
        mel = mel_spectrogram(samples, audio)  # [n_mels, T]
    wav = vocoder(mel.to(device))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_wav(args.out, wav, vocoder.sample_rate)
    print(f"{args.out}: {mel.shape[1]} frames, {len(wav)} samples, "
          f"{len(wav) / vocoder.sample_rate:.2f} s at {vocoder.sample_rate} Hz")
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from tacotrain.infer.pretrained import CONFIG_FILE, WEIGHTS_FILE, export_model

    src = export_model(args.checkpoint, args.out, trust=args.trust_checkpoint,
                       overwrite=args.force)
    values = sum(t.numel() for t in src.state.values())
    kind = "phonemes" if src.phonemes else "letters"
    print(f"{args.out / WEIGHTS_FILE}: {len(src.state)} tensors ({values / 1e6:.2f}M values) "
          f"from {src.describe()}")
    print(f"{args.out / CONFIG_FILE}: {src.language} {kind}, {len(src.symbols)} symbols, "
          f"r = {src.r}, {src.audio.sample_rate} Hz, {src.audio.n_mels} mels")
    print(f"synthesise with: tacotrain synth --model {args.out} --text ... --out x.wav")
    return EXIT_OK


def cmd_track_sync(args: argparse.Namespace) -> int:
    from tacotrain.extras import require

    require("mlflow", "tacotrain track sync", "mlflow")
    from tacotrain.track.mlflow_sync import TrackError, sync

    try:
        rep = sync(args.run, tracking_uri=args.tracking_uri)
    except TrackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    made = "created" if rep.created else "continued"
    print(f"MLflow run {rep.run_id} ({made}) at {rep.tracking_uri}: sent {rep.events} events "
          f"({rep.metrics} metric values, {rep.params} params, {rep.files} files); "
          f"status {rep.status}")
    if rep.status_source == "none":
        print("note: the training recorded no end (killed, or still running): status KILLED",
              file=sys.stderr)
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from tacotrain import serve
    from tacotrain.extras import require

    require("serve", "tacotrain serve", "fastapi", "uvicorn")

    serve.run(checkpoint=args.checkpoint, model=args.model, runs=args.runs,
              vocoder=args.vocoder, vocoder_config=args.vocoder_config,
              trust=args.trust_checkpoint, host=args.host, port=args.port, device=args.device,
              overrides=args.set, announce=lambda line: print(line, flush=True))
    print("stopped.")
    return EXIT_OK


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM (``kill PID``) like Ctrl-C, so runs close cleanly (checkpoint, MLflow
    status KILLED, child processes stopped)."""

    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def signals_request_stop(request: Callable[[], None], say: bool) -> Iterator[None]:
    """Ctrl-C (SIGINT) or SIGTERM calls ``request`` (the run stops after its current update and
    writes a checkpoint to resume from); another one more than a second later raises
    KeyboardInterrupt at once. torchrun passes a Ctrl-C on to its processes as SIGTERM, so the
    two that arrive together are one request."""
    first: list[float] = []

    def on_signal(signum: int, frame: object) -> None:
        now = time.monotonic()
        if not first:
            first.append(now)
            request()
            if say:  # os.write: safe inside a signal handler, unlike print or logging
                os.write(2, b"\nstop requested: stopping after this update and writing a "
                            b"checkpoint (signal again to stop at once)\n")
        elif now - first[0] > 1.0:
            raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def cmd_monitor(args: argparse.Namespace) -> int:
    import webbrowser

    from tacotrain.track.monitor import MonitorError, start_monitor

    with sigterm_as_interrupt():
        try:
            mon = start_monitor(args.run, port=args.port, mlflow_port=args.mlflow_port,
                                mlflow=not args.no_mlflow, timeout=args.timeout)
        except MonitorError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_ERROR
        try:
            for svc in mon.services:
                print(f"{svc.name}: {svc.url}")
            for note in mon.notes:
                print(f"note: {note}")
            graphical = sys.platform in ("darwin", "win32") or bool(
                os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
            if not args.no_browser and graphical and mon.services:
                webbrowser.open(mon.services[0].url)
            print("Ctrl-C stops them.", flush=True)
            while not mon.failed():
                time.sleep(0.5)
            for svc in mon.failed():
                print(f"error: {svc.name} exited (code {svc.process.returncode}):\n"
                      f"{svc.log_tail()}", file=sys.stderr)
            return EXIT_ERROR
        except KeyboardInterrupt:
            return EXIT_OK
        finally:
            mon.stop()
            print("stopped.")


def _parse_enqueue(items: list[str]) -> list[dict[str, object]]:
    """``--enqueue 'optim.lr=1e-3,train.batch_size=16'`` -> ``[{"optim.lr": 0.001, ...}]``."""
    from tacotrain.config import parse_override

    out = []
    for item in items:
        params: dict[str, object] = {}
        for part in filter(None, (p.strip() for p in item.split(","))):
            key, value = parse_override(part)
            params[key] = float(value) if isinstance(value, str) and _is_number(value) else value
        out.append(params)
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _tune_paths(args: argparse.Namespace) -> tuple[str, Path]:
    """(storage URL, output directory) of ``tune report``/``tune dashboard``: the defaults of
    ``tacotrain tune`` (OUT = tune/STUDY, storage sqlite:///OUT/tune.db)."""
    from tacotrain.tune.study import default_storage

    out = args.out or (Path("tune") / args.study if args.study else None)
    if args.storage:
        return args.storage, out or Path(".")
    if out is None:
        raise SystemExit("error: give --storage URL (or --study / --out for the default "
                         "sqlite:///OUT/tune.db)")
    if not (out / "tune.db").exists():
        raise SystemExit(f"error: no study database at {out / 'tune.db'}; give --storage URL")
    return default_storage(out), out


def cmd_tune(args: argparse.Namespace) -> int:
    from tacotrain.extras import require

    require("tune", "tacotrain tune", "optuna")
    if str(getattr(args, "storage", None) or "").startswith("postgresql"):
        require("postgres", "a PostgreSQL --storage", "psycopg2")
    if args.tune_command == "report":
        return cmd_tune_report(args)
    if args.tune_command == "dashboard":
        return cmd_tune_dashboard(args)
    from tacotrain.tune import SpaceError, TuneError, TuneOptions, Tuner

    missing = [f for f, v in (("--data", args.data), ("--study", args.study),
                              ("--trials", args.trials)) if v is None]
    if missing:
        print(f"error: tacotrain tune needs {', '.join(missing)}", file=sys.stderr)
        return EXIT_USAGE
    opts = TuneOptions(
        config=args.config, data=args.data, study=args.study, trials=args.trials, out=args.out,
        storage=args.storage, space=args.space, overrides=args.set, max_steps=args.max_steps,
        timeout_hours=args.timeout, trial_minutes=args.trial_minutes, workers=args.workers,
        mlflow=args.mlflow, heartbeat_seconds=args.heartbeat, grace_seconds=args.grace,
        max_retries=args.retries, pruner=args.pruner, seed=args.seed,
        enqueue=_parse_enqueue(args.enqueue), keep_checkpoints=args.keep_checkpoints,
        is_worker=args.worker, worker_index=args.worker_index)
    try:
        with sigterm_as_interrupt():
            tuner = Tuner(opts)
            s = tuner.run()
    except (SpaceError, TuneError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.worker:
        return EXIT_OK
    counts = ", ".join(f"{v} {k.lower()}" for k, v in sorted(s.states.items()))
    print(f"study {s.study} ({s.storage}): {counts}; {s.trials_run_here} trial(s) run by this "
          f"command in {s.wall_seconds / 60:.1f} min")
    if s.best_number is not None:
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in s.best_params.items())
        print(f"best: trial {s.best_number}, objective {s.best_value:.4f} ({params})")
    print(f"trial runs: {s.out / 'trials'}")
    print(f"report: tacotrain tune report --study {s.study} --storage {s.storage} --out {s.out}")
    return EXIT_OK


def cmd_tune_report(args: argparse.Namespace) -> int:
    from tacotrain.tune.report import format_leaderboard, write_report
    from tacotrain.tune.study import TuneError, load_tuned_study

    if not args.study:
        print("error: tacotrain tune report needs --study", file=sys.stderr)
        return EXIT_USAGE
    storage, out = _tune_paths(args)
    try:
        study = load_tuned_study(args.study, storage)
    except TuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    rep = write_report(study, out)
    print(format_leaderboard(rep.rows))
    if rep.best_config:
        print(f"best config: {rep.best_config}")
    for path in rep.plots:
        print(f"plot: {path}")
    for note in rep.notes:
        print(f"note: {note}")
    return EXIT_OK


def cmd_tune_dashboard(args: argparse.Namespace) -> int:
    import subprocess

    from tacotrain.extras import require

    require("tune", "tacotrain tune dashboard", "optuna_dashboard")

    from tacotrain.track.monitor import (
        HOST,
        MonitorError,
        Service,
        child_env,
        pick_port,
        stop_process,
        wait_http,
    )

    storage, out = _tune_paths(args)
    port = pick_port(args.port)
    log_path = Path(out) / "optuna-dashboard.log" if Path(out).is_dir() else Path(
        os.devnull)
    cmd = [sys.executable, "-m", "optuna_dashboard._cli", storage, "--host", HOST,
           "--port", str(port)]
    with sigterm_as_interrupt():
        with open(log_path, "ab") as fh:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=fh,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    env=child_env())
        svc = Service("optuna-dashboard", f"http://{HOST}:{port}/", proc, log_path)
        try:
            wait_http(svc, args.timeout)
            print(f"optuna-dashboard: {svc.url}")
            print("Ctrl-C stops it.", flush=True)
            while svc.running():
                time.sleep(0.5)
            print(f"error: optuna-dashboard exited (code {proc.returncode}):\n{svc.log_tail()}",
                  file=sys.stderr)
            return EXIT_ERROR
        except MonitorError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_ERROR
        except KeyboardInterrupt:
            return EXIT_OK
        finally:
            stop_process(proc)
            print("stopped.")


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(
        prog="tacotrain", formatter_class=fmt,
        description="Train Tacotron 2 voices and keep the training honest.\n\n"
                    "Typical flow: corpus mini (or your own corpus) -> prepare -> train -> eval "
                    "-> synth.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    sp = sub.add_parser(
        "prepare", formatter_class=fmt,
        help="validate a corpus, normalise text, cache mels, split, write report.json",
        description="Validate every clip and transcript of CORPUS, normalise the text, extract "
                    "and cache log-mels, write a deterministic train/validation split and "
                    "DATA/report.json (kept items, rejected items with reason codes, summary).\n"
                    "Bad items never stop the run (exit 0) unless --strict is given.\n"
                    "Re-running with the same settings reuses the cached mels.",
    )
    sp.add_argument("corpus", type=Path,
                    help="corpus directory or metadata file (LJSpeech metadata.csv, "
                         "RUSLAN metadata_RUSLAN_22200.csv, or a path|text filelist)")
    sp.add_argument("--out", type=Path, required=True, help="output data directory (DATA)")
    sp.add_argument("--format", default="auto", choices=["auto", "ljspeech", "ruslan", "filelist"],
                    help="corpus format (default: detected)")
    sp.add_argument("--lang", choices=["auto", "en", "ru"], default=None,
                    help="text language (default: text.language from config, auto = detected "
                         "from the script of the transcripts)")
    sp.add_argument("--config", type=Path, default=None,
                    help="YAML with audio/text/prepare sections (default: built-in defaults)")
    sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a setting, e.g. --set prepare.max_seconds=10 (repeatable)")
    sp.add_argument("--workers", type=int, default=None,
                    help="parallel mel extraction processes (default: CPU count)")
    sp.add_argument("--strict", action="store_true", help="exit 1 if any item is rejected")
    sp.add_argument("--quiet", action="store_true", help="no progress bar")
    sp.set_defaults(func=cmd_prepare)

    cp = sub.add_parser("corpus", help="built-in corpora (the mini corpus)",
                        description="Built-in corpora.")
    csub = cp.add_subparsers(dest="corpus_command", metavar="KIND", required=True)
    mp = csub.add_parser(
        "mini", formatter_class=fmt, help="write the mini corpus (LJSpeech format)",
        description="Write an LJSpeech-format corpus (wavs/*.wav 22050 Hz mono 16-bit, "
                    "metadata.csv id|text|normalized, corpus.json) from a deterministic "
                    "sentence generator: varied lengths (about 1-8 s), numbers, abbreviations, "
                    "questions, punctuation. --engine kokoro: a natural-sounding neural voice "
                    "(Kokoro-82M, offline, the 'natural' extra); in English it reads varied "
                    "sentences from a lexicon of several hundred words and prints what the "
                    "texts cover, in Russian the espeak-ng corpus's sentences with an accent "
                    "(not measured by a recogniser: none ships for Russian). --engine "
                    "espeak: espeak-ng's robotic voice (English or Russian), fast, for tests. "
                    "Same seed and engine, same corpus.",
    )
    mp.add_argument("--lang", choices=["en", "ru"], default="en", help="language (default en)")
    mp.add_argument("--engine", choices=["kokoro", "espeak"], default="espeak",
                    help="the voice: kokoro (natural) or espeak (default espeak)")
    mp.add_argument("--style", default="jm_kumo",
                    help="Kokoro voice style (jf_alpha, jf_gongitsune, jf_nezumi, jf_tebukuro, "
                         "jm_kumo; default jm_kumo, the one the recogniser reads best)")
    mp.add_argument("--speed", type=float, default=1.0, help="Kokoro speaking rate (0.5-2)")
    mp.add_argument("--size", type=int, default=200, help="number of clips (default 200)")
    mp.add_argument("--seed", type=int, default=0, help="sentence generator seed (default 0)")
    mp.add_argument("--out", type=Path, required=True, help="output corpus directory")
    mp.add_argument("--workers", type=int, default=2,
                    help="parallel speakers: espeak-ng processes or one-thread Kokoro sessions")
    mp.add_argument("--quiet", action="store_true", help="no progress bar")
    mp.set_defaults(func=cmd_corpus_mini)

    tp = sub.add_parser(
        "train", formatter_class=fmt, help="train a Tacotron 2 on prepared data",
        description="Train a Tacotron 2 on DATA (from `tacotrain prepare`), writing checkpoints, "
                    "TensorBoard logs (RUN/tb), events.jsonl and plots to RUN.\n"
                    "Validation (every train.val_interval steps) reports teacher-forced losses "
                    "and the alignment of free-running synthesis of a few validation sentences.\n"
                    "Several processes (DistributedDataParallel): torchrun --standalone "
                    "--nproc-per-node N -m tacotrain train ...; the global batch is "
                    "train.batch_size x N x train.grad_accum_steps, rank 0 writes RUN (README: "
                    "'Several processes and machines').",
    )
    tp.add_argument("--config", default="small",
                    help="preset name (default, small, natural, tiny) or a YAML file "
                         "(default: small)")
    tp.add_argument("--data", type=Path, required=True, help="prepared data directory")
    tp.add_argument("--out", type=Path, required=True, help="run directory (RUN)")
    tp.add_argument("--resume", action="store_true",
                    help="continue the run in RUN exactly from its latest checkpoint; newer "
                         "ones that do not load are skipped (renamed NAME.skipped, recorded "
                         "in RUN/guard.jsonl); exit 2 when none loads")
    tp.add_argument("--trust-checkpoint", action="store_true",
                    help=TRUST_HELP + " (the checkpoints of --resume and --init-from)")
    tp.add_argument("--max-steps", type=int, default=None,
                    help="stop after this many steps in total (default: train.max_steps)")
    tp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override any config key, e.g. --set optim.lr=5e-4 (repeatable)")
    tp.add_argument("--init-from", type=Path, default=None, metavar="CKPT",
                    help="warm start: the model's weights from CKPT, a tacotrain checkpoint or "
                         "an NVIDIA/tacotron2 one (tacotron2_statedict.pt); embedding rows are "
                         "copied for the symbols both tables hold, every other tensor whose "
                         "name and shape match; optimiser, step and schedules start fresh. "
                         "Sets train.init_from; RUN/init_from.json records what was copied. "
                         "Not with --resume")
    tp.add_argument("--ignore-layers", nargs="+", action="extend", default=[], metavar="NAME",
                    help="with --init-from: name prefixes (e.g. embedding, "
                         "decoder.linear_projection) whose tensors keep their fresh "
                         "initialisation; sets train.ignore_layers")
    tp.add_argument("--quiet", action="store_true", help="no progress bar")
    tp.set_defaults(func=cmd_train)

    yp = sub.add_parser(
        "synth", formatter_class=fmt, help="synthesise speech from a checkpoint",
        description="Synthesise TEXT with a trained checkpoint (Griffin-Lim, or a HiFi-GAN "
                    "generator with --vocoder hifigan:PATH). "
                    "Next to each wav: x.json (frames, seconds, stopped_by_gate, the alignment "
                    "verdict without ground truth: aligned, reasons, skipped/repeated/stalled "
                    "tokens, diagonality, focus, coverage, monotonicity; synthesis_seconds, "
                    "rtf) and x.png (the alignment). The decoder step limit scales with the "
                    "text length. Whether the voice says the sentence needs ground truth: "
                    "see `tacotrain eval`.",
    )
    source = yp.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="checkpoint (.pt)")
    source.add_argument("--model", type=Path, metavar="DIR",
                        help="a model written by `tacotrain export` (model.safetensors and "
                             "config.json; loaded without unpickling)")
    yp.add_argument("--text", default=None, help="the sentence to speak")
    yp.add_argument("--text-file", type=Path, default=None,
                    help="one sentence per line; --out is then a directory (0001.wav, ...)")
    yp.add_argument("--out", type=Path, required=True, help="output wav (or directory)")
    yp.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    yp.add_argument("--vocoder", default=None, help=VOCODER_HELP)
    yp.add_argument("--vocoder-config", type=Path, default=None, help=VOCODER_CONFIG_HELP)
    yp.add_argument("--save-mel", type=Path, default=None, metavar="PATH.npy",
                    help="also save the [n_mels, T] float32 log-mel the vocoder was given (text "
                         "read in pieces: the pieces' mels joined with floor-level pause frames); "
                         "with --text-file a directory (0001.npy, ...)")
    yp.add_argument("--seed", type=int, default=0, help="seed for the prenet's dropout")
    yp.add_argument("--trust-checkpoint", action="store_true", help=TRUST_HELP)
    yp.set_defaults(func=cmd_synth)

    ep = sub.add_parser(
        "eval", formatter_class=fmt, help="does the voice say the sentence? a report",
        description="Free-run CKPT on every validation item of DATA (with ground truth), every "
                    "line of --sentences (no ground truth) and, with --robustness, a built-in "
                    "hard set in the corpus language (sentences 2x and 3x the longest training "
                    "text, repeated words, long numbers, comma lists, questions, capitals). "
                    "Each item gets the alignment verdict (the `alignment` section of the "
                    "checkpoint's config): stopped by the gate, length ratio within bounds, no "
                    "skipped, repeated or stalled tokens, attention focus and coverage, and, "
                    "with ground truth, MCD-DTW (dB) and the content test: nearer to its own "
                    "recording than to any of at least alignment.min_candidates others.\n"
                    "Writes OUT/report.json, OUT/report.html (one self-contained page: summary, "
                    "a sortable table, audio and alignment per item, failures with reasons), "
                    "OUT/wav/ and OUT/img/. English items also get ASR word/character error "
                    "rates when pocketsphinx is installed (pip install 'tacotrain[asr]'; weak "
                    "on espeak-ng voices). Exit 0 whatever the verdict; 2 on bad input.",
    )
    ep.add_argument("--checkpoint", type=Path, required=True, help="checkpoint (.pt)")
    ep.add_argument("--data", type=Path, required=True,
                    help="prepared data the checkpoint was trained on (validation split)")
    ep.add_argument("--sentences", type=Path, default=None,
                    help="text file, one sentence per line (no ground truth)")
    ep.add_argument("--heldout", type=Path, default=None,
                    help="prepared data (from `tacotrain prepare`) of other recorded sentences: "
                         "every item is judged against its ground truth (source 'heldout')")
    ep.add_argument("--robustness", action="store_true", help="add the built-in hard set")
    ep.add_argument("--out", type=Path, default=Path("eval"), help="report directory")
    ep.add_argument("--vocoder", default=None, help=VOCODER_HELP)
    ep.add_argument("--vocoder-config", type=Path, default=None, help=VOCODER_CONFIG_HELP)
    ep.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    ep.add_argument("--seed", type=int, default=0, help="seed for the prenet's dropout")
    ep.add_argument("--no-asr", action="store_true", help="skip ASR even where installed")
    ep.add_argument("--asr-model", type=Path, default=None, metavar="DIR",
                    help="listen through this Vosk model directory (any language Vosk has a "
                         "model for; the 'vosk' extra) instead of the checkpoint's "
                         "alignment.asr")
    ep.add_argument("--trust-checkpoint", action="store_true", help=TRUST_HELP)
    ep.add_argument("--quiet", action="store_true", help="no progress bar")
    ep.set_defaults(func=cmd_eval)

    dp = sub.add_parser(
        "demo", formatter_class=fmt, help="the whole job on the built-in mini corpus",
        description="Build the mini corpus (English: a natural-sounding voice, Kokoro-82M "
                    "offline; Russian, or --set demo.engine=espeak: espeak-ng), prepare it, "
                    "train on this machine until train.stop_when_aligned_rounds (2) validation "
                    "rounds in a row pass the verdict (attention, content and, for natural "
                    "English, a speech recogniser's WER within alignment.max_wer_ratio (1.5) "
                    "of the WER it reaches on the same sentences' recordings through our mel "
                    "and vocoder) or demo.time_budget_minutes runs out, then evaluate that "
                    "checkpoint on its validation items and on held-out sentences that are not "
                    "in the corpus (natural English: 30 hand-written free-form sentences), and "
                    "write OUT/summary.json, OUT/eval/report.html and plots. Exit 0 only when "
                    "the checkpoint's validation round passes, demo.heldout_share (90%) of "
                    "the held-out sentences pass the verdict and, for natural English, the "
                    "held-out sentences are intelligible; otherwise exit 1 and say which "
                    "criterion failed.",
    )
    dp.add_argument("--out", type=Path, default=Path("demo"), help="output directory")
    dp.add_argument("--config", default=None,
                    help="preset or YAML (default: natural for the English Kokoro corpus, "
                         "small otherwise)")
    dp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key, e.g. --set demo.time_budget_minutes=20")
    dp.add_argument("--lang", choices=["en", "ru"], default=None,
                    help="language of the mini corpus and held-out sentences (sets "
                         "demo.language; default en)")
    dp.add_argument("--engine", choices=["auto", "kokoro", "espeak"], default=None,
                    help="the corpus's voice (sets demo.engine; default auto: kokoro for "
                         "English, espeak for Russian)")
    dp.add_argument("--vocoder", default=None, help=VOCODER_HELP + " (for the evaluation)")
    dp.add_argument("--vocoder-config", type=Path, default=None, help=VOCODER_CONFIG_HELP)
    dp.add_argument("--quiet", action="store_true", help="no progress bars")
    dp.set_defaults(func=cmd_demo)

    vp = sub.add_parser(
        "vocode", formatter_class=fmt, help="mel (.npy) or wav -> wav through a vocoder",
        description="Turn a log-mel into audio with a vocoder, to hear the vocoder alone. "
                    "--mel: a [n_mels, T] float32 natural-log magnitude mel saved with np.save "
                    "(the format of `synth --save-mel` and of prepared data); --wav: audio that "
                    "goes through our front-end first (resampled, then the same log-mel as "
                    "prepare computes). Audio settings: the defaults, or those of --data; a "
                    "HiFi-GAN must fit them, except that a --mel file without --data is "
                    "taken as the generator's own mel (its config.json). "
                    "Writes 16-bit PCM; prints frames, samples and seconds. Exit 2 on bad "
                    "input.",
    )
    vp.add_argument("--mel", type=Path, default=None, help="log-mel .npy, [n_mels, T]")
    vp.add_argument("--wav", type=Path, default=None, help="audio file (any format soundfile "
                                                            "reads)")
    vp.add_argument("--out", type=Path, required=True, help="output wav")
    vp.add_argument("--vocoder", default=None, help=VOCODER_HELP)
    vp.add_argument("--vocoder-config", type=Path, default=None, help=VOCODER_CONFIG_HELP)
    vp.add_argument("--data", type=Path, default=None,
                    help="prepared data whose audio settings to use (default: the defaults)")
    vp.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    vp.set_defaults(func=cmd_vocode)

    xp = sub.add_parser(
        "export", formatter_class=fmt, help="checkpoint -> model.safetensors + config.json",
        description="Write a model to share: OUT/model.safetensors (every tensor of the model's "
                    "state dict, unchanged, under NVIDIA/tacotron2's names, which are ours) and "
                    "OUT/config.json (model sizes, reduction factor, audio settings, text "
                    "settings: language, phonemes, cleaner and the symbol table as a list). "
                    "`tacotrain synth --model OUT` and Synthesizer.from_pretrained(OUT) load it "
                    "with safetensors and json only, unpickling nothing.\n"
                    "CKPT is a tacotrain checkpoint or an NVIDIA/tacotron2 one "
                    "(tacotron2_statedict.pt or a checkpoint of its train.py): that one gets "
                    "our `default` preset's model sizes (its shapes are checked), the default "
                    "audio settings (NVIDIA's: 22050 Hz, n_fft 1024, hop 256, 80 mels, "
                    "0-8000 Hz), English letters and NVIDIA's 148-symbol table.",
    )
    xp.add_argument("--checkpoint", type=Path, required=True, metavar="CKPT",
                    help="tacotrain or NVIDIA/tacotron2 checkpoint")
    xp.add_argument("--out", type=Path, required=True, metavar="OUT", help="output directory")
    xp.add_argument("--force", action="store_true",
                    help="replace OUT/model.safetensors and OUT/config.json if they exist")
    xp.add_argument("--trust-checkpoint", action="store_true", help=TRUST_HELP)
    xp.set_defaults(func=cmd_export)

    kp = sub.add_parser("track", help="experiment tracking (MLflow) maintenance",
                        description="Experiment tracking maintenance.")
    ksub = kp.add_subparsers(dest="track_command", metavar="ACTION", required=True)
    ks = ksub.add_parser(
        "sync", formatter_class=fmt, help="push to MLflow what the tracking server missed",
        description="Push the events of RUN (RUN/events.jsonl) that its MLflow run does not have "
                    "yet: parameters (plain config names), metrics with their steps, text, audio "
                    "and the newest image of each tag. RUN/mlflow_sync.json records what was "
                    "delivered, so running it twice sends nothing twice. The run is created if "
                    "it never existed there, and ended with the status the training recorded "
                    "(else from RUN/train_result.json: FINISHED unless stopped by the guard "
                    "(FAILED) or interrupted (KILLED)).\n"
                    "Use it after a training whose tracking server was unreachable.",
    )
    ks.add_argument("run", type=Path, help="run directory (RUN)")
    ks.add_argument("--tracking-uri", default=None, metavar="URI",
                    help="MLflow tracking URI, e.g. http://127.0.0.1:5000 or sqlite:///x.db, or "
                         "'local' for RUN/mlflow.db (default: track.mlflow.tracking_uri of the "
                         "run's config.yaml)")
    ks.set_defaults(func=cmd_track_sync)

    up = sub.add_parser(
        "tune", formatter_class=fmt, help="hyperparameter search (Optuna) over trainings",
        description="Search hyperparameters with an Optuna study whose trials are `tacotrain "
                    "train` processes (one fresh process per trial, run directory "
                    "OUT/trials/NNNN). Each trial is scored by its best free-running MCD-DTW "
                    "against the validation items' ground truth (objective.metric), with a "
                    "penalty of objective.unaligned_penalty (default 1000) when no validation "
                    "passed the alignment verdict (every free-running item read its text: "
                    "gate stop, length, no skipped, repeated or stalled tokens, and nearer to "
                    "its own recording than to any other), so an aligned trial always ranks "
                    "first; a trial "
                    "stopped by the guard scores 3x the penalty. The same score, reported at "
                    "each validation, drives pruning. Crashed, killed or over-budget trials are "
                    "recorded FAIL with the reason; the study goes on.\n"
                    "The study lives in --storage (default sqlite:///OUT/tune.db; any SQLAlchemy "
                    "URL, e.g. postgresql://user@host/db for workers on several machines): "
                    "running the same command again resumes it, until it holds --trials "
                    "trials.\n\n"
                    "  tacotrain tune report --study NAME [--storage URL] [--out DIR]\n"
                    "  tacotrain tune dashboard --study NAME [--storage URL] [--port 8080]",
    )
    up.add_argument("--config", default="small",
                    help="base config: preset or YAML (default: small)")
    up.add_argument("--data", type=Path, default=None, help="prepared data directory")
    up.add_argument("--space", type=Path, default=None,
                    help="search space YAML (default: the one shipped with tacotrain, "
                         "src/tacotrain/tune/default_space.yaml)")
    up.add_argument("--trials", type=int, default=None,
                    help="trials the study should hold (all workers and re-runs together)")
    up.add_argument("--study", default=None, help="study name")
    up.add_argument("--storage", default=None, metavar="URL",
                    help="Optuna storage (default: sqlite:///OUT/tune.db)")
    up.add_argument("--out", type=Path, default=None,
                    help="output directory (default: tune/STUDY)")
    up.add_argument("--timeout", type=float, default=None, metavar="HOURS",
                    help="start no new trial after this many hours")
    up.add_argument("--trial-minutes", type=float, default=None, metavar="MIN",
                    help="per-trial training time budget (train.time_budget_minutes); a trial "
                         "still running at 1.25x this + 2 min is stopped and recorded FAIL")
    up.add_argument("--workers", type=int, default=1,
                    help="worker processes on this machine sharing the study (default 1)")
    up.add_argument("--max-steps", type=int, default=None,
                    help="training steps per trial (default: train.max_steps of the config)")
    up.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a key of the base config (repeatable)")
    up.add_argument("--mlflow", action="store_true",
                    help="track in MLflow: one parent run for the study, one nested run per "
                         "trial (same as --set track.mlflow.enabled=true)")
    up.add_argument("--pruner", choices=["median", "hyperband", "none"], default=None,
                    help="override the space file's pruner")
    up.add_argument("--seed", type=int, default=None,
                    help="sampler seed (default: sampler.seed of the space file); the workers "
                         "of --workers get distinct seeds from it, but separate tune commands "
                         "sharing a study (other machines) need different seeds or none")
    up.add_argument("--enqueue", action="append", default=[], metavar="K=V[,K=V]",
                    help="run a trial with these parameters first, e.g. your current settings "
                         "(repeatable; skipped if the study already has it)")
    up.add_argument("--heartbeat", type=int, default=30, metavar="SEC",
                    help="heartbeat interval of running trials (default 30 s)")
    up.add_argument("--grace", type=int, default=None, metavar="SEC",
                    help="a running trial without heartbeat for this long is failed (and "
                         "re-queued) by the next worker (default 4x --heartbeat)")
    up.add_argument("--retries", type=int, default=1,
                    help="re-queue a trial of a dead worker this many times (default 1)")
    up.add_argument("--keep-checkpoints", choices=["best", "all"], default="best",
                    help="best: keep only best.pt (or the last checkpoint) of each trial")
    up.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    up.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    up.set_defaults(func=cmd_tune, tune_command=None)
    usub = up.add_subparsers(dest="tune_command", metavar="[report|dashboard]")
    ur = usub.add_parser(
        "report", formatter_class=fmt, help="leaderboard, best config YAML and plots",
        description="Print the leaderboard of a study (rank, trial, state, objective, aligned, "
                    "validation loss, minutes, parameters or the failure reason), write "
                    "DIR/best_config.yaml (the base config with the best trial's parameters, "
                    "ready for `tacotrain train --config`) and Optuna's optimisation history, "
                    "parameter importance and intermediate-value plots to DIR/plots (PNG; "
                    "HTML as well when plotly is installed).",
    )
    ur.add_argument("--study", required=True, help="study name")
    ur.add_argument("--storage", default=None, metavar="URL",
                    help="Optuna storage (default: sqlite:///DIR/tune.db)")
    ur.add_argument("--out", type=Path, default=None, metavar="DIR",
                    help="where to write the report (default: tune/STUDY)")
    ud = usub.add_parser(
        "dashboard", formatter_class=fmt, help="optuna-dashboard for a study's storage",
        description="Run optuna-dashboard on 127.0.0.1 for a study storage until Ctrl-C.",
    )
    ud.add_argument("--study", default=None, help="study name (for the default storage)")
    ud.add_argument("--storage", default=None, metavar="URL",
                    help="Optuna storage (default: sqlite:///tune/STUDY/tune.db)")
    ud.add_argument("--out", type=Path, default=None, help="the study's --out directory")
    ud.add_argument("--port", type=int, default=8080, help="port (default 8080; next free one)")
    ud.add_argument("--timeout", type=float, default=60.0,
                    help="seconds to wait for the dashboard to answer (default 60)")

    mo = sub.add_parser(
        "monitor", formatter_class=fmt, help="TensorBoard and the MLflow UI for runs",
        description="Start TensorBoard on RUN_OR_DIR (one run, or a directory of runs) and, for "
                    "runs that used MLflow with a local store (RUN/mlflow.db or a sqlite:/// "
                    "tracking URI), the MLflow UI; wait until they answer, print their URLs "
                    "(bound to 127.0.0.1 only) and keep them running until Ctrl-C or SIGTERM, "
                    "which stops them (SIGTERM, then SIGKILL after 10 s). A busy port is "
                    "replaced by the next free one.",
    )
    mo.add_argument("run", type=Path, metavar="RUN_OR_DIR",
                    help="a run directory, or a directory containing runs")
    mo.add_argument("--port", type=int, default=6006, help="TensorBoard port (default 6006)")
    mo.add_argument("--mlflow-port", type=int, default=5000,
                    help="MLflow UI port (default 5000; further local stores get the next ones)")
    mo.add_argument("--no-mlflow", action="store_true", help="TensorBoard only")
    mo.add_argument("--no-browser", action="store_true",
                    help="do not open the TensorBoard page in a browser (never opened without "
                         "a graphical display)")
    mo.add_argument("--timeout", type=float, default=120.0,
                    help="seconds to wait for each UI to answer (default 120)")
    mo.set_defaults(func=cmd_monitor)

    wp = sub.add_parser(
        "serve", formatter_class=fmt, help="a web page (and JSON API) to hear a voice",
        description="Serve a page where you type text, pick a checkpoint and hear the voice, "
                    "with the alignment and mel images and the figures of each synthesis; a "
                    "JSON API under /api (OpenAPI docs at /docs). With --runs, every run's "
                    "best.pt and step checkpoints under DIR are listed (and nothing outside "
                    "it). Limits (serve.max_text_chars, serve.queue_size, "
                    "serve.concurrent_per_model, serve.request_timeout_seconds, "
                    "serve.max_models, serve.max_results) are set with --set. Ctrl-C or "
                    "SIGTERM stops it.",
    )
    source = wp.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="one checkpoint (.pt)")
    source.add_argument("--model", type=Path, metavar="DIR",
                        help="a model written by `tacotrain export`")
    source.add_argument("--runs", type=Path, metavar="DIR",
                        help="a directory of runs (e.g. demo/runs): their checkpoints")
    wp.add_argument("--vocoder", default=None, help=VOCODER_HELP)
    wp.add_argument("--vocoder-config", type=Path, default=None, help=VOCODER_CONFIG_HELP)
    wp.add_argument("--trust-checkpoint", action="store_true", help=TRUST_HELP)
    wp.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (default 127.0.0.1: this machine only)")
    wp.add_argument("--port", type=int, default=5003, help="port (default 5003)")
    wp.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    wp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a serve setting, e.g. --set serve.max_text_chars=300 "
                         "(repeatable)")
    wp.set_defaults(func=cmd_serve)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from tacotrain.audio import AudioReadError, HifiGanError, VocoderError
    from tacotrain.config import ConfigError
    from tacotrain.data.corpus import CorpusError
    from tacotrain.data.kokoro import KokoroError
    from tacotrain.data.loader import DataError
    from tacotrain.data.mini import MiniCorpusError
    from tacotrain.data.prepare import PrepareError
    from tacotrain.evaluate.run import EvalError
    from tacotrain.extras import MissingExtra
    from tacotrain.infer.checkpoint import CheckpointError
    from tacotrain.infer.device import DeviceError
    from tacotrain.infer.pretrained import PretrainedError
    from tacotrain.infer.synth import SynthesisError
    from tacotrain.serve.models import ServeError
    from tacotrain.train.ddp import DistError
    from tacotrain.train.trainer import TrainError

    known = (ConfigError, CorpusError, PrepareError, MiniCorpusError, DataError, TrainError,
             DeviceError,
             CheckpointError, SynthesisError, EvalError, PretrainedError, AudioReadError,
             HifiGanError, VocoderError, ServeError, DistError, MissingExtra, KokoroError)
    try:
        return args.func(args)
    except known as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
