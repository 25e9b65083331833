"""``metamem train`` on the two-view sum task (a sequence task, not an image dataset): the
data source, its fixed evaluation protocol, validation errors, and short training runs of the
two-view learners (exact resume included) on the sum task and on two-view image episodes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from metamem.config import ConfigError, load_config
from metamem.data import DatasetError, load_dataset
from metamem.evaluation import evaluate
from metamem.evaluation.inspect_memory import inspect_run
from metamem.learners import build_learner
from metamem.memory.inspection import decoder_read_maps
from metamem.training import train
from metamem.validate import check_experiment

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments" / "two_view"
TINY = ["learner.hidden_size=6", "learner.slots=5", "learner.width=4", "episodes.batch_size=4",
        "data.options.max_length=4", "train.val_episodes=12", "train.val_every=3", "train.log_every=2",
        "train.checkpoint_every=3", "eval.episodes=20", "eval.batch_size=7", "device=cpu"]


def test_sum_task_sequences_and_targets() -> None:
    task = load_dataset("two_view_sum", "train", min_length=2, max_length=5, base=4)
    batch = task.sample(6, torch.Generator().manual_seed(0))
    a, b = batch.views[0].argmax(-1), batch.views[1].argmax(-1)
    ta, tb = a.shape[1], b.shape[1]
    assert 2 <= ta <= 5 and 2 <= tb <= 5 and batch.targets.shape == (6, max(ta, tb))
    for i in range(6):  # the DMNC code's pairing: view b read from its end, a shorter view cycled
        for t in range(max(ta, tb)):
            want = int(a[i, t % ta]) + int(b[i, tb - 1 - t % tb])
            assert int(batch.targets[i, t]) == want
    assert task.classes == 7 and task.learner_kwargs() == {"view_sizes": [4, 4], "decoder_size": 1, "classes": 7}


def test_protocol_is_fixed_and_split_dependent() -> None:
    val, test = load_dataset("two_view_sum", "val"), load_dataset("two_view_sum", "test")
    assert val.fingerprint(30, 1) == val.fingerprint(30, 1)
    assert val.fingerprint(30, 1) != test.fingerprint(30, 1) != test.fingerprint(30, 2)
    lengths, a, _ = test.protocol_sequences(30, 1)
    assert lengths.shape == (30, 2) and a.shape == (30, 10) and 1 <= int(lengths.min()) <= int(lengths.max()) <= 10


def test_evaluation_does_not_depend_on_batch_size() -> None:
    task = load_dataset("two_view_sum", "test", max_length=5, base=3)
    torch.manual_seed(0)
    model = build_learner("dmnc", n_way=1, image_shape=task.image_shape, hidden_size=6, slots=5, width=4,
                          **task.learner_kwargs())
    r1 = evaluate(model, task, episodes=25, seed=3, batch_size=4)
    r2 = evaluate(model, task, episodes=25, seed=3, batch_size=25)
    assert r1.fingerprint == r2.fingerprint and r1.protocol.dataset == "two_view_sum"
    assert len(r1.fingerprint) == 64  # a full SHA-256, as results files require
    assert torch.allclose(r1.per_episode, r2.per_episode)
    # per-episode accuracy = fraction of that pair's decoder steps predicted right
    lengths, a, b = task.protocol_sequences(25, 3)
    i = 0
    la, lb = (int(v) for v in lengths[i])
    eye = torch.eye(3)
    from metamem.memory.multi import TwoViewBatch

    steps = max(la, lb)
    target = torch.tensor([[int(a[i, t % la]) + int(b[i, lb - 1 - t % lb]) for t in range(steps)]])
    with torch.no_grad():
        out = model(TwoViewBatch((eye[a[i : i + 1, :la]], eye[b[i : i + 1, :lb]]), torch.zeros(1, steps, 1), target))
    assert float(r1.per_episode[i]) == pytest.approx(float(out.accuracy()[0]))


def test_bad_options_and_learners_are_named() -> None:
    with pytest.raises(DatasetError, match="min_length=5 exceeds max_length=3"):
        load_dataset("two_view_sum", "train", min_length=5, max_length=3)
    with pytest.raises(DatasetError, match="unknown split 'dev'"):
        load_dataset("two_view_sum", "dev")
    with pytest.raises(DatasetError, match="data.options.base must be an integer >= 1"):
        load_dataset("two_view_sum", "train", base=0)
    cfg = load_config(EXPERIMENTS / "dmnc_sum.yaml", ["learner.name=lstm"])
    with pytest.raises(ConfigError, match="two_view_sum is a two-view sequence task; learner lstm cannot read it"):
        check_experiment(cfg)


@pytest.mark.parametrize("name", ["dmnc_sum", "dcman_sum"])
def test_train_on_the_sum_task_and_resume_exactly(name: str, tmp_path: Path) -> None:
    full = load_config(EXPERIMENTS / f"{name}.yaml", [*TINY, "train.steps=6"])
    torch.manual_seed(0)
    res = train(full, tmp_path / "full", progress=False)
    assert res.evaluation and res.evaluation[0]["protocol"]["dataset"] == "two_view_sum"
    assert len(res.evaluation[0]["scores"]["set"]["per_episode"]) == 20
    saved = (tmp_path / "full" / "config.yaml").read_text()
    assert "view_sizes" in saved and "decoder_size" in saved  # the layout is recorded for reloading
    written = inspect_run(tmp_path / "full", tmp_path / "inspect")  # reloads the run from its config
    assert written["decoder_reads"].stat().st_size > 1000
    half = load_config(EXPERIMENTS / f"{name}.yaml", [*TINY, "train.steps=3"])
    torch.manual_seed(0)
    train(half, tmp_path / "half", progress=False, final_eval=False)
    from metamem.runs import load_checkpoint, restore_global_rng

    restore_global_rng(load_checkpoint(tmp_path / "half", which="last"))
    more = load_config(tmp_path / "half" / "config.yaml", ["train.steps=6"])
    train(more, tmp_path / "half", resume=True, progress=False)

    def lines(run: str) -> list[dict]:
        recs = [json.loads(x) for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k not in ("elapsed_s", "cpu_s", "episodes_per_s")} for r in recs]

    assert lines("full") == lines("half")


def test_train_on_two_view_episodes(tmp_path: Path) -> None:
    """The few-shot variant: two views of each support set of image episodes (synthetic data)."""
    cfg = load_config(EXPERIMENTS / "dmnc_omniglot.yaml", [
        "data.name=synthetic", "data.train_split=train", "data.val_split=val", "data.test_split=test",
        "data.options={num_classes: 8, per_class: 4, image_size: 9}", "episodes.n_way=3", "episodes.n_query=2",
        "episodes.batch_size=2", "learner.hidden_size=6", "learner.slots=5", "learner.width=4", "train.steps=4",
        "train.val_every=2", "train.val_episodes=4", "eval.n_way=3", "eval.n_query=2", "eval.episodes=6",
        "device=cpu"])
    torch.manual_seed(0)
    res = train(cfg, tmp_path / "run", progress=False)
    assert res.evaluation and res.evaluation[0]["protocol"]["n_way"] == 3
    assert 0.0 <= res.evaluation[0]["scores"]["set"]["mean"] <= 1.0
    written = inspect_run(tmp_path / "run", tmp_path / "inspect")  # metamem eval --inspect
    assert written["decoder_reads"].stat().st_size > 1000


def test_decoder_read_maps_follow_the_writes() -> None:
    """The plot's lower row is the read weights times the encoders' write weights: on a memory
    whose step τ wrote only slot τ, decoder row t reading slot s lands on encoder step s."""
    reads = torch.zeros(1, 3, 1, 1, 4)  # [B, Td, M, R, S]: decoder step t reads slot (t + 1) % 4
    for t in range(3):
        reads[0, t, 0, 0, (t + 1) % 4] = 1.0
    writes = torch.eye(4)[None, :, None, :]  # [B, T=4, Wh=1, S=4]: step τ wrote slot τ
    maps = decoder_read_maps({"read_weights": reads, "write_weights": [writes], "memory_names": ["m"]})
    assert maps[0]["name"] == "m" and maps[0]["slots"].shape == (3, 4)
    assert torch.equal(maps[0]["steps"], torch.eye(4)[[1, 2, 3]])
