"""The training data, update by update, from a data position that a checkpoint records.

An epoch holds whole updates of ``train.grad_accum_steps`` micro-batches (see
DistributedBucketSampler); a position is (epoch, global batch index in it), so that a resumed
run reads on exactly where the stopped one was.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DataLoader

from tacotrain.batch import Batch
from tacotrain.config import Config
from tacotrain.data.loader import Collate, DistributedBucketSampler, TextMelDataset


class Feed:
    def __init__(self, cfg: Config, train_set: TextMelDataset, sampler: DistributedBucketSampler,
                 collate: Collate, device: torch.device) -> None:
        self.cfg, self.train_set, self.sampler = cfg, train_set, sampler
        self.collate, self.device = collate, device

    def loader(self, epoch: int, batch_in_epoch: int) -> DataLoader:
        """This rank's batches of ``epoch`` from a global batch index on."""
        self.sampler.set_epoch(epoch)
        batches = self.sampler.batches(batch_in_epoch)
        gen = torch.Generator().manual_seed(self.cfg.train.seed + epoch)
        return DataLoader(self.train_set, batch_sampler=batches, collate_fn=self.collate,
                          num_workers=self.cfg.train.num_workers, generator=gen,
                          pin_memory=self.device.type == "cuda")

    def updates(self, position: Callable[[], tuple[int, int]], set_r: Callable[[], int],
                r_now: Callable[[], int]) -> Iterator[list[Batch]]:
        """The rest of the epoch at ``position()`` (epoch, batch index) in updates, each
        collated with the reduction factor of the step it is used at: ``set_r()`` brings the
        model, loss and collate to the current step's r and returns it; when ``r_now()`` differs
        after an update (the schedule, or a rollback), the loader is rebuilt at the position
        then: worker processes hold their own copy of the collate."""
        k = self.cfg.train.grad_accum_steps
        while True:
            r = set_r()
            micro: list[Batch] = []
            for batch in self.loader(*position()):
                micro.append(batch)
                if len(micro) < k:
                    continue
                yield micro
                micro = []
                if r_now() != r:
                    break
            else:
                return
