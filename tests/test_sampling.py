"""Each rank and DataLoader worker reads a disjoint part; together they cover every record exactly
once per epoch (drop_last style) or at least once (pad); the shuffle is exact, changes with the
epoch, is the same on every rank, and resumes mid-epoch."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from imgtui.errors import ImgtuiError
from imgtui.sampling import Split, epoch_order, rank_part, worker_part


def shard_ranges(sizes: list[int]) -> list[tuple[int, int]]:
    out, start = [], 0
    for s in sizes:
        out.append((start, start + s))
        start += s
    return out


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 400), world=st.integers(1, 6), workers=st.integers(1, 4), seed=st.integers(0, 9),
       epoch=st.integers(0, 5), pad=st.booleans(),
       shard_sizes=st.one_of(st.none(), st.lists(st.integers(1, 60), min_size=1, max_size=12)))
def test_parts_are_disjoint_and_cover_the_epoch(n, world, workers, seed, epoch, pad, shard_sizes):
    shards = None
    if shard_sizes is not None:
        shards = shard_ranges(shard_sizes)
        n = shards[-1][1]
    order = epoch_order(n, seed, epoch, True, shards)
    assert sorted(order.tolist()) == list(range(n))  # an exact permutation
    parts = [rank_part(order, r, world, pad, shards) for r in range(world)]
    lengths = {len(p) for p in parts}
    assert len(lengths) == 1  # every rank reads the same number of records
    per = lengths.pop()
    everything = np.concatenate(parts) if parts else np.empty(0)
    if pad:
        assert per == -(-n // world) and set(everything.tolist()) == set(range(n))
    else:
        assert per == n // world
        assert len(set(everything.tolist())) == len(everything)  # disjoint
        assert n - len(everything) < world  # at most world-1 records left out
    for p in parts:
        chunks = [worker_part(p, w, workers) for w in range(workers)]
        assert sorted(np.concatenate(chunks).tolist()) == sorted(p.tolist())


def test_the_shuffle_changes_with_the_epoch_and_is_the_same_on_every_rank():
    a0, a1 = epoch_order(1000, 7, 0), epoch_order(1000, 7, 1)
    assert not np.array_equal(a0, a1)
    assert np.array_equal(a0, epoch_order(1000, 7, 0))  # another process, same seed: same order
    assert not np.array_equal(a0, epoch_order(1000, 8, 0))
    assert np.array_equal(epoch_order(5, 7, 3, shuffle=False), np.arange(5))


def test_with_shards_each_rank_reads_whole_shards():
    shards = shard_ranges([100] * 8)
    order = epoch_order(800, 1, 0, True, shards)
    for rank in range(4):
        part = rank_part(order, rank, 4, shards=shards)
        touched = {int(i) // 100 for i in part}
        assert len(touched) == 2 and len(part) == 200  # two whole shards, no others


def test_resume_mid_epoch_gives_the_rest_of_the_same_order():
    split = Split(500, seed=3, rank=1, world_size=2)
    split.set_epoch(2)
    it = iter(split)
    first = [next(it) for _ in range(60)]
    state = split.state_dict()
    rest_expected = list(split.remaining())
    other = Split(500, seed=0, rank=1, world_size=2)
    other.load_state_dict(state)
    assert other.epoch == 2 and list(other.remaining()) == rest_expected
    assert first + rest_expected == list(Split(500, seed=3, rank=1, world_size=2, epoch=2).indices())
    with pytest.raises(ImgtuiError, match="of a store of 500 records, not 400"):
        Split(400, rank=1, world_size=2).load_state_dict(state)
    with pytest.raises(ImgtuiError, match="rank 2 is not in 0..1"):
        Split(10, rank=2, world_size=2).indices()


def _write(tmp_path, n=50, backend="lmdb"):
    import imgtui
    from imgtui.records import Record

    path = tmp_path / f"s.{backend}"
    with imgtui.writer(path, backend) as w:
        for i in range(n):
            w.write(Record(np.full((3, 3), i % 256, np.uint8), i))
    return path


def test_epoch_dataset_two_ranks_cover_every_record_once_and_resume(tmp_path):
    import imgtui

    path = _write(tmp_path)
    ranks = [imgtui.dataset(path, shuffle=True, seed=5, rank=r, world_size=2, block=8) for r in range(2)]
    for ds in ranks:
        ds.set_epoch(1)
    samples = [list(ds) for ds in ranks]
    seen = [[label for _img, label in s] for s in samples]
    assert len(seen[0]) == len(seen[1]) == 25 and sorted(seen[0] + seen[1]) == list(range(50))
    assert all(np.all(img == label % 256) for s in samples for img, label in s)  # pixels match labels
    assert list(ranks[0]) == []  # the epoch is over for this rank until set_epoch
    # resume rank 0 after 10 records: the rest of the same epoch order
    again = imgtui.dataset(path, shuffle=True, seed=5, rank=0, world_size=2, block=8)
    again.set_epoch(1)
    it = iter(again)
    first = [next(it)[1] for _ in range(8)]  # one block
    state = again.state_dict()
    resumed = imgtui.dataset(path, shuffle=True, seed=0, rank=0, world_size=2, block=8)
    resumed.load_state_dict(state)
    assert first + [label for _i, label in resumed] == seen[0]
    with pytest.raises(ImgtuiError, match="give both rank and world_size"):
        imgtui.dataset(path, rank=0)


def test_epoch_dataset_with_torch_dataloader_workers(tmp_path):
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader

    import imgtui

    path = _write(tmp_path, n=64)
    ds = imgtui.dataset(path, shuffle=True, seed=1, block=8)
    loader = DataLoader(ds, batch_size=8, num_workers=2, multiprocessing_context="spawn")
    labels = [int(x) for _imgs, batch in loader for x in batch]
    assert sorted(labels) == list(range(64))
    assert labels == [int(i) for i in ds.split.indices()]  # batch_size == block: exactly the epoch's order
    assert isinstance(ds, torch.utils.data.IterableDataset)
