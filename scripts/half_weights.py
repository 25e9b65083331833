"""Store a committed run's weights in half precision, if it still scores the same.

For each run directory, the weights of ``checkpoints/last.pt`` are rounded to float16
(:func:`metamem.runs.half_precision`) and every evaluation the run holds (``eval.json``,
``*/results.json``) is scored again with them on its own recorded protocol (same split,
ways, shots, queries, episodes, seed, data options and scoring; same fingerprint). The
float16 copy replaces ``last.pt`` (``--write``) only when every figure (each scoring's mean
and per-presentation accuracy) is within ``--tolerance`` points of the committed one::

    python scripts/half_weights.py results/omniglot_paper/protonet --threads 1            # measure
    python scripts/half_weights.py results/omniglot_paper/protonet --threads 1 --write    # and store

Prints one line per evaluation: the committed and float16 figures and the largest
difference, in points; exits 1 when a run is outside the tolerance.

A row that is not its table's best for its learner and dataset keeps no weights: ``--drop
DOC`` replaces ``last.pt`` by ``checkpoints/WEIGHTS_NOT_INCLUDED.txt``, which names DOC (the
page that prints the row's re-training command); ``metamem eval`` quotes it::

    python scripts/half_weights.py results/omniglot_paper/lstm_spread --drop docs/results/omniglot_paper.md
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from metamem.evaluation.trained_run import load_run
from metamem.files import write_text
from metamem.runs import WEIGHTS_NOT_INCLUDED, half_precision, load_checkpoint, recorded_evaluations, save_checkpoint


def settings_of(r: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of :meth:`Run.evaluate` that repeat result ``r``'s protocol."""
    p = r["protocol"]
    scorings = set(r["scores"])
    return {
        "split": p["split"], "n_way": p["n_way"], "k_shot": p["k_shot"], "n_query": p["n_query"],
        "episodes": p["episodes"], "seed": p["seed"], "within_group": p["within_group"],
        "data_options": r.get("data_options") or {},
        "protocol": "both" if scorings == {"set", "sequence"} else scorings.pop(),
    }


def figures(scores: dict[str, Any]) -> dict[str, float]:
    """The figures a table quotes: each scoring's mean and per-presentation accuracies."""
    out = {}
    for name, s in scores.items():
        mean, pres = (s["mean"], s.get("per_presentation")) if isinstance(s, dict) else (s.mean, s.per_presentation)
        out[f"{name}.mean"] = float(mean)
        for i, v in enumerate(pres or []):
            out[f"{name}.p{i + 1}"] = float(v)
    return out


def check(run: Path, tolerance: float) -> tuple[bool, dict[str, Any]]:
    ckpt = load_checkpoint(run, "last")
    half = {k: v for k, v in ckpt.items() if k != "path"}
    half["model"] = half_precision(ckpt["model"])
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "last.pt"
        save_checkpoint(file, {k: v for k, v in half.items() if k not in ("format", "version")})
        model = load_run(file, device="cpu")
        for f, r in recorded_evaluations(run):
            t0 = time.process_time()
            res = model.evaluate(**settings_of(r))
            if res.fingerprint != r["fingerprint"]:
                print(f"{f}: other episodes (fingerprint {res.fingerprint[:12]} vs {r['fingerprint'][:12]})")
                ok = False
                continue
            old, new = figures(r["scores"]), figures(res.scores)
            worst = max(abs(new[k] - old[k]) for k in old) * 100
            ok &= worst <= tolerance
            p = r["protocol"]
            means = ", ".join(f"{k} {100 * old[k]:.2f} -> {100 * new[k]:.2f}" for k in old if k.endswith(".mean"))
            print(f"{f.relative_to(run.parent)} {p['n_way']}w{p['k_shot']}s seed {p['seed']}: {means}; "
                  f"largest difference {worst:.3f} points ({time.process_time() - t0:.0f} CPU-s)", flush=True)
    return ok, half


def drop(run: Path, doc: str) -> None:
    """Replace ``run``'s weights by a note naming ``doc``, where its re-training command is."""
    file = run / "checkpoints" / "last.pt"
    step = load_checkpoint(run, "last")["step"]
    write_text(run / "checkpoints" / WEIGHTS_NOT_INCLUDED,
               f"The final weights of this run (step {step}, {file.stat().st_size / 2**20:.1f} MiB) are "
               "not in the repository, to keep it small: only the best row of each learner and "
               f"dataset keeps its weights. {doc} prints the command that re-trains this row (same "
               "config and seed); its config, metrics and scores are all here. Weights you host "
               "yourself load with `metamem eval RUN --weights PATH_OR_URL --sha256 HEX`.\n")
    file.unlink()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    ap.add_argument("--tolerance", type=float, default=0.05, help="points (default 0.05)")
    ap.add_argument("--write", action="store_true", help="replace last.pt by the float16 copy when within tolerance")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--drop", metavar="DOC", default=None,
                    help="leave the weights out instead, with a note naming DOC (the page with the re-training command)")
    args = ap.parse_args(argv)
    if args.drop:
        for run in args.runs:
            drop(run, args.drop)
            print(f"{run}: weights left out ({WEIGHTS_NOT_INCLUDED} names {args.drop})")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    status = 0
    for run in args.runs:
        ok, half = check(run, args.tolerance)
        verdict = "within" if ok else "OUTSIDE"
        print(f"{run}: float16 weights {verdict} {args.tolerance} points of every committed figure", flush=True)
        if ok and args.write:
            save_checkpoint(run / "checkpoints" / "last.pt",
                            {k: v for k, v in half.items() if k not in ("format", "version")})
            print(f"{run}: wrote float16 checkpoints/last.pt", flush=True)
        status |= not ok
    return status


if __name__ == "__main__":
    sys.exit(main())
