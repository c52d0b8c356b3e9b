"""Data-parallel workers read only their share of a split (``assign_files``), or fall back to the
hash partition; either way the partitions are disjoint, cover the split, and do not move between
runs (local engine, no Ray)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlops_ray.data.prepare import prepare_snapshot
from mlops_ray.data.splits import MAX_FILE_IMBALANCE, assign_files, load_split
from mlops_ray.workspace import get_workspace

sizes_st = st.dictionaries(st.text("abcdef0123", min_size=1, max_size=6), st.integers(1, 10_000), max_size=40)


@settings(max_examples=200, deadline=None)
@given(sizes=sizes_st, world=st.integers(1, 8))
def test_every_file_goes_to_exactly_one_worker_and_loads_are_balanced(sizes, world):
    parts = assign_files(sizes, world)
    if parts is None:
        assert len(sizes) < world or _greedy_imbalance(sizes, world) > MAX_FILE_IMBALANCE
        return
    assert len(parts) == world and all(parts)
    flat = [f for p in parts for f in p]
    assert sorted(flat) == sorted(sizes)
    loads = [sum(sizes[f] for f in p) for p in parts]
    assert max(loads) <= MAX_FILE_IMBALANCE * sum(loads) / world
    assert parts == assign_files(dict(reversed(list(sizes.items()))), world)  # insertion order is irrelevant


def _greedy_imbalance(sizes, world):
    loads = [0] * world
    for _, s in sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0])):
        loads[loads.index(min(loads))] += s
    return max(loads) / (sum(loads) / world)


def test_a_few_dominant_files_fall_back_to_the_hash_partition():
    assert assign_files({"a": 1000, "b": 10, "c": 10}, 2) is None
    assert assign_files({"a": 10}, 2) is None
    assert assign_files({"a": 10, "b": 11, "c": 9, "d": 10}, 2) == [["b", "c"], ["a", "d"]]
    with pytest.raises(ValueError):
        assign_files({"a": 1}, 0)


@pytest.mark.parametrize("shards,world", [(8, 2), (8, 3), (1, 6)])
def test_worker_partitions_are_disjoint_cover_the_split_and_repeat(small_config, shards, world):
    cfg = small_config(rows=2000, shards=shards)
    snap = prepare_snapshot(cfg.data, get_workspace(), engine="local").snapshot
    pre = snap.preprocessor()
    n_files = len(snap.split_files("train"))
    full = load_split(snap, "train", pre)
    parts = [load_split(snap, "train", pre, partition=(r, world)) for r in range(world)]
    ids = np.concatenate([p.ids for p in parts])
    assert len(ids) == len(set(ids)) == len(full)
    assert set(ids) == set(full.ids)
    assert all(len(p) > 0 for p in parts)
    again = load_split(snap, "train", pre, partition=(world - 1, world))
    assert list(again.ids) == list(parts[-1].ids) and np.array_equal(again.x, parts[-1].x)
    recorded = {r.rsplit("/", 1)[-1]: v["bytes"] for r, v in snap.manifest["files"].items() if "/train/" in r}
    by_files = assign_files(recorded, world) is not None
    assert by_files == (shards > 1), f"{n_files} files for {world} workers"  # both paths are exercised
    if not by_files:  # the hash partition: rank r holds the rows whose order hash is r mod world
        assert all(abs(len(p) - len(full) / world) < 0.1 * len(full) for p in parts)
