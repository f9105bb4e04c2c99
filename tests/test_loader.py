from __future__ import annotations

import numpy as np
import pytest
import torch

from tacotrain.config import Settings
from tacotrain.data.loader import (
    BucketBatchSampler,
    Collate,
    PreparedData,
    TextMelDataset,
    padding_share,
)
from tacotrain.data.prepare import prepare


def _item(n_text: int, n_frames: int, i: int = 0):
    return (torch.arange(1, n_text + 1), torch.full((4, n_frames), float(i + 1)), f"id{i}")


@pytest.mark.parametrize("r", [1, 2, 3, 5])
def test_collate_pads_to_multiple_of_r_with_gate_targets(r):
    items = [_item(5, 7, 0), _item(9, 12, 1), _item(3, 1, 2)]
    b = Collate(r)(items)
    t = b.mels.shape[2]
    assert t % r == 0 and t >= 12 and t - 12 < r
    assert b.text.shape == (3, 9) and b.text_lengths.tolist() == [5, 9, 3]
    assert b.mel_lengths.tolist() == [7, 12, 1]
    assert b.text[0, 5:].eq(0).all() and b.text[1].tolist() == list(range(1, 10))
    for k, n in enumerate([7, 12, 1]):
        assert b.mels[k, :, :n].eq(k + 1).all() and b.mels[k, :, n:].eq(0).all()
        expected = torch.zeros(t)
        expected[n - 1:] = 1
        assert torch.equal(b.gate_targets[k], expected)
    assert b.ids == ("id0", "id1", "id2")


def test_bucket_sampler_every_item_once_deterministic_and_homogeneous():
    rng = np.random.default_rng(0)
    lengths = rng.integers(80, 700, size=203)
    s = BucketBatchSampler(lengths, batch_size=16, seed=5)
    e0 = s.batches()
    flat = sorted(i for b in e0 for i in b)
    assert flat == list(range(203))
    assert all(1 <= len(b) <= 16 for b in e0)
    assert BucketBatchSampler(lengths, batch_size=16, seed=5).batches() == e0
    s.set_epoch(1)
    e1 = s.batches()
    assert sorted(i for b in e1 for i in b) == list(range(203))
    assert e1 != e0  # shuffled differently each epoch
    assert {tuple(b) for b in e1} != {tuple(b) for b in e0}  # membership varies too
    bucketed = padding_share(e0, lengths)
    random_batches = [list(range(k, min(k + 16, 203))) for k in range(0, 203, 16)]
    perm = rng.permutation(203)
    random_share = padding_share([perm[b].tolist() for b in random_batches], lengths)
    assert bucketed < 0.10 < 0.25 < random_share
    mixed = BucketBatchSampler(lengths, batch_size=16, seed=5, bucket_batches=4).batches()
    assert sorted(i for b in mixed for i in b) == list(range(203))
    assert bucketed <= padding_share(mixed, lengths) < random_share


def test_bucket_sampler_drop_last_and_small_sets():
    s = BucketBatchSampler([5, 6, 7], batch_size=8, seed=0)
    assert sorted(s.batches()[0]) == [0, 1, 2]
    s = BucketBatchSampler(list(range(20)), batch_size=8, seed=0, drop_last=True)
    assert all(len(b) == 8 for b in s.batches())
    with pytest.raises(ValueError):
        BucketBatchSampler([1], batch_size=0)


def test_dataset_over_prepared_cache(bad_corpus, tmp_path):
    corpus, _ = bad_corpus
    prepare(corpus, tmp_path / "data", Settings(), workers=1, progress=False)
    data = PreparedData.load(tmp_path / "data")
    ds = TextMelDataset(data, "train")
    assert len(ds) == 4
    text, mel, item_id = ds[0]
    item = ds.items[0]
    assert item_id == item["id"] and mel.shape == (80, item["frames"])
    assert "".join(data.symbols[i] for i in text.tolist()) == item["text"]
    loader = torch.utils.data.DataLoader(
        ds, batch_sampler=BucketBatchSampler(ds.lengths, 2, seed=0), collate_fn=Collate(2))
    seen = []
    for batch in loader:
        assert batch.mels.shape[2] % 2 == 0
        seen.extend(batch.ids)
    assert sorted(seen) == sorted(i["id"] for i in ds.items)
