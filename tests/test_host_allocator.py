"""The host allocator setting of the commands (metamem.device.keep_freed_memory): after it, a
large tensor allocated and freed again and again is served from memory the process already
has, not from fresh zero-filled pages; ``METAMEM_MALLOC=system`` keeps glibc's defaults."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="mallopt(3) tuning applies to Linux with glibc only",
)

# 40 MB, above glibc's largest dynamic mmap threshold (32 MiB): mmap'd and unmapped each time
# under the defaults. Faults are counted over 20 rounds after 15 of warm-up (the tuned heap settles within ~10).
_PROBE = """
import json, resource, sys, torch
from metamem.cli._threads import apply_threads
apply_threads(1)
def rounds(n):
    for _ in range(n):
        x = torch.empty(10_000_000)
        x.fill_(1.0)
        del x
rounds(15)
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
rounds(20)
print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0))
"""


def _faults(**env: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True,
        env={**os.environ, **env},
    )
    return int(json.loads(out.stdout.strip().splitlines()[-1]))


def test_the_commands_reuse_freed_large_blocks_and_system_keeps_the_defaults() -> None:
    pages = 40_000_000 // 4096  # one 40 MB tensor, in 4 KiB pages
    tuned = _faults(METAMEM_MALLOC="")
    system = _faults(METAMEM_MALLOC="system")
    assert system >= 10 * pages, f"glibc's defaults should fault each round afresh: {system} faults"
    assert tuned < pages, f"freed blocks were not reused: {tuned} faults over 20 rounds"


def test_keep_freed_memory_reports_whether_it_applied(monkeypatch: pytest.MonkeyPatch) -> None:
    from metamem.device import keep_freed_memory

    monkeypatch.setenv("METAMEM_MALLOC", "system")
    assert keep_freed_memory() is False


def test_the_benchmark_script_runs_each_variant_in_its_own_process() -> None:
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "bench_host_allocator.py"
    out = subprocess.run(
        [sys.executable, str(script), "--episodes", "2", "--batch", "2", "--n-way", "3", "--k-shot", "1",
         "--n-query", "1"], capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(script.parents[1])},
    ).stdout.splitlines()
    names = ["system, one vmap", "kept, one vmap", "kept, chunks"]
    assert len(out) == 4 and all(line.startswith(n) and "CPU-s/episode" in line for line, n in zip(out[1:], names, strict=True))
    assert out[1].endswith("1.00x")
