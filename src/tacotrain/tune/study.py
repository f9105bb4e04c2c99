"""``tacotrain tune``: an Optuna study whose trials are ``tacotrain train`` processes.

Flow of one invocation (a *coordinator*):

1. Load and validate the search space against the base config (:mod:`tacotrain.tune.space`):
   unknown or unwired parameters stop here, before any trial.
2. Open the study in its storage (default ``sqlite:///OUT/tune.db``; any SQLAlchemy URL, e.g.
   PostgreSQL for workers on many machines), creating it or resuming it. The base config, the
   space and the trial step budget are recorded in the study's user attributes at creation; a
   later run with different ones is refused (its trials would not be comparable).
3. With MLflow, open the study's parent run.
4. Run workers: this process (``--workers 1``) or K worker processes (``--workers K``) that
   share the storage. Each worker repeats: fail stale trials (heartbeat), ask for a trial,
   train it in a subprocess (:mod:`tacotrain.tune.trial`), tell the result; until the study
   holds ``--trials`` trials that ran (complete, pruned or failed; a failed trial that was
   re-queued counts once), or ``--timeout`` hours passed.

``--trials N`` is the size of the study, not a number per process: re-running the command
resumes toward N, and several machines running it share the N trials. Two workers finishing a
trial in the same instant may both start one more, so a study can end one trial above N.

Heartbeats: every worker's Optuna storage records a heartbeat for its running trial every
``heartbeat_seconds``; a trial whose heartbeat is older than the grace period (its worker died:
power cut, SIGKILL, lost machine) is marked FAIL by the next worker that starts a trial, and
re-queued once (``RetryHeartbeatStaleTrialCallback``), so no trial stays RUNNING forever.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tacotrain import metrics as M
from tacotrain.config import (
    Config,
    ConfigError,
    flatten,
    load_config,
    preset_names,
    validate_as,
)
from tacotrain.data.loader import PreparedData
from tacotrain.tune.objective import (
    CURVE,
    DIVERGED,
    MetricMissing,
    Score,
    TrialValues,
    item_values,
    trial_values,
)
from tacotrain.tune.space import (
    ObjectiveSpec,
    SearchSpace,
    load_space,
    space_dict,
    suggest,
    to_overrides,
    validate_space,
)
from tacotrain.tune.trial import TrialRun, keep_best_checkpoint, run_training

log = logging.getLogger(__name__)

ATTR = "tacotrain"  # study user attribute: what the study was created with
PARENT_ATTR = "tacotrain.mlflow_parent_run_id"
TRIALS_DIR = "trials"
# config sections and keys that do not change what a trial learns: a resumed study may differ here
_NOT_TRAINING = ("track", "notify", "demo")
_NOT_TRAINING_KEYS = ("train.threads", "train.num_workers", "train.device", "train.log_interval")


class TuneError(RuntimeError):
    """The study cannot run as asked (message says why and what to do)."""


class TrialFailed(Exception):
    """A trial's training failed (crash, kill, time budget); Optuna records it FAIL."""


@dataclass
class TuneOptions:
    """Everything one ``tacotrain tune`` invocation needs (the CLI's arguments)."""

    config: str  # base config: preset name or YAML path
    data: Path  # prepared data directory
    study: str
    trials: int  # total trials of the study (all workers, all invocations)
    out: Path | None = None  # default: tune/STUDY
    storage: str | None = None  # default: sqlite:///OUT/tune.db
    space: Path | None = None  # default: the space shipped with tacotrain
    overrides: list[str] = field(default_factory=list)  # --set on the base config
    max_steps: int | None = None  # training steps per trial (default: train.max_steps)
    timeout_hours: float | None = None  # no new trial starts after this
    trial_minutes: float | None = None  # per-trial wall-time budget
    workers: int = 1
    mlflow: bool = False  # also when the base config enables track.mlflow
    heartbeat_seconds: int = 30
    grace_seconds: int | None = None  # default: 4 x heartbeat_seconds
    max_retries: int = 1  # re-queue a trial left stale by a dead worker this many times
    pruner: str | None = None  # override the space file's pruner type
    seed: int | None = None  # override the space file's sampler seed
    enqueue: list[dict[str, Any]] = field(default_factory=list)  # trials to run first
    keep_checkpoints: str = "best"  # best: delete a finished trial's other checkpoints; all
    is_worker: bool = False  # internal: a worker process started by --workers
    worker_index: int = 0  # internal: 1..K for those; decorrelates seeded samplers
    resume: bool = False  # the study must exist already (--resume)

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out else Path("tune") / self.study

    @property
    def storage_url(self) -> str:
        return self.storage or default_storage(self.out_dir)

    @property
    def grace(self) -> int:
        return self.grace_seconds or 4 * self.heartbeat_seconds


@dataclass
class StudySummary:
    study: str
    storage: str  # without credentials
    out: Path
    states: dict[str, int]
    best_number: int | None
    best_value: float | None
    best_params: dict[str, Any]
    wall_seconds: float
    trials_run_here: int
    best_values: list[float] = field(default_factory=list)  # one per objective
    pareto_front: list[int] = field(default_factory=list)  # trial numbers (two objectives)


def default_storage(out: Path) -> str:
    return f"sqlite:///{(out / 'tune.db').resolve()}"


def make_storage(url: str, heartbeat_seconds: int | None = 30, grace_seconds: int | None = None,
                 max_retries: int = 1) -> Any:
    """An Optuna RDB storage with heartbeats (stale RUNNING trials -> FAIL, re-queued)."""
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    engine: dict[str, Any] = {}
    if url.startswith("sqlite"):
        # several worker processes write to one file: wait for the lock instead of failing
        engine["connect_args"] = {"timeout": 60}
    else:
        engine["pool_pre_ping"] = True
    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna since 2.9
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        callback = (RetryHeartbeatStaleTrialCallback(max_retry=max_retries)
                    if heartbeat_seconds and max_retries > 0 else None)
        return _retry_races(lambda: RDBStorage(
            url, engine_kwargs=engine, heartbeat_interval=heartbeat_seconds,
            grace_period=grace_seconds if heartbeat_seconds else None,
            heartbeat_stale_trial_callback=callback))


def _retry_races(make: Any, attempts: int = 6) -> Any:
    """Call ``make()``, retrying when another worker creates the same tables or study at the
    same moment (PostgreSQL reports that as an IntegrityError, Optuna as DuplicatedStudyError);
    the next attempt finds them in place."""
    for k in range(attempts):
        try:
            return make()
        except Exception as exc:  # noqa: BLE001 - re-raised unless it is the known race
            names = {c.__name__ for c in type(exc).__mro__}
            if k == attempts - 1 or not names & {"IntegrityError", "DuplicatedStudyError"}:
                raise
            time.sleep(0.2 * (k + 1))
    raise AssertionError("unreachable")


def redact(url: str) -> str:
    from tacotrain.track.mlflow_sink import redact_uri

    return redact_uri(url)


def make_sampler(space: SearchSpace, seed: int | None = None) -> Any:
    """The sampler of ``space.sampler`` (tune/space.py), seeded with ``seed``."""
    import optuna

    s = space.sampler
    seed = s.seed if seed is None else seed
    with warnings.catch_warnings():  # multivariate TPE and constant liar are "experimental"
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if s.type == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if s.type == "nsga2":
            return optuna.samplers.NSGAIISampler(population_size=s.population_size, seed=seed)
        if s.type == "cmaes":
            from tacotrain.extras import require

            require("tune", "sampler.type cmaes", "cmaes")
            return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=s.n_startup_trials)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=s.n_startup_trials,
                                          multivariate=s.multivariate,
                                          constant_liar=s.constant_liar)


def make_pruner(space: SearchSpace, base: Config, kind: str | None = None) -> Any:
    import optuna

    p = space.pruner
    kind = kind or p.type
    if kind == "none":
        return optuna.pruners.NopPruner()
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=p.min_resource or base.train.val_interval,
            reduction_factor=p.reduction_factor)
    if kind in ("median", "wilcoxon"):
        from tacotrain.tune.pruning import SameTimePruner

        return SameTimePruner(kind, n_startup_trials=p.n_startup_trials,
                              n_warmup_steps=p.n_warmup_steps, interval_steps=p.interval_steps,
                              p_threshold=p.p_threshold)
    raise TuneError(f"unknown pruner {kind!r}: use median, wilcoxon, hyperband or none")


def _training_view(cfg: dict[str, Any]) -> dict[str, Any]:
    flat = flatten(cfg)
    return {k: v for k, v in flat.items()
            if k.split(".", 1)[0] not in _NOT_TRAINING and k not in _NOT_TRAINING_KEYS}


def claimed_trials(trials: list[Any]) -> int:
    """Trials that count toward ``--trials``: running or finished, a re-queued failure once.

    A trial failed by the heartbeat check and re-queued (WAITING, then RUNNING) carries the
    original's number in ``retry_history``; the original then no longer counts.
    """
    from optuna.trial import TrialState

    superseded = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    counted = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    return sum(1 for t in trials if t.state in counted
               or (t.state == TrialState.FAIL and t.number not in superseded))


@dataclass
class _Context:
    """What a worker needs to run trials."""

    opts: TuneOptions
    space: SearchSpace
    base_cfg: Config
    config_arg: str  # --config for the training processes
    extra_overrides: list[str]  # per-study: threads, MLflow store and experiment
    tracking: Any = None  # StudyTracking or None


class Tuner:
    """Runs the study described by :class:`TuneOptions` (see the module doc)."""

    def __init__(self, opts: TuneOptions) -> None:
        if opts.trials < 1:
            raise TuneError("--trials must be >= 1")
        if opts.workers < 1:
            raise TuneError("--workers must be >= 1")
        if opts.keep_checkpoints not in ("best", "all"):
            raise TuneError("keep_checkpoints must be 'best' or 'all'")
        self.opts = opts
        self.space = load_space(opts.space)
        if opts.pruner:  # --pruner: the space's rules hold for it too
            self.space = validate_as(SearchSpace, {**space_dict(self.space), "pruner": {
                **space_dict(self.space)["pruner"], "type": opts.pruner}}, "--pruner")
        self.base_cfg = validate_space(self.space, opts.config, opts.overrides)
        PreparedData.load(opts.data)  # a wrong --data fails here, not in every trial
        self.out = opts.out_dir.resolve()
        self.mlflow = opts.mlflow or self.base_cfg.track.mlflow.enabled
        self.study: Any = None
        self.storage: Any = None

    # ------------------------------------------------------------------ study
    def open_study(self) -> Any:
        import optuna

        self.out.mkdir(parents=True, exist_ok=True)
        o = self.opts
        self.storage = make_storage(o.storage_url, o.heartbeat_seconds, o.grace, o.max_retries)
        if o.resume and o.study not in _retry_races(
                lambda: optuna.get_all_study_names(storage=self.storage)):
            raise TuneError(f"--resume: there is no study {o.study!r} in "
                            f"{redact(o.storage_url)}; drop --resume to create it")
        seed = o.seed if o.seed is not None else self.space.sampler.seed
        if seed is not None:  # K workers with one seed would all sample the same parameters
            seed += 7919 * o.worker_index
        self.study = _retry_races(lambda: optuna.create_study(
            storage=self.storage, study_name=o.study,
            directions=self.space.objective.directions,
            sampler=make_sampler(self.space, seed),
            pruner=make_pruner(self.space, self.base_cfg, o.pruner), load_if_exists=True))
        record = {"base": self.base_cfg.model_dump(mode="json"), "space": space_dict(self.space),
                  "overrides": list(o.overrides),
                  "config": o.config if o.config in preset_names() else
                  str(Path(o.config).resolve()),
                  "data": str(Path(o.data).resolve()), "sampler_seed": seed,
                  "max_steps": o.max_steps, "out": str(self.out)}
        old = self.study.user_attrs.get(ATTR)
        if old is None:
            self.study.set_user_attr(ATTR, record)
        else:
            self._check_same(old, record)
        return self.study

    def _check_same(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        name = self.opts.study
        a, b = _training_view(old["base"]), _training_view(new["base"])
        diff = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
        if diff:
            raise TuneError(f"study {name!r} was created with a different base config "
                            f"({', '.join(diff[:8])} differ); its trials would not compare "
                            "with new ones: use the same --config/--set or a new --study")
        if old["space"].get("params") != new["space"].get("params") \
                or _objective(old["space"]) != _objective(new["space"]):
            raise TuneError(f"study {name!r} was created with a different search space or "
                            "objective: use the same --space or a new --study")
        if old.get("max_steps") != new.get("max_steps"):
            raise TuneError(f"study {name!r} was created with --max-steps "
                            f"{old.get('max_steps')}, not {new.get('max_steps')}: use the same "
                            "or a new --study")

    def _context(self) -> _Context:
        o = self.opts
        extra: list[str] = []
        if o.workers > 1 and self.base_cfg.train.threads is None:
            extra.append(f"train.threads={max(1, (os.cpu_count() or 1) // o.workers)}")
        if o.trial_minutes:
            extra.append(f"train.time_budget_minutes={float(o.trial_minutes)!r}")
        tracking = None
        if self.mlflow:
            from tacotrain.tune.tracking import StudyTracking, artifacts_dir, study_store_uri

            mc = self.base_cfg.track.mlflow
            uri = mc.tracking_uri if mc.tracking_uri not in (None, "", "local") else \
                study_store_uri(self.out)
            tracking = StudyTracking(uri, mc.experiment, o.study,
                                     artifacts_dir(self.out) if uri.startswith("sqlite") else None)
            extra += ["track.mlflow.enabled=true", f"track.mlflow.tracking_uri={json.dumps(uri)}",
                      f"track.mlflow.experiment={json.dumps(mc.experiment)}"]
        config = o.config if o.config in preset_names() else str(Path(o.config).resolve())
        return _Context(o, self.space, self.base_cfg, config, extra, tracking)

    # ------------------------------------------------------------------ running
    def run(self) -> StudySummary:
        """Open the study and run trials until it holds ``--trials`` (or time runs out)."""
        t0 = time.monotonic()
        study = self.open_study()
        ctx = self._context()
        o = self.opts
        if not o.is_worker:
            for params in o.enqueue:
                study.enqueue_trial(params, skip_if_exists=True)
        if ctx.tracking is not None:
            known = study.user_attrs.get(PARENT_ATTR)
            if o.is_worker:
                ctx.tracking.parent_run_id = known
            else:
                params = {"study": o.study, "trials": o.trials, "config": o.config,
                          "max_steps": o.max_steps, "pruner": o.pruner or self.space.pruner.type,
                          "sampler": self.space.sampler.type, "workers": o.workers,
                          **{f"space.{k}": json.dumps(v.model_dump(exclude_none=True))
                             for k, v in self.space.params.items()}}
                run_id = ctx.tracking.open_parent(known, params)
                if run_id and run_id != known:
                    study.set_user_attr(PARENT_ATTR, run_id)
        status = "FAILED"
        ran = 0
        try:
            if o.workers > 1 and not o.is_worker:
                before = claimed_trials(study.get_trials(deepcopy=False))
                self._run_workers()
                ran = claimed_trials(study.get_trials(deepcopy=False)) - before
            else:
                ran = run_worker(study, ctx, self.opts.trials, o.timeout_hours)
            status = "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            summary = summarize(study, o, time.monotonic() - t0, ran)
            if ctx.tracking is not None and not o.is_worker:
                metrics = {f"trials_{k.lower()}": float(v) for k, v in summary.states.items()}
                if summary.best_value is not None:
                    metrics["best_objective"] = summary.best_value
                tags = {"tacotrain.best_trial": str(summary.best_number)}
                ctx.tracking.close_parent(status, metrics, tags)
        return summary

    def _run_workers(self) -> None:
        """Start ``--workers`` worker processes on this machine and wait for them."""
        o = self.opts
        logs = self.out / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        procs: list[subprocess.Popen] = []
        try:
            for k in range(o.workers):
                cmd = worker_command(o, self.out, k + 1)
                with open(logs / f"worker-{k + 1}.log", "ab") as fh:
                    procs.append(subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=fh,
                                                  stderr=subprocess.STDOUT,
                                                  start_new_session=True))
                log.info("worker %d started (pid %d), log %s", k + 1, procs[-1].pid,
                         logs / f"worker-{k + 1}.log")
            seen: dict[int, str] = {}
            while any(p.poll() is None for p in procs):
                _log_progress(self.study, seen)
                time.sleep(2.0)
            _log_progress(self.study, seen)
            for k, p in enumerate(procs):
                if p.returncode:
                    log.warning("worker %d exited with code %d; see %s", k + 1, p.returncode,
                                logs / f"worker-{k + 1}.log")
        except BaseException:
            for p in procs:  # SIGTERM: each worker stops its trial cleanly (FAIL: interrupted)
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(60)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
            raise


def _objective(space: dict[str, Any]) -> dict[str, Any]:
    """A recorded space's objective with the defaults of keys added since it was recorded."""
    return ObjectiveSpec.model_validate(space.get("objective") or {}).model_dump(mode="json")


def worker_command(o: TuneOptions, out: Path, index: int) -> list[str]:
    """The ``tacotrain tune --worker`` command line of worker ``index`` (1..K) of ``o``."""
    cmd = [sys.executable, "-m", "tacotrain.cli", "tune", "--worker", "--worker-index", str(index),
           "--config", o.config if o.config in preset_names() else str(Path(o.config).resolve()),
           "--data", str(Path(o.data).resolve()), "--study", o.study, "--trials", str(o.trials),
           "--out", str(out), "--storage", o.storage_url, "--workers", str(o.workers),
           "--heartbeat", str(o.heartbeat_seconds), "--grace", str(o.grace),
           "--retries", str(o.max_retries), "--keep-checkpoints", o.keep_checkpoints]
    if o.space:
        cmd += ["--space", str(Path(o.space).resolve())]
    for flag, value in (("--max-steps", o.max_steps), ("--timeout", o.timeout_hours),
                        ("--trial-minutes", o.trial_minutes), ("--pruner", o.pruner),
                        ("--seed", o.seed)):
        if value is not None:
            cmd += [flag, str(value)]
    if o.mlflow:
        cmd.append("--mlflow")
    for s in o.overrides:
        cmd += ["--set", s]
    return cmd


def _log_progress(study: Any, seen: dict[int, str]) -> None:
    for t in study.get_trials(deepcopy=False):
        state = t.state.name
        if seen.get(t.number) != state and state != "WAITING":
            seen[t.number] = state
            value = f" value {_values_text(t.values)}" if t.values else ""
            reason = t.user_attrs.get("fail_reason")
            log.info("trial %d: %s%s%s", t.number, state, value, f" ({reason})" if reason else "")


def _values_text(values: list[float]) -> str:
    return ", ".join(f"{v:.4f}" for v in values)


def run_worker(study: Any, ctx: _Context, trials: int, timeout_hours: float | None) -> int:
    """Run trials of ``study`` until it holds ``trials`` of them; returns how many ran here."""
    import optuna

    deadline = time.monotonic() + timeout_hours * 3600 if timeout_hours else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    ran = 0
    objective = make_objective(ctx)
    while claimed_trials(study.get_trials(deepcopy=False)) < trials:
        if deadline is not None and time.monotonic() >= deadline:
            log.info("study timeout reached: no new trial is started")
            break
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.optimize(objective, n_trials=1, catch=(TrialFailed,), gc_after_trial=False)
        ran += 1
    return ran


def make_objective(ctx: _Context) -> Callable[[Any], float]:
    """The Optuna objective: one training process per call (see the module doc)."""
    import optuna

    o, spec = ctx.opts, ctx.space.objective
    host = socket.gethostname()

    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial, ctx.space)
        run_dir = o.out_dir.resolve() / TRIALS_DIR / f"{trial.number:04d}"
        log_path = run_dir.parent / f"{trial.number:04d}.log"
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("worker", f"{host}:{os.getpid()}")
        overrides = [*o.overrides, *ctx.extra_overrides, *objective_overrides(spec),
                     *to_overrides(params)]
        if ctx.tracking is not None:
            overrides.append(f"track.mlflow.run_name={o.study}-{trial.number:04d}")
        state, status, value, attrs = "FAIL", "FAILED", None, {}
        try:
            try:
                cfg = load_config(o.config, overrides)
            except ConfigError as exc:
                raise _fail(trial, f"invalid configuration: {exc}") from None
            if run_dir.exists() and any(run_dir.iterdir()):
                raise _fail(trial, f"{run_dir} exists and is not empty (another study in the "
                                   "same --out?)")
            cmd = [sys.executable, "-m", "tacotrain.cli", "train", "--config", ctx.config_arg,
                   "--data", str(Path(o.data).resolve()), "--out", str(run_dir), "--quiet"]
            if o.max_steps:
                cmd += ["--max-steps", str(o.max_steps)]
            for s in overrides:
                cmd += ["--set", s]
            budget = cfg.train.time_budget_minutes
            hard = budget * 60 * 1.25 + 120 if budget else None

            rounds = cfg.train.stop_when_aligned_rounds
            on_validation = _reporter(trial, spec, rounds, o.max_steps or cfg.train.max_steps)

            from tacotrain.tune.tracking import child_env

            parent = ctx.tracking.parent_run_id if ctx.tracking is not None else None
            run = run_training(cmd, run_dir, log_path, spec.metric, on_validation,
                               env=child_env(parent), hard_timeout=hard,
                               on_start=lambda pid: trial.set_user_attr("pid", pid))
            trial.set_user_attr("wall_minutes", round(run.seconds / 60, 2))
            if o.keep_checkpoints == "best":
                keep_best_checkpoint(run_dir)
            attrs = _result_attrs(run)
            for k, v in attrs.items():
                trial.set_user_attr(k, v)
            if run.status == "pruned":
                state, status = "PRUNED", "FINISHED"
                trial.set_user_attr("outcome", "pruned")
                raise optuna.TrialPruned(run.reason)
            if run.status not in ("finished", "guard"):
                raise _fail(trial, run.reason)
            history = run.result.get("history", []) if run.result else run.validations
            try:
                tv = trial_values(history, spec, rounds, diverged=run.status == "guard")
            except MetricMissing as exc:
                raise _fail(trial, str(exc)) from None
            score_attrs = {**_score_attrs(tv.quality), **_objective_attrs(tv, spec)}
            if run.status == "guard":
                score_attrs["diverged_reason"] = run.reason
            for k, v in score_attrs.items():
                trial.set_user_attr(k, v)
            attrs.update(score_attrs)
            state, status, value = "COMPLETE", "FINISHED", tv.values[0]
            return tv.values if spec.kind == "both" else tv.values[0]
        except KeyboardInterrupt:
            state, status = "FAIL", "KILLED"
            trial.set_user_attr("fail_reason", "interrupted")
            raise
        finally:
            if ctx.tracking is not None:
                attrs["fail_reason"] = trial.user_attrs.get("fail_reason")
                ctx.tracking.close_trial(run_dir, trial.number, state, status, params, value,
                                         attrs)

    return objective


def _reporter(trial: Any, spec: ObjectiveSpec, rounds: int,
              last_step: int) -> Callable[[dict[str, Any]], bool]:
    """The callback a trial's training calls at each validation: it reports the value so far
    (on the scale of the final one), adds the point to the trial's ``curve`` (tune/pruning.py)
    and returns True to prune.

    The validation at the last step is never pruned: the training is done then, and its result
    is worth more than a stop. A two-objective study reports nothing (Optuna prunes
    single-objective studies only)."""
    reported: list[dict[str, Any]] = []
    curve: list[dict[str, Any]] = []
    key = spec.metric.split("/", 1)[1] if spec.metric.startswith(f"{M.FREE}/") else ""

    def on_validation(row: dict[str, Any]) -> bool:
        reported.append(row)
        step = int(row["step"])
        if spec.kind == "both":
            return False
        now = trial_values(reported, spec, rounds)
        trial.report(now.values[0], step)
        curve.append({"minutes": row.get("minutes"), "step": step, "value": now.values[0],
                      "items": item_values(row.get("items"), key, spec.unaligned_penalty)})
        trial.set_user_attr(CURVE, curve)
        if spec.kind == "time_to_speak" and now.speak_step is None \
                and _slower_than_best(trial.study, row):
            trial.set_user_attr("pruned_reason", "cannot speak sooner than the best trial "
                                                 "any more")
            return step < last_step
        if step >= last_step or not trial.should_prune():
            return False
        reason = getattr(trial.study.pruner, "reason", "")
        if reason:
            trial.set_user_attr("pruned_reason", reason)
        return True

    return on_validation


def objective_overrides(spec: ObjectiveSpec) -> list[str]:
    """What a trial's training is told by the objective: keep best.pt by the quality metric
    (the checkpoint kept is the one scored), and stop once the voice speaks where the time to
    speak is an objective (what comes after cannot improve it)."""
    out = [f"train.best_metric={json.dumps(spec.metric)}"]
    if spec.kind in ("time_to_speak", "both"):
        out.append("train.stop_when_aligned=true")
    return out


def _slower_than_best(study: Any, row: dict[str, Any]) -> bool:
    """Whether a trial that has not passed yet, at ``row``'s training minutes, is already slower
    than the fastest finished trial that passed: it can no longer speak sooner."""
    from optuna.trial import TrialState

    best = [t.user_attrs["time_to_speak_minutes"] for t in study.get_trials(
        deepcopy=False, states=(TrialState.COMPLETE,))
            if t.user_attrs.get("time_to_speak_minutes") is not None]
    minutes = row.get("minutes")
    return bool(best) and minutes is not None and float(minutes) > min(best)


def _objective_attrs(tv: TrialValues, spec: ObjectiveSpec) -> dict[str, Any]:
    q = tv.quality
    return {"objective_kind": spec.kind, "time_to_speak_minutes": tv.speak_minutes,
            "speak_step": tv.speak_step, "passed": tv.speak_step is not None,
            "time_value": tv.time_value, "quality": q.best_loss if q.outcome != DIVERGED else None,
            "quality_value": q.value, "quality_metric": spec.metric}


def _fail(trial: Any, reason: str) -> TrialFailed:
    """Record ``reason`` on the trial (user attribute ``fail_reason``) and make the exception."""
    trial.set_user_attr("fail_reason", reason)
    log.warning("trial %d failed: %s", trial.number, reason)
    return TrialFailed(reason)


def _result_attrs(run: TrialRun) -> dict[str, Any]:
    attrs: dict[str, Any] = {"exit_code": run.returncode, "process_status": run.status}
    if run.result:
        attrs.update({"steps": run.result.get("step"),
                      "stop_reason": run.result.get("stop_reason")})
    elif run.validations:
        attrs["steps"] = run.validations[-1]["step"]
    return attrs


def _score_attrs(s: Score) -> dict[str, Any]:
    return {"outcome": s.outcome, "aligned": s.outcome == "aligned",
            "best_loss": s.best_loss, "best_step": s.best_step,
            "aligned_step": s.aligned_step, "minutes_to_alignment": s.aligned_minutes,
            "validations": s.validations, "diverged": s.outcome == DIVERGED}


def summarize(study: Any, o: TuneOptions, seconds: float, ran: int) -> StudySummary:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.values]
    # two objectives: of the Pareto front, the trial that speaks soonest
    best = min(done, key=lambda t: t.values) if done else None
    front = [t.number for t in study.best_trials] if len(study.directions) > 1 and done else []
    return StudySummary(o.study, redact(o.storage_url), o.out_dir.resolve(), states,
                        best.number if best else None, best.values[0] if best else None,
                        dict(best.params) if best else {}, seconds, ran,
                        list(best.values) if best else [], front)


def load_tuned_study(study: str, storage: str) -> Any:
    """An existing study (for reports and the dashboard); TuneError if there is none."""
    import optuna

    try:
        return optuna.load_study(study_name=study, storage=make_storage(storage, None))
    except KeyError:
        raise TuneError(f"no study {study!r} in {redact(storage)}") from None
