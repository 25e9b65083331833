"""Record ``query_groups: one_per_class`` in a MAML run trained with one query per class.

    python scripts/maml_query_groups.py RUN_DIR [--dry-run]

MAML's ``query_groups`` option (:class:`metamem.learners.maml.MAML`) decides which queries
pass through the adapted network together, so which statistics its batch-statistics
BatchNorm uses. With one query per class in training (``episodes.n_query: 1``, the paper's
Omniglot recipe) the two settings are the same computation, so a run trained before the
option existed was trained exactly as with ``one_per_class``. This script writes the option
into such a run's ``config.yaml`` and every checkpoint under ``checkpoints/`` (weights
untouched, each file replaced atomically, the run directory locked), so that ``metamem
eval`` scores it with the query batches of its training. A run trained with more than one
query per class, or one that already names the option, is refused with the reason.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
import yaml

from metamem.files import lock_directory
from metamem.runs import save_checkpoint, save_config

OPTION, VALUE = "query_groups", "one_per_class"


def amended(config: dict[str, Any], where: str) -> dict[str, Any]:
    """``config`` with ``learner.query_groups: one_per_class``.

    Raises:
        ValueError: not a MAML config, trained with ``n_query != 1``, or the option already set.
    """
    learner = config.get("learner") or {}
    if learner.get("name") != "maml":
        raise ValueError(f"{where}: learner.name is {learner.get('name')!r}, not maml")
    n_query = (config.get("episodes") or {}).get("n_query")
    if n_query != 1:
        raise ValueError(f"{where}: trained with episodes.n_query={n_query}; query_groups changes such "
                         "a training, so it cannot be added afterwards (train a new run with it)")
    if OPTION in learner:
        raise ValueError(f"{where}: learner.{OPTION} is already {learner[OPTION]!r}")
    return {**config, "learner": {**learner, OPTION: VALUE}}


def amend_run(run: Path, *, dry_run: bool = False) -> list[Path]:
    """Amend ``run``'s config.yaml and checkpoints; returns the files (to be) rewritten."""
    config_file = run / "config.yaml"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file}: no such file (give a run directory)")
    checkpoints = sorted((run / "checkpoints").glob("*.pt"))
    with lock_directory(run):
        new_config = amended(yaml.safe_load(config_file.read_text()), str(config_file))
        payloads = []
        for ckpt in checkpoints:  # check every file before writing any
            payload = torch.load(ckpt, map_location="cpu", weights_only=True)
            payloads.append({**payload, "config": amended(payload["config"], str(ckpt))})
        if not dry_run:
            for ckpt, payload in zip(checkpoints, payloads, strict=True):
                save_checkpoint(ckpt, payload)  # its own format and version keys are kept
            save_config(config_file, new_config)
    return [config_file, *checkpoints]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a MAML run directory trained with episodes.n_query: 1")
    parser.add_argument("--dry-run", action="store_true", help="check every file, write nothing")
    args = parser.parse_args(argv)
    try:
        files = amend_run(args.run, dry_run=args.dry_run)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{'would amend' if args.dry_run else 'amended'} {len(files)} files of {args.run}: "
          f"learner.{OPTION}={VALUE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
