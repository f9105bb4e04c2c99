"""tacotrain: train Tacotron 2 voices and keep the training honest.

The Python API in five names::

    from tacotrain import Synthesizer, Trainer, load_config, prepare

    prepare("corpus/", "data/")                                   # validate, cache mels, split
    Trainer(load_config("small"), "data/", "runs/a").fit()        # train
    Synthesizer.from_pretrained("model/").synthesize("Hello.")    # or .from_checkpoint(path)

They are imported on first use (module ``__getattr__``), so ``import tacotrain`` stays light:
torch and the rest load only when one of them is asked for.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "Synthesizer": "tacotrain.infer.synth",
    "Trainer": "tacotrain.train.trainer",
    "load_config": "tacotrain.config",
    "prepare": "tacotrain.data.prepare",
}

__all__ = ["Synthesizer", "Trainer", "__version__", "load_config", "prepare"]

if TYPE_CHECKING:
    from tacotrain.config import load_config
    from tacotrain.data.prepare import prepare
    from tacotrain.infer.synth import Synthesizer
    from tacotrain.train.trainer import Trainer


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tacotrain' has no attribute {name!r}")
    return getattr(import_module(module), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
