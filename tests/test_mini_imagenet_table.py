"""scripts/mini_imagenet_table.py reads both places a run keeps its scores."""

from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_rows_read_eval_json_and_metamem_eval_folders(load_script, tmp_path: Path) -> None:
    table = load_script("mini_imagenet_table")
    # the committed MetaNet run keeps its 5w1s cell in eval/results.json (a `metamem eval --out` folder)
    src = REPO / "results" / "mini_imagenet" / "metanet_conv4"
    (tmp_path / "eval").mkdir()
    for name in ("config.yaml", "metrics.jsonl"):
        (tmp_path / name).write_text((src / name).read_text())
    scored = json.loads((src / "eval" / "results.json").read_text())
    (tmp_path / "eval" / "results.json").write_text(json.dumps(scored))
    r = scored["results"][0]
    want = f"{100 * r['scores']['set']['mean']:.2f} ± {100 * r['scores']['set']['ci95']:.2f} (1000 ep.)"
    line = table.row(tmp_path)
    assert line.startswith("| metanet | conv4 | " + want + " | – |"), line
    # and a training run's own eval.json, both cells, next to a re-scoring of one of them
    import torch

    from metamem.evaluation import Score

    per_episode = torch.tensor([0.5 + 0.1 * (-1) ** i for i in range(1000)], dtype=torch.float64)
    score = Score("set", per_episode)  # a whole score: the reader checks mean and ci95 against it
    five = dict(r, protocol=dict(r["protocol"], k_shot=5), scores={"set": score.to_dict()})
    (tmp_path / "eval.json").write_text(json.dumps([five]))
    cell = f"{100 * score.mean:.2f} ± {100 * score.ci95:.2f} (1000 ep.)"
    assert cell == "50.00 ± 0.62 (1000 ep.)"
    assert table.row(tmp_path).startswith(f"| metanet | conv4 | {want} | {cell} |")
