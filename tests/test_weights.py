"""Shared weights: half-precision checkpoints load into float32 learners and score as the
rounded weights do; weights kept elsewhere (a folder, a file, an http(s) URL with a sha256)
load through ``checkpoints/weights.yaml`` or ``metamem eval --weights``, downloaded
atomically and checked (a local http.server stands in for the host)."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

import metamem
from metamem.data.download import DownloadError
from metamem.learners import build_learner
from metamem.runs import CheckpointError, fetch_weights, half_precision, save_checkpoint

DATA = {"name": "synthetic", "train_split": "train", "val_split": "val", "test_split": "test",
        "options": {"num_classes": 9, "per_class": 5, "image_size": 16}}
EVAL = {"split": "test", "n_way": 3, "k_shot": 1, "n_query": 2, "episodes": 12, "seed": 5}


def make_run(root: Path, *, half: bool, name: str = "run", learner: str = "mann") -> tuple[Path, torch.nn.Module]:
    """A run directory holding a small trained-shape learner (random weights, seeded)."""
    torch.manual_seed(0)
    kw: dict[str, Any] = dict(controller_size=6, read_heads=1, slots=5, width=4) if learner == "mann" else {}
    model = build_learner(learner, n_way=3, image_shape=(1, 16, 16), **kw)
    config = {"learner": {"name": learner, **kw}, "seed": 0, "data": DATA,
              "episodes": {"n_way": 3, "k_shot": 1, "n_query": 1}, "eval": EVAL}
    run = root / name
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    state = half_precision(model.state_dict()) if half else model.state_dict()
    save_checkpoint(run / "checkpoints" / "last.pt",
                    {"config": config, "learner": learner, "image_shape": [1, 16, 16], "step": 1, "model": state})
    return run, model


def test_half_precision_rounds_floats_and_keeps_integer_buffers() -> None:
    state = {"w": torch.tensor([1.0, 1 / 3], dtype=torch.float64), "b": torch.ones(2),
             "n": torch.tensor([7], dtype=torch.long), "flag": torch.tensor([True])}
    half = half_precision(state)
    assert half["w"].dtype == half["b"].dtype == torch.float16
    assert half["n"].dtype == torch.long and half["flag"].dtype == torch.bool and half["n"].item() == 7
    assert half["w"][1].item() == pytest.approx(1 / 3, abs=2e-4) and half["w"][1].item() != 1 / 3


@pytest.mark.parametrize("learner", ["mann", "protonet"])
def test_float16_weights_load_into_a_float32_learner_as_the_rounded_weights(tmp_path: Path, learner: str) -> None:
    run, model = make_run(tmp_path, half=True, learner=learner)
    assert all(v.dtype == torch.float16 for v in torch.load(run / "checkpoints" / "last.pt",
               weights_only=True)["model"].values() if v.is_floating_point())
    loaded = metamem.load_run(run, device="cpu").learner
    for (k, got), want in zip(loaded.state_dict().items(), model.state_dict().values(), strict=True):
        assert got.dtype == want.dtype, k  # float32 learner, integer buffers as they were
        if want.is_floating_point():
            assert torch.equal(got, want.half().to(want.dtype)), k
    # it computes in float32 and scores exactly what the rounded float32 weights score
    rounded = build_learner(learner, n_way=3, image_shape=(1, 16, 16), **{k: v for k, v in
                            yaml.safe_load((run / "config.yaml").read_text())["learner"].items() if k != "name"})
    rounded.load_state_dict({k: v.half().float() if v.is_floating_point() else v for k, v in model.state_dict().items()})
    test = metamem.load_dataset("synthetic", split="test", **DATA["options"])
    kw = {k: v for k, v in EVAL.items() if k != "split"}
    a = metamem.evaluate(loaded.eval(), test, **kw)
    b = metamem.evaluate(rounded.eval(), test, **kw)
    assert a.fingerprint == b.fingerprint
    for s in a.scores:
        assert torch.equal(a.scores[s].per_episode, b.scores[s].per_episode)
    assert next(loaded.parameters()).dtype == torch.float32


def test_public_loader_and_metamem_eval_read_a_float16_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from metamem.cli.main import main

    run, _ = make_run(tmp_path, half=True)
    loaded = metamem.load_run(run, device="cpu")
    assert all(p.dtype == torch.float32 for p in loaded.learner.parameters())
    assert main(["eval", str(run), "--no-progress", "--no-plots", "--out", str(tmp_path / "ev")]) == 0
    assert (tmp_path / "ev" / "results.json").is_file(), capsys.readouterr().err


# --- weights kept elsewhere: a folder, a file, or an http(s) URL with a sha256 --------------


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    hits: dict[str, int] = {}

    def do_GET(self) -> None:  # noqa: N802 - the http.server hook
        self.hits[self.path] = self.hits.get(self.path, 0) + 1
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        html = self.path.endswith(".html")
        self.send_response(200)
        self.send_header("Content-Type", "text/html" if html else "application/octet-stream")
        # /cut/...: the server promises the whole file and sends half of it
        self.send_header("Content-Length", str(2 * len(body) if self.path.startswith("/cut/") else len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    _Handler.files, _Handler.hits = {}, {}
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def hosted(tmp_path: Path) -> tuple[Path, bytes, str]:
    """A run directory without its weights (as committed) and the weights file it lost."""
    run, _ = make_run(tmp_path, half=True)
    blob = (run / "checkpoints" / "last.pt").read_bytes()
    (run / "checkpoints" / "last.pt").unlink()
    (run / "checkpoints" / "WEIGHTS_NOT_INCLUDED.txt").write_text("see docs/results/x.md\n")
    return run, blob, hashlib.sha256(blob).hexdigest()


def test_weights_yaml_url_downloads_once_checks_and_scores(tmp_path, server, monkeypatch, capsys) -> None:
    from metamem.cli.main import main

    monkeypatch.setenv("METAMEM_CACHE", str(tmp_path / "cache"))
    run, blob, sha = hosted(tmp_path)
    with pytest.raises(FileNotFoundError, match="shared without its weights: see docs/results/x.md"):
        metamem.load_run(run, device="cpu")
    _Handler.files["/w/last.pt"] = blob
    (run / "checkpoints" / "weights.yaml").write_text(f"url: {server}/w/last.pt\nsha256: {sha}\n")
    a = metamem.load_run(run, device="cpu")
    cached = tmp_path / "cache" / "weights" / sha / "last.pt"
    assert cached.read_bytes() == blob and _Handler.hits["/w/last.pt"] == 1
    b = metamem.load_run(run, device="cpu")  # the cached copy, checked again, no second download
    assert _Handler.hits["/w/last.pt"] == 1
    assert all(torch.equal(x, y) for x, y in zip(a.learner.state_dict().values(), b.learner.state_dict().values(), strict=True))
    assert main(["eval", str(run), "--no-progress", "--no-plots", "--out", str(tmp_path / "ev")]) == 0
    assert json_results(tmp_path / "ev")[0]["source"] == str(run)
    # a cached file changed on disk is refused and fetched again
    cached.write_bytes(blob[:-3] + b"xyz")
    metamem.load_run(run, device="cpu")
    assert _Handler.hits["/w/last.pt"] == 2 and cached.read_bytes() == blob


def json_results(out: Path) -> list[dict[str, Any]]:
    import json

    return json.loads((out / "results.json").read_text())["results"]


def test_cli_weights_option_takes_a_url_a_file_or_a_folder(tmp_path, server, monkeypatch, capsys) -> None:
    from metamem.cli.main import main

    monkeypatch.setenv("METAMEM_CACHE", str(tmp_path / "cache"))
    run, blob, sha = hosted(tmp_path)
    _Handler.files["/w/last.pt"] = blob
    store = tmp_path / "my_weights"
    store.mkdir()
    (store / "last.pt").write_bytes(blob)
    scores = []
    for i, extra in enumerate(([f"{server}/w/last.pt", "--sha256", sha], [str(store / "last.pt")],
                               [str(store), "--sha256", sha.upper()])):
        out = tmp_path / f"ev{i}"
        rc = main(["eval", str(run), "--no-progress", "--no-plots", "--out", str(out), "--weights", *extra,
                   *(["--inspect"] if i == 0 else [])])
        assert rc == 0, capsys.readouterr().err
        scores.append(json_results(out)[0]["scores"])
    assert (tmp_path / "ev0" / "inspect" / "memory_trace.png").is_file()  # --inspect reads them too
    assert scores[0] == scores[1] == scores[2]
    capsys.readouterr()
    # one clear line for each mistake
    for extra, msg in (([f"{server}/w/last.pt"], "needs its sha256"),
                       ([str(store), "--sha256", "abc"], "is not 64 hex digits"),
                       ([str(store), "--sha256", "0" * 64], "sha256 mismatch for weights"),
                       ([str(tmp_path / "nothing")], "not found")):
        assert main(["eval", str(run), "--no-progress", "--weights", *extra]) == 1
        err = capsys.readouterr().err.strip()
        assert msg in err and "\n" not in err, err
    other, _ = make_run(tmp_path, half=False, name="protonet_run", learner="protonet")
    assert main(["eval", str(run), "--no-progress", "--weights", str(other)]) == 1
    assert "written for another learner" in capsys.readouterr().err


@pytest.mark.parametrize("path, body, msg", [
    ("/w/page.html", b"<!doctype html><html>login</html>", "returned an HTML page"),
    ("/cut/last.pt", None, "truncated download"),
    ("/w/missing.pt", None, "HTTP 404"),
    ("/w/other.pt", b"PK\x03\x04 not the file", "sha256 mismatch"),
])
def test_bad_downloads_fail_in_one_line_and_leave_nothing(tmp_path, server, monkeypatch, path, body, msg) -> None:
    monkeypatch.setenv("METAMEM_CACHE", str(tmp_path / "cache"))
    _, blob, sha = hosted(tmp_path)
    if path != "/w/missing.pt":
        _Handler.files[path] = blob if body is None else body
    with pytest.raises(DownloadError) as e:
        fetch_weights(server + path, sha)
    assert msg in str(e.value) and "\n" not in str(e.value)
    left = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] if (tmp_path / "cache").exists() else []
    assert left == []


def test_weights_yaml_mistakes_name_the_file(tmp_path: Path) -> None:
    run, _, sha = hosted(tmp_path)
    entry = run / "checkpoints" / "weights.yaml"
    entry.write_text("url: [unclosed\n")
    with pytest.raises(CheckpointError, match=r"weights.yaml: not valid YAML"):
        metamem.load_run(run, device="cpu")
    entry.write_text(f"sha256: {sha}\n")
    with pytest.raises(CheckpointError, match=r"weights.yaml: expected a mapping with url:"):
        metamem.load_run(run, device="cpu")
    (tmp_path / "store").mkdir()
    entry.write_text(f"url: ../store\nsha256: {sha}\n")  # relative to the run directory
    with pytest.raises(CheckpointError, match=r"store holds no last.pt"):
        metamem.load_run(run, device="cpu")


# --- scripts/half_weights.py: store half precision only where the figures hold -------------

def test_half_weights_script_measures_then_stores_or_refuses(tmp_path, load_script, capsys) -> None:
    import json

    from metamem.cli.main import main

    script = load_script("half_weights")
    run, _ = make_run(tmp_path, half=False, learner="protonet")
    assert main(["eval", str(run), "eval.episodes=20", "--no-progress", "--no-plots", "--out", str(run / "eval")]) == 0
    capsys.readouterr()
    from metamem.evaluation.metrics import mean_ci95

    figures = run / "eval" / "results.json"
    committed = figures.read_text()
    doc = json.loads(committed)
    score = doc["results"][0]["scores"]["set"]
    i = min(range(len(score["per_episode"])), key=lambda e: score["per_episode"][e])
    score["per_episode"][i] += 0.02  # one episode moved: a committed mean 0.1 points away (of 20)
    score["mean"], score["ci95"] = mean_ci95(torch.tensor(score["per_episode"], dtype=torch.float64))
    figures.write_text(json.dumps(doc))
    before = (run / "checkpoints" / "last.pt").read_bytes()
    assert script.main([str(run), "--write"]) == 1
    assert "OUTSIDE 0.05 points" in capsys.readouterr().out
    assert (run / "checkpoints" / "last.pt").read_bytes() == before  # nothing written
    figures.write_text(committed)
    assert script.main([str(run), "--write"]) == 0
    out = capsys.readouterr().out
    assert "within 0.05 points of every committed figure" in out and "wrote float16 checkpoints/last.pt" in out
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert {v.dtype for v in ckpt["model"].values() if v.is_floating_point()} == {torch.float16}
    # --drop: the weights go, a note names the page with the re-training command
    assert script.main([str(run), "--drop", "docs/results/x.md"]) == 0
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["WEIGHTS_NOT_INCLUDED.txt"]
    with pytest.raises(FileNotFoundError, match=r"shared without its weights: .*docs/results/x.md prints the command"):
        metamem.load_run(run, device="cpu")
