"""Loading prepared data for training: dataset, bucket batch sampler, collate.

Items are grouped into batches of similar *mel length* so that little of each batch is padding
(tests/test_loader.py measures the padding share).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from tacotrain.batch import Batch, make_gate_targets
from tacotrain.config import Settings
from tacotrain.data.prepare import MANIFEST, MANIFEST_VERSION
from tacotrain.text import phonemes_to_sequence, symbols_for, text_to_sequence


class DataError(RuntimeError):
    """Prepared data is missing, incomplete or inconsistent."""


@dataclass(frozen=True)
class PreparedData:
    """The contents of ``DATA/manifest.json`` written by ``tacotrain prepare``."""

    root: Path
    language: str
    symbols: list[str]
    settings: Settings
    items: list[dict[str, Any]]
    phonemes: bool = False  # the items carry espeak-ng IPA, which the model reads

    @classmethod
    def load(cls, root: str | Path) -> PreparedData:
        root = Path(root)
        path = root / MANIFEST
        if not path.is_file():
            raise DataError(
                f"{root} is not a complete prepared dataset ({MANIFEST} missing): "
                "run `tacotrain prepare CORPUS --out DATA` (again) first"
            )
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("version") != MANIFEST_VERSION:
            raise DataError(f"{path}: version {data.get('version')} not supported; re-run prepare")
        phonemes = bool(data.get("phonemes", False))
        if data["symbols"] != symbols_for(data["language"], phonemes):
            kind = "phoneme" if phonemes else "letter"
            raise DataError(f"{path}: its {data['language']} {kind} table differs from this "
                            "version's; re-run prepare")
        return cls(root, data["language"], list(data["symbols"]),
                   Settings.model_validate(data["settings"]), list(data["items"]), phonemes)

    def sequence(self, item: dict[str, Any]) -> list[int]:
        """The symbol ids the model reads for ``item``: its cached phonemes or its text."""
        if self.phonemes:
            return phonemes_to_sequence(item["phonemes"], self.language)
        return text_to_sequence(item["text"], self.language)

    def split(self, name: str) -> list[dict[str, Any]]:
        return [i for i in self.items if i["split"] == name]


class TextMelDataset(Dataset):
    """``(text_ids [N] long, mel [n_mels, T] float32, id)`` for one split of prepared data."""

    def __init__(self, data: PreparedData, split: str = "train") -> None:
        self.data = data
        self.items = data.split(split)
        if not self.items:
            raise DataError(f"{data.root}: the {split!r} split is empty")
        self.lengths = [int(i["frames"]) for i in self.items]
        self._sequences = [data.sequence(i) for i in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, str]:
        item = self.items[index]
        mel = np.load(self.data.root / item["mel"], allow_pickle=False)
        return (torch.tensor(self._sequences[index], dtype=torch.long),
                torch.from_numpy(mel), item["id"])


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of items with similar lengths, in shuffled order, every item once per epoch.

    Items are sorted by length (random tie-breaks), the sorted list is cut into batches on a
    grid whose start is shifted by a random offset each epoch (so batch membership varies
    between epochs), items are shuffled within buckets of ``bucket_batches`` neighbouring
    batches, and the batches are shuffled. Deterministic given ``seed`` and the epoch
    (:meth:`set_epoch`). ``bucket_batches=1`` gives the least padding.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0,
                 bucket_batches: int = 1, shuffle: bool = True, drop_last: bool = False) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if bucket_batches < 1:
            raise ValueError("bucket_batches must be >= 1")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.batch_size = batch_size
        self.seed = seed
        self.bucket_batches = bucket_batches
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        n, bs = len(self.lengths), self.batch_size
        ties = rng.random(n) if self.shuffle else np.arange(n)
        order = np.lexsort((ties, self.lengths))
        offset = int(rng.integers(0, bs)) if self.shuffle and n > bs else 0
        cuts = [0, *range(offset or bs, n, bs), n] if n else [0]
        cuts = sorted(set(cuts))
        batches = [order[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True) if b > a]
        if self.shuffle and self.bucket_batches > 1:
            mixed = []
            for k in range(0, len(batches), self.bucket_batches):
                group = np.concatenate(batches[k:k + self.bucket_batches])
                rng.shuffle(group)
                sizes = [len(b) for b in batches[k:k + self.bucket_batches]]
                mixed.extend(np.split(group, np.cumsum(sizes)[:-1]))
            batches = mixed
        if self.drop_last:
            batches = [b for b in batches if len(b) == bs]
        if self.shuffle:
            rng.shuffle(batches)
        return [b.tolist() for b in batches]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        return len(self.batches())


class DistributedBucketSampler(BucketBatchSampler):
    """One process's share of :class:`BucketBatchSampler`'s batches, for training in
    ``num_replicas`` processes with ``group`` micro-batches per optimiser update.

    Every rank computes the same *global* order (same bucketing and shuffle, from ``seed`` and
    the epoch alone), cut at the end to whole updates of ``num_replicas x group`` batches (the
    dropped tail differs from epoch to epoch with the shuffle), and takes every
    ``num_replicas``-th batch from its rank on: global batch g goes to rank g mod num_replicas.
    So each rank gets its own batches of similar lengths and as many as every other rank, and
    in one process (``num_replicas`` 1, ``group`` 1) the batches are exactly BucketBatchSampler's.

    The data position is a *global* batch index (``start``): the same number on every rank,
    so rank 0 alone saves it and every rank resumes from it.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0,
                 bucket_batches: int = 1, num_replicas: int = 1, rank: int = 0,
                 group: int = 1) -> None:
        super().__init__(lengths, batch_size, seed=seed, bucket_batches=bucket_batches)
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} outside 0..{num_replicas - 1}")
        if group < 1:
            raise ValueError("group must be >= 1")
        self.num_replicas = num_replicas
        self.rank = rank
        self.group = group

    @property
    def stride(self) -> int:
        """Global batches consumed by one optimiser update (all ranks, all micro-batches)."""
        return self.num_replicas * self.group

    def min_updates_per_epoch(self) -> int:
        """Updates in the shortest epoch: the grid offset gives ceil(n / batch_size) batches
        or one more."""
        return math.ceil(len(self.lengths) / self.batch_size) // self.stride

    def global_batches(self) -> list[list[int]]:
        """The epoch's batches of all ranks, in global order (not cut)."""
        return super().batches()

    def batches(self, start: int = 0) -> list[list[int]]:
        """This rank's batches of the epoch from global batch ``start`` on, the rest from
        ``start`` cut to whole updates (``start`` is a multiple of :attr:`stride` unless the
        run was resumed with another world size or ``grad_accum_steps``)."""
        every = self.global_batches()
        end = start + (len(every) - start) // self.stride * self.stride
        return every[start + self.rank:end:self.num_replicas]


class Collate:
    """Pad a list of dataset items to the batch maximum (mel length rounded up to a multiple of
    ``n_frames_per_step``), with length tensors and gate targets.

    ``r`` may be changed between batches (gradual training); a DataLoader's worker processes
    hold their own copy, so a loader with workers must be rebuilt to see the change."""

    def __init__(self, n_frames_per_step: int = 1) -> None:
        if n_frames_per_step < 1:
            raise ValueError("n_frames_per_step must be >= 1")
        self.r = n_frames_per_step

    def __call__(self, items: Sequence[tuple[torch.Tensor, torch.Tensor, str]]) -> Batch:
        b = len(items)
        text_lengths = torch.tensor([len(t) for t, _, _ in items], dtype=torch.long)
        mel_lengths = torch.tensor([m.shape[1] for _, m, _ in items], dtype=torch.long)
        n_mels = items[0][1].shape[0]
        max_t = int(math.ceil(int(mel_lengths.max()) / self.r) * self.r)
        text = torch.zeros(b, int(text_lengths.max()), dtype=torch.long)
        mels = torch.zeros(b, n_mels, max_t)
        for k, (t, m, _) in enumerate(items):
            text[k, : len(t)] = t
            mels[k, :, : m.shape[1]] = m
        gate = make_gate_targets(mel_lengths, max_t)
        return Batch(text, text_lengths, mels, mel_lengths, gate, tuple(i for _, _, i in items))


def padding_share(batches: Sequence[Sequence[int]], lengths: Sequence[int], r: int = 1) -> float:
    """Padded frames / all frames over the given batches (each padded to its max, rounded to r)."""
    lengths = np.asarray(lengths)
    total = padded = 0
    for batch in batches:
        ls = lengths[list(batch)]
        width = int(math.ceil(ls.max() / r) * r)
        total += width * len(ls)
        padded += width * len(ls) - int(ls.sum())
    return padded / total if total else 0.0
