"""The files of recent syntheses (wav, alignment and mel images), kept for their URLs.

Each result gets a random id and a folder in a private temporary directory; at most
``serve.max_results`` are kept, the oldest deleted first. Files are looked up by (id, name)
in a table, so a URL can never name a path of its own choosing.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import uuid
from collections import OrderedDict
from pathlib import Path

from tacotrain.infer.synth import Synthesis, Synthesizer
from tacotrain.judge.alignment import plot_mel

# URL name -> (file in the result's folder, media type)
FILES: dict[str, tuple[str, str]] = {
    "speech.wav": ("speech.wav", "audio/wav"),
    "alignment.png": ("speech.png", "image/png"),  # Synthesizer.save writes it next to the wav
    "mel.png": ("mel.png", "image/png"),
}


class ResultStore:
    def __init__(self, max_results: int) -> None:
        self.max_results = max_results
        self.root = Path(tempfile.mkdtemp(prefix="tacotrain-serve-"))
        self._folders: OrderedDict[str, Path] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, synth: Synthesizer, result: Synthesis) -> str:
        """Write ``result``'s wav, alignment and mel images (in the calling worker thread: the
        plots take a while) and return its id; the oldest results beyond the bound go."""
        rid = uuid.uuid4().hex
        folder = self.root / rid
        synth.save(result, folder / "speech.wav")
        plot_mel(result.mel, folder / "mel.png", title=result.text[:60])
        with self._lock:
            self._folders[rid] = folder
            while len(self._folders) > self.max_results:
                _, old = self._folders.popitem(last=False)
                shutil.rmtree(old, ignore_errors=True)
        return rid

    def read(self, rid: str, name: str) -> tuple[bytes, str] | None:
        """(bytes, media type) of a result's file, or None for an unknown id or name."""
        if name not in FILES:
            return None
        file, media = FILES[name]
        with self._lock:  # eviction cannot delete it half-way through the read
            folder = self._folders.get(rid)
            if folder is None:
                return None
            return (folder / file).read_bytes(), media

    def close(self) -> None:
        with self._lock:
            self._folders.clear()
        shutil.rmtree(self.root, ignore_errors=True)
