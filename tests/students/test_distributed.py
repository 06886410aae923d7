"""DDP helpers: per-rank sample order (DistributedSampler), single-process no-ops, a real 2-process gloo run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from agedistill_core.students import distributed as D

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("n,world", [(10, 3), (9, 3), (1, 4), (7, 1), (100, 8)])
def test_epoch_indices_cover_and_equal_length(n, world):
    shards = [D.epoch_indices(n, r, world, epoch=2, seed=5) for r in range(world)]
    per = -(-n // world)
    assert all(len(s) == per for s in shards)  # the same number of batches on every rank
    allidx = np.concatenate(shards)
    assert set(allidx.tolist()) == set(range(n))
    assert len(allidx) - len(set(allidx.tolist())) == per * world - n  # only the padding repeats
    assert all(s.dtype == np.int64 for s in shards)


def test_epoch_indices_deterministic_and_per_epoch():
    a = D.epoch_indices(50, 1, 2, epoch=0, seed=1)
    assert np.array_equal(a, D.epoch_indices(50, 1, 2, epoch=0, seed=1))
    assert not np.array_equal(a, D.epoch_indices(50, 1, 2, epoch=1, seed=1))
    assert not np.array_equal(a, D.epoch_indices(50, 1, 2, epoch=0, seed=2))
    assert np.array_equal(D.epoch_indices(6, 0, 2, 0, 0, shuffle=False), [0, 2, 4])
    assert len(D.epoch_indices(0, 0, 2, 0, 0)) == 0
    with pytest.raises(ValueError):
        D.epoch_indices(10, 2, 2, 0, 0)


def test_epoch_indices_are_the_distributed_sampler_after_set_epoch():
    from torch.utils.data import DistributedSampler

    for rank in range(3):
        sampler = DistributedSampler(range(20), num_replicas=3, rank=rank, shuffle=True, seed=7)
        sampler.set_epoch(4)
        assert D.epoch_indices(20, rank, 3, epoch=4, seed=7).tolist() == list(iter(sampler))
    s = D.train_sampler(20, 1, 3, seed=7)
    assert isinstance(s, DistributedSampler) and (s.seed, s.num_replicas, s.rank, s.drop_last) == (7, 3, 1, False)
    # one process: the whole permutation of the epoch, fixed by (seed, epoch)
    one = D.epoch_indices(20, 0, 1, epoch=4, seed=7)
    assert one.tolist() == torch.randperm(20, generator=torch.Generator().manual_seed(7 + 4)).tolist()
    # drop_last: the tail that does not split evenly is left out instead of padded
    assert [len(D.epoch_indices(10, r, 3, 0, 0, drop_last=True)) for r in range(3)] == [3, 3, 3]


@pytest.mark.parametrize("n,world,batch", [(24, 2, 4), (22, 2, 4), (30, 3, 4), (12, 4, 5)])
def test_ranks_batches_together_are_one_process_batch_of_world_times_batch(n, world, batch):
    """The data side of "W ranks of batch B train like one process of batch W*B" (n a multiple of W)."""
    shards = [D.epoch_indices(n, r, world, epoch=1, seed=3) for r in range(world)]
    one = D.epoch_indices(n, 0, 1, epoch=1, seed=3)
    steps = -(-len(shards[0]) // batch)
    assert steps == -(-n // (world * batch))
    for k in range(steps):
        together = np.concatenate([s[k * batch:(k + 1) * batch] for s in shards])
        assert sorted(together.tolist()) == sorted(one[k * world * batch:(k + 1) * world * batch].tolist())
        assert len(set(len(s[k * batch:(k + 1) * batch]) for s in shards)) == 1  # equal halves every step


def test_single_process_is_a_noop(monkeypatch):
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    info = D.init_distributed()
    assert (info.rank, info.world_size, info.local_rank, info.is_main) == (0, 1, 0, True)
    assert not info.distributed
    assert not D.is_distributed()
    assert D.all_reduce_mean(2.5) == 2.5
    D.barrier()
    D.cleanup()


WORKER = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np
    import torch
    from torch.nn.parallel import DistributedDataParallel as DDP
    from agedistill_core.students import distributed as D

    info = D.init_distributed()
    assert info.world_size == 2 and D.is_distributed()
    torch.manual_seed(0)  # same init on both ranks
    model = torch.nn.Linear(3, 1)
    ddp = DDP(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    # each rank sees different data
    g = torch.Generator().manual_seed(100 + info.rank)
    x = torch.randn(4, 3, generator=g)
    y = torch.randn(4, 1, generator=g)
    loss = (ddp(x) - y).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    opt.step()
    mean_loss = D.all_reduce_mean(loss.item())
    shard = D.epoch_indices(11, info.rank, info.world_size, epoch=3, seed=7)
    out = {
        "rank": info.rank, "is_main": info.is_main, "local_rank": info.local_rank,
        "device": str(info.device),
        "loss": loss.item(), "mean_loss": mean_loss,
        "grads": [g.reshape(-1).tolist() for g in grads],
        "params": [p.detach().reshape(-1).tolist() for p in model.parameters()],
        "shard": shard.tolist(),
    }
    with open(os.path.join(sys.argv[1], f"rank{info.rank}.json"), "w") as f:
        json.dump(out, f)
    D.barrier()
    D.cleanup()
    assert not D.is_distributed()
    """
)


def test_two_process_gloo_ddp(tmp_path: Path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = dict(os.environ)
    env.pop("CUDA_VISIBLE_DEVICES", None)
    env["CUDA_VISIBLE_DEVICES"] = ""  # force gloo on CPU even on a GPU box
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(script), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = [json.loads((tmp_path / f"rank{i}.json").read_text()) for i in range(2)]
    assert [x["rank"] for x in r] == [0, 1] and [x["is_main"] for x in r] == [True, False]
    assert [x["local_rank"] for x in r] == [0, 1] and r[0]["device"] == "cpu"
    assert r[0]["loss"] != r[1]["loss"]
    # DDP averaged the gradients: identical grads and params on both ranks after a step
    assert r[0]["grads"] == r[1]["grads"]
    assert r[0]["params"] == r[1]["params"]
    assert r[0]["mean_loss"] == pytest.approx((r[0]["loss"] + r[1]["loss"]) / 2)
    assert r[1]["mean_loss"] == pytest.approx(r[0]["mean_loss"])
    # the averaged gradient equals the gradient of the mean loss over both ranks' data
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    total = 0
    for rank in range(2):
        g = torch.Generator().manual_seed(100 + rank)
        x = torch.randn(4, 3, generator=g)
        y = torch.randn(4, 1, generator=g)
        total = total + (model(x) - y).pow(2).mean() / 2
    total.backward()
    np.testing.assert_allclose(r[0]["grads"][0], model.weight.grad.reshape(-1).tolist(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r[0]["grads"][1], model.bias.grad.reshape(-1).tolist(), rtol=1e-5, atol=1e-6)
    # shards: equal length, together they cover every sample
    assert len(r[0]["shard"]) == len(r[1]["shard"]) == 6
    assert set(r[0]["shard"]) | set(r[1]["shard"]) == set(range(11))
