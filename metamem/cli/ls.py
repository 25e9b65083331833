"""``metamem ls {datasets,learners,backbones,write-policies,cores,optimizers,schedulers}``.

Lists what is registered, from the cached registry manifest (:mod:`metamem.manifest`), so
it answers without importing torch.
"""

from __future__ import annotations

import argparse

from metamem.manifest import REGISTRIES


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ls", help="list registered datasets, learners, backbones, write policies, "
                       "memory cores, optimizers, schedulers")
    p.add_argument("what", choices=list(REGISTRIES), help="which registry to list")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from metamem.manifest import registry

    rows = registry(args.what).describe()
    width = max((len(n) for n, _ in rows), default=0)
    for name, doc in rows:
        print(f"{name:<{width}}  {doc}".rstrip())
    return 0
