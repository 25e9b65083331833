"""DistributedDataParallel on CPU: 2 gloo processes stay in sync and sample different episodes."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp

from metamem.config import load_config
from metamem.runs import read_metrics
from metamem.training.distributed import rank_seed

SMOKE = Path(__file__).resolve().parents[2] / "experiments" / "smoke"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank: int, world: int, port: int, out: str) -> None:
    """What torchrun sets up, then the library entry point."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.manual_seed(100 + rank)  # different initial weights: DDP must broadcast rank 0's
    from metamem.training import train

    cfg = load_config(SMOKE / "synthetic_mann.yaml",
                      ["train.steps=6", "train.log_every=3", "train.val_every=6", "device=cpu"])
    result = train(cfg, Path(out) / "run", progress=False, final_eval=False)
    torch.save({"params": {k: v.detach().clone() for k, v in result.learner.state_dict().items()},
                "sampler": result.sampler_state["generator"]}, Path(out) / f"rank{rank}.pt")


def test_two_cpu_ranks_stay_identical(tmp_path: Path) -> None:
    mp.spawn(worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["params"].keys() == r1["params"].keys()
    for key in r0["params"]:
        assert torch.equal(r0["params"][key], r1["params"][key]), key
    assert not torch.equal(r0["sampler"], r1["sampler"])  # each rank drew its own episodes
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")  # rank 0 alone wrote
    assert [r["step"] for r in records if "loss" in r] == [3, 6]
    assert [r["step"] for r in records if "val_acc" in r] == [6]


def test_rank_seeds_differ() -> None:
    seeds = {rank_seed(0, r) for r in range(8)}
    assert len(seeds) == 8 and rank_seed(0, 1) == rank_seed(0, 1) != rank_seed(1, 1)
