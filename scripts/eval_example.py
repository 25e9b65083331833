"""Evaluate a learner with metamem's fixed protocol, then score your own episode.

Takes about a minute on a busy 2-core CPU (35 s of CPU time):

    python scripts/eval_example.py                      # a ProtoNet trained 40 steps on synthetic data
    python scripts/eval_example.py --run runs/mann_lru  # a trained run directory instead

What it shows:

1. ``metamem.evaluation.evaluate``: the same fixed episodes (``fingerprint``) scored with the
   set protocol (query accuracy) and the sequence protocol (accuracy by presentation);
2. writing ``results.json/.md/.csv`` and the per-presentation plot;
3. scoring a user-provided episode given as tensors and as folders of PNG files
   (one sub-folder per class), preprocessed like the training data.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import metamem
from metamem.data import ImageDataset, load_dataset
from metamem.episodes import EpisodeSampler
from metamem.evaluation import (
    Preprocess,
    episode_from_tensors,
    evaluate,
    load_image_folders,
    predict_episode,
    write_results,
)
from metamem.evaluation.plots import plot_per_presentation
from metamem.learners import build_learner


def quick_protonet(steps: int) -> tuple[torch.nn.Module, ImageDataset]:
    """A ProtoNet trained for a few steps on easy synthetic classes, and its test split."""
    opts = dict(num_classes=30, per_class=20, image_size=16, noise=0.1)
    train_ds = load_dataset("synthetic", split="train", **opts)
    test_ds = load_dataset("synthetic", split="test", **opts)
    net = build_learner("protonet", n_way=5, image_shape=train_ds.image_shape)
    opt = torch.optim.Adam(net.parameters(), lr=5e-3)
    sampler = EpisodeSampler(train_ds, n_way=5, k_shot=1, n_query=5, batch_size=8, seed=0)
    net.train()
    for _ in range(steps):
        loss = net(sampler.sample()).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval(), test_ds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, help="a run directory or checkpoint to evaluate instead")
    ap.add_argument("--steps", type=int, default=40, help="training steps of the quick ProtoNet")
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--out", type=Path, default=Path("runs/eval_example"),
                    help="folder for the results (default: runs/eval_example)")
    args = ap.parse_args()

    if args.run is not None:
        run = metamem.load_run(args.run)
        learner, dataset = run.learner, run.dataset(None, run.config.eval.split)
        n_way = run.config.episodes.n_way
    else:
        learner, dataset = quick_protonet(args.steps)
        n_way = 5

    # 1. the fixed protocol, both scorings
    res = evaluate(learner, dataset, n_way=n_way, k_shot=1, n_query=4, episodes=args.episodes,
                   seed=1234, protocol="both", batch_size=25, progress=True)
    print(f"{res.learner} on {dataset.name}/{dataset.split}: {res.protocol.describe()}")
    print(f"  set accuracy      {100 * res.mean:.2f} ± {100 * res.ci95:.2f} %")
    seq = res.scores["sequence"]
    print(f"  sequence accuracy {100 * seq.mean:.2f} ± {100 * seq.ci95:.2f} %")
    print("  by presentation   " + " ".join(f"{100 * p:.1f}" for p in res.per_presentation))
    print(f"  fingerprint       {res.fingerprint}")

    # 2. reports and a plot
    paths = write_results([res], args.out)
    plot_per_presentation([res], args.out / "per_presentation.png")
    print(f"wrote {', '.join(str(p) for p in paths.values())} and the plot")

    # 3a. a user episode from tensors: 5 classes x 2 shots taken from the test split
    ids = [torch.nonzero(dataset.labels == c).flatten()[:3] for c in range(n_way)]
    support = torch.cat([i[:2] for i in ids])
    query = torch.stack([i[2] for i in ids])
    ep = episode_from_tensors(
        dataset.images[support], torch.arange(n_way).repeat_interleave(2),
        dataset.images[query], torch.arange(n_way), image_shape=dataset.image_shape,
        class_names=[dataset.class_names[c] for c in range(n_way)],
    )
    pred = predict_episode(learner, ep)
    print(f"tensor episode: predicted {pred.predicted_names}, accuracy {pred.accuracy:.2f}")

    # 3b. the same episode as folders of PNG files (support/<class>/*.png, query/<class>/*.png)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pre = Preprocess.like(dataset)
        for c in range(n_way):
            name = f"class{c}"
            for j, idx in enumerate(ids[c].tolist()):
                img = dataset.images[idx].numpy()
                img = 255 - img if pre.invert else img  # files hold the raw (uninverted) look
                arr = img[0] if img.shape[0] == 1 else np.transpose(img, (1, 2, 0))
                sub = "support" if j < 2 else "query"
                (root / sub / name).mkdir(parents=True, exist_ok=True)
                Image.fromarray(arr).save(root / sub / name / f"{j}.png")
        ep2 = load_image_folders(root / "support", root / "query", pre)
        pred2 = predict_episode(learner, ep2)
        print(f"folder episode: predicted {pred2.predicted_names}, accuracy {pred2.accuracy:.2f}")


if __name__ == "__main__":
    main()
