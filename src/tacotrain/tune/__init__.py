"""Hyperparameter search: an Optuna study whose trials are isolated ``tacotrain train`` runs.

``space`` (what is searched, validated against the config before anything runs), ``wiring``
(does a key reach what training builds), ``objective`` (the TTS-aware score), ``trial`` (one
training process, followed through its events), ``study`` (the study and its workers),
``tracking`` (MLflow parent and child runs), ``report`` (leaderboard, best config, plots).
"""

from tacotrain.tune.objective import Score, score
from tacotrain.tune.space import SearchSpace, SpaceError, load_space, validate_space
from tacotrain.tune.study import StudySummary, TuneError, TuneOptions, Tuner

__all__ = ["Score", "SearchSpace", "SpaceError", "StudySummary", "TuneError", "TuneOptions",
           "Tuner", "load_space", "score", "validate_space"]
