"""``metamem ls {datasets,learners,backbones,write-policies,cores}``: list registered components."""

from __future__ import annotations

import argparse
import importlib

#: what can be listed -> (module that fills the registry, registry attribute)
LISTABLE: dict[str, tuple[str, str]] = {
    "datasets": ("metamem.data", "DATASETS"),
    "learners": ("metamem.learners", "LEARNERS"),
    "backbones": ("metamem.learners", "BACKBONES"),
    "write-policies": ("metamem.memory", "WRITE_POLICIES"),
    "cores": ("metamem.memory", "MEMORY_CORES"),
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ls", help="list registered datasets, learners, backbones, write policies, memory cores")
    p.add_argument("what", choices=sorted(LISTABLE), help="which registry to list")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    module, attr = LISTABLE[args.what]
    registry = getattr(importlib.import_module(module), attr)
    rows = registry.describe()
    width = max((len(n) for n, _ in rows), default=0)
    for name, doc in rows:
        print(f"{name:<{width}}  {doc}".rstrip())
    return 0
