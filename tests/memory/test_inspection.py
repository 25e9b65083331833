"""Sequential-Jacobian saliency against autograd's full Jacobian; inspection plots and `eval --inspect`."""

from __future__ import annotations

from pathlib import Path

import torch

from metamem.cli.main import main
from metamem.memory import MemoryCore, attach_programs
from metamem.memory.inspection import plot_program_weights, plot_saliency, sequential_jacobian, trace_core

T, C, N = 6, 3, 4


def _model() -> tuple[MemoryCore, torch.nn.Linear]:
    torch.manual_seed(0)
    core = MemoryCore(C, hidden_size=5, slots=7, width=3, read_heads=2).double()
    return core, torch.nn.Linear(core.out_features, N).double()


def test_sequential_jacobian_matches_full_jacobian_and_is_causal() -> None:
    core, head = _model()
    fn = lambda x: head(core(x).features)  # noqa: E731
    x = torch.randn(1, T, C, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = torch.tensor([0, 3, 1, 2, 2, 0])
    sal = sequential_jacobian(fn, x, y)
    logp = lambda inp: torch.log_softmax(fn(inp)[0], -1)  # noqa: E731
    full = torch.autograd.functional.jacobian(logp, x)  # [T, N, 1, T, C]
    for t in range(T):
        for tau in range(T):
            ref = full[t, int(y[t]), 0, tau].norm()
            torch.testing.assert_close(sal[t, tau], ref)
    assert (sal.triu(1) == 0).all() and (sal.diagonal() > 0).all()
    pred = sequential_jacobian(fn, x[0])  # default: the predicted class
    chosen = logp(x).argmax(-1)
    torch.testing.assert_close(pred, sequential_jacobian(fn, x, chosen))


def test_trace_core_records_programs_and_plots(tmp_path: Path) -> None:
    core, _ = _model()
    attach_programs(core.memory, 3)
    x = torch.randn(2, T, C, dtype=torch.float64)
    out, programs = trace_core(core, x)
    assert out.trace is not None and out.trace.read_weights.shape == (2, T, 2, 7)
    weights = programs["memory.interface"]
    assert weights.shape == (2, T, 2, 3)
    assert plot_program_weights(weights, tmp_path / "p.png", episode=1).stat().st_size > 1000
    sal = torch.rand(T, T).tril()
    assert plot_saliency(sal, tmp_path / "s.png").stat().st_size > 1000
    _, none = trace_core(_model()[0], x)
    assert none == {}


def test_eval_inspect_writes_plots(tmp_path: Path, repo_root: Path) -> None:
    cfg = str(repo_root / "experiments/smoke/synthetic_mann.yaml")
    run = tmp_path / "run"
    assert main(["train", cfg, "--out", str(run), "--no-progress", "--no-eval", "train.steps=2",
                 "train.val_every=2", "learner.programs=2"]) == 0
    out = tmp_path / "ev"
    assert main(["eval", str(run), "eval.episodes=4", "--inspect", "--no-progress", "--out", str(out)]) == 0
    for name in ("memory_trace.png", "program_weights.png", "saliency.png", "saliency.pt"):
        assert (out / "inspect" / name).stat().st_size > 0, name
    sal = torch.load(out / "inspect" / "saliency.pt", weights_only=True)
    assert sal.dim() == 2 and sal.shape[0] == sal.shape[1] and (sal.triu(1) == 0).all()
