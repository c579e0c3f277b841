"""Two gloo processes (torch.multiprocessing spawn) give the single-process result."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, TensorDataset

from grass_rs import GradientStore
from grass_rs.attribution.attributor import Attributor
from grass_rs.attribution.distributed import (
    all_gather_columns,
    all_reduce_sum,
    launch,
    rank_and_world,
    shard_range,
)

N_TRAIN, N_TEST = 45, 6  # 45 = 22 + 23: uneven shards, batches that straddle the shard boundary


def _model() -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(10, 7), torch.nn.Tanh(), torch.nn.Linear(7, 4))


def _data(n: int, seed: int) -> TensorDataset:
    gen = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 10, generator=gen), torch.randint(0, 4, (n,), generator=gen))


def _fit_and_score(store: Path | None) -> tuple[Attributor, torch.Tensor]:
    torch.set_num_threads(1)
    att = Attributor(_model(), k=16, store=store)
    att.fit(DataLoader(_data(N_TRAIN, 0), batch_size=8))
    return att, att.score(DataLoader(_data(N_TEST, 1), batch_size=4))


def _worker(out: str) -> None:
    rank, world = rank_and_world()
    att, scores = _fit_and_score(Path(out) / "store")
    np.save(Path(out) / f"scores{rank}.npy", scores.numpy())
    np.save(Path(out) / f"fisher{rank}.npy", att.fisher.blocks["0"].gram.numpy())  # type: ignore[union-attr]
    np.save(Path(out) / f"count{rank}.npy", np.array([att.num_train]))
    att.save(Path(out) / "saved")
    # collective helpers on uneven blocks
    gathered = all_gather_columns(torch.full((2, rank + 1), float(rank)))
    np.save(Path(out) / f"gather{rank}.npy", gathered.numpy())
    np.save(Path(out) / f"reduce{rank}.npy", all_reduce_sum(torch.tensor([rank + 1.0])).numpy())
    assert world == 2 and dist.get_backend() == "gloo"


def test_shard_ranges_partition_in_order() -> None:
    for n in [2, 7, 45]:
        for world in [1, 2, 3]:
            if n >= world:
                parts = [list(shard_range(n, r, world)) for r in range(world)]
                assert [i for part in parts for i in part] == list(range(n))


def test_two_processes_equal_one(tmp_path: Path) -> None:
    launch(_worker, 2, str(tmp_path))
    single, scores = _fit_and_score(None)
    for rank in range(2):
        got = np.load(tmp_path / f"scores{rank}.npy")
        assert got.shape == (N_TEST, N_TRAIN)
        np.testing.assert_allclose(got, scores.numpy(), rtol=1e-4, atol=1e-5 * float(scores.abs().max()))
        assert int(np.load(tmp_path / f"count{rank}.npy")[0]) == N_TRAIN
        # float32 tolerance: torch's backward matmuls round a sample's δ differently depending on
        # the other rows of its batch (seen with torch 2.15), and the shards batch differently
        gram = single.fisher.blocks["0"].gram.numpy()  # type: ignore[union-attr]
        np.testing.assert_allclose(np.load(tmp_path / f"fisher{rank}.npy"), gram, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(np.load(tmp_path / f"gather{rank}.npy"), [[0, 1, 1], [0, 1, 1]])
        np.testing.assert_array_equal(np.load(tmp_path / f"reduce{rank}.npy"), [3.0])
    shards = [GradientStore.load(tmp_path / "store" / f"rank{r}-of-2") for r in range(2)]
    assert [s.num_rows for s in shards] == [22, 23] and all(s.complete for s in shards)
    # the saved multi-process attributor loads and scores in one process
    loaded = Attributor.load(tmp_path / "saved", _model(), k=16)
    again = loaded.score(DataLoader(_data(N_TEST, 1), batch_size=4))
    np.testing.assert_allclose(
        again.numpy(), scores.numpy(), rtol=1e-4, atol=1e-5 * float(scores.abs().max())
    )
