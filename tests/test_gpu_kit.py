"""scripts/gpu_kit.py: data in hashed parts, the plan of a GPU window, runs packed back, end to end on CPU."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def kit(load_script):
    return load_script("gpu_kit")


def _fake_mini(root: Path, classes: int = 5, per_class: int = 20, seed: int = 0) -> Path:
    """``root/{train,test}.zip`` of small JPEGs (``images/<file>``) and matching split CSVs."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, first in (("train", 1), ("test", 50)):
        rows = []
        with zipfile.ZipFile(root / f"{split}.zip", "w") as z:
            for c in range(classes):
                wnid = f"n{first + c:08d}"
                base = rng.integers(0, 256, 3)
                for i in range(per_class):
                    img = np.clip(base + rng.integers(-40, 40, (16, 16, 3)), 0, 255).astype(np.uint8)
                    buf = io.BytesIO()
                    Image.fromarray(img).save(buf, format="JPEG", quality=90)
                    name = f"{wnid}{i:08d}.jpg"
                    z.writestr(f"images/{name}", buf.getvalue())
                    rows.append(f"{name},{wnid}\n")
        (root / f"{split}.csv").write_text("filename,label\n" + "".join(rows))
    return root


def test_parts_rebuild_the_zips_and_a_damaged_or_foreign_part_is_named(kit, tmp_path: Path) -> None:
    src = _fake_mini(tmp_path / "src", classes=3, per_class=4)
    total = sum((src / f"{s}.zip").stat().st_size for s in ("train", "test"))
    kit_dir = tmp_path / "kit"
    with pytest.raises(kit.KitError, match="below 1 MiB"):
        kit.pack(src, kit_dir, 1000)
    kit.MIB = 1 << 10  # small parts for small test files (the module is fresh per test)
    man = kit.pack(src, kit_dir, total // 3 + 1)
    assert len(man["parts"]) == 3 and sum(p["bytes"] for p in man["parts"]) == total
    # a device call carries one part folder at a time: pretend only p01 has arrived so far
    arrived = tmp_path / "device"
    (arrived / "p01").mkdir(parents=True)
    for f in ("part.bin", "manifest.json"):
        (arrived / "p01" / f).write_bytes((kit_dir / "p01" / f).read_bytes())
    data = tmp_path / "data"
    assert kit.receive(arrived, data) == (["p01"], ["p02", "p03"])
    assert not data.exists()
    for name in ("p02", "p03"):
        (arrived / name).mkdir()
        for f in ("part.bin", "manifest.json"):
            (arrived / name / f).write_bytes((kit_dir / name / f).read_bytes())
    assert kit.receive(arrived, data) == (["p01", "p02", "p03"], [])
    for s in ("train", "test"):  # byte for byte, the second part spans both files
        assert (data / f"{s}.zip").read_bytes() == (src / f"{s}.zip").read_bytes()
    # a damaged part is named
    blob = bytearray((arrived / "p02" / "part.bin").read_bytes())
    blob[7] ^= 1
    (arrived / "p02" / "part.bin").write_bytes(bytes(blob))
    with pytest.raises(kit.KitError, match=r"p02/part.bin: size or sha256 differs .* carry .*p02 again"):
        kit.receive(arrived, data)
    # a part of another pack is refused
    other = json.loads((arrived / "p03" / "manifest.json").read_text())
    other["parts"][0]["sha256"] = "0" * 64
    (arrived / "p03" / "manifest.json").write_text(json.dumps(other))
    with pytest.raises(kit.KitError, match="parts of two different packs"):
        kit.receive(arrived, data)


def test_the_dry_run_fits_the_window_and_follows_measured_step_times(kit, tmp_path: Path, capsys) -> None:
    plan = kit.make_plan(timing=None, data_calls=5)
    assert plan.fits and plan.total_s + plan.margin_s <= 15 * 60
    assert [p.row.name for p in plan.rows] == list(kit.ROW_NAMES) and all(p.steps >= 100 for p in plan.rows)
    assert not any(p.measured for p in plan.rows)
    for c in range(1, plan.calls + 1):  # every run call stays under the per-call limit
        assert sum(p.total_s for p in plan.rows if p.call == c) <= 9 * 60
    # the training time is shared out by the rows' shares
    train = [p.train_s for p in plan.rows]
    share = [p.row.share for p in plan.rows]
    assert np.allclose(np.array(train) / sum(train), np.array(share) / sum(share), atol=0.01)
    # a measured step twice as slow as assumed halves that row's steps, the others keep theirs
    slow = plan.rows[0]
    timing = {"device": "test", "rows": {slow.row.name: 2 * slow.step_s}}
    again = kit.make_plan(timing=timing, data_calls=5)
    assert again.rows[0].measured and abs(again.rows[0].steps - slow.steps / 2) <= 1
    assert [p.steps for p in again.rows[1:]] == [p.steps for p in plan.rows[1:]]
    # the CLI prints the table, labels assumed figures and exits 1 when the window is too short
    (tmp_path / "timing.json").write_text(json.dumps(timing))
    assert kit.main(["--kit", str(tmp_path), "plan", "--tracked-mib", "25"]) == 0
    out = capsys.readouterr().out
    assert "FITS" in out and "(assumed)" in out and "measured on test" in out
    assert kit.main(["--kit", str(tmp_path), "plan", "--tracked-mib", "25", "--steps", "20000"]) == 1
    assert "DOES NOT FIT" in capsys.readouterr().out
    # on the device, with the data there: the minutes left go to the rows (no start, no data calls)
    left = kit.make_plan(timing=None, data_calls=5, window_min=10.0, left=True)
    assert left.fits and not left.fixed and left.rows[0].steps > plan.rows[0].steps
    assert left.total_s + left.margin_s <= 10 * 60 + 1e-6
    # rows that pass a call's limit go to a second run call, whose overhead is counted
    split = kit.make_plan(timing=None, data_calls=5, call_limit_min=4.0)
    assert split.calls == 2 and all(sum(p.total_s for p in split.rows if p.call == c) <= 240 for c in (1, 2))
    assert kit.main(["--kit", str(tmp_path), "plan", "--tracked-mib", "25", "--window-min", "5"]) == 2
    assert "no training time is left" in capsys.readouterr().err
    assert kit.main(["--kit", str(tmp_path), "plan", "--tracked-mib", "62"]) == 2  # no room for data
    assert "leave no room for data" in capsys.readouterr().err


def test_runs_come_back_in_verified_parts_and_unpack_safely(kit, tmp_path: Path) -> None:
    export = tmp_path / "export"
    for row in ("a", "b"):
        (export / row / "checkpoints").mkdir(parents=True)
        (export / row / "checkpoints" / "last.pt").write_bytes(os.urandom(5000))
        (export / row / "config.yaml").write_text(f"row: {row}\n")
    kit.BACK_FILE_BYTES = 4000  # several parts
    out = tmp_path / "out"
    files = kit.pack_back(export, out, "runs-call1", [])
    parts = sorted(out.glob("runs-call1.tar.gz.*"))
    assert len(parts) >= 3 and all(p.stat().st_size <= 4000 for p in parts)
    assert len(files) == len(parts) + 1
    dest = tmp_path / "dest"
    runs = kit.unpack(out, dest)
    assert [r.name for r in runs] == ["a", "b"]
    for row in ("a", "b"):
        for f in ("checkpoints/last.pt", "config.yaml"):
            assert (dest / row / f).read_bytes() == (export / row / f).read_bytes()
    # a damaged part is named; a member outside the destination is refused
    data = bytearray(parts[1].read_bytes())
    data[0] ^= 1
    parts[1].write_bytes(bytes(data))
    with pytest.raises(kit.KitError, match=r"runs-call1.tar.gz.01: sha256 differs"):
        kit.unpack(out, dest)
    evil = tmp_path / "evil"
    evil.mkdir()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("../outside.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    blob = buf.getvalue()
    (evil / "runs-call1.tar.gz.00").write_bytes(blob)
    sha = hashlib.sha256(blob).hexdigest()
    (evil / "runs-call1.json").write_text(json.dumps({"format": kit.FORMAT, "archive_sha256": sha, "parts": [
        {"name": "runs-call1.tar.gz.00", "bytes": len(blob), "sha256": sha}]}))
    with pytest.raises(kit.KitError, match=r"'../outside.txt' is not a plain file inside"):
        kit.unpack(evil, tmp_path / "dest2")
    assert not (tmp_path / "outside.txt").exists()


def _end_to_end(kit, tmp_path: Path, monkeypatch, rows: str, measure: bool) -> None:
    """pack -> receive -> [measure] -> plan -> run on CPU -> unpack -> CPU re-score."""
    monkeypatch.chdir(REPO)  # where the device runs the kit (the split CSVs' path is relative to it)
    src = _fake_mini(tmp_path / "src")
    kit_dir = tmp_path / ".gpukit"
    kit.MIB = 1 << 10
    man = kit.pack(src, kit_dir, 40_000)
    assert len(man["parts"]) >= 2
    split_dir = os.path.relpath(src, REPO)  # relative: an exported config holds no absolute path
    assert kit.main(["--kit", str(kit_dir), "receive", "--image-size", "16", "--split-dir", str(src)]) == 0
    tiny = ["--set", "data.options.image_size=16", "--set", f"data.options.split_dir={split_dir}",
            "--set", "episodes.n_way=5", "--set", "episodes.k_shot=1", "--set", "episodes.n_query=2",
            "--set", "episodes.batch_size=1", "--set", "eval.episodes=4", "--set", "episodes.fused=false"]
    if measure:
        assert kit.main(["--kit", str(kit_dir), "measure", "--rows", rows, "--steps", "4", "--device", "cpu",
                         *tiny[:2], *tiny[4:12]]) == 0
        timing = json.loads((kit_dir / "timing.json").read_text())
        assert set(timing["rows"]) == set(rows.split(",")) and all(v > 0 for v in timing["rows"].values())
    out = tmp_path / "out"
    rc = kit.main(["--kit", str(kit_dir), "run", "--rows", rows, "--steps", "3", "--device", "cpu",
                   "--out", str(out), *tiny])
    status = json.loads((out / "runs-call1-status.json").read_text())
    assert rc == 0, (status, (out / "runs-call1.log").read_text()[-3000:])
    assert [s["row"] for s in status] == rows.split(",") and all(s["status"] == "done" for s in status)
    runs = kit.unpack(out, tmp_path / "back")
    assert [r.name for r in runs] == sorted(rows.split(","))
    monkeypatch.setenv("METAMEM_CACHE", str(tmp_path / "cpu-cache"))  # decoded afresh
    from metamem.cli.main import main as cli
    for run in runs:
        ck = __import__("torch").load(run / "checkpoints" / "last.pt", weights_only=True)
        assert ck["exported"]["weights_dtype"] == "float16"
        got = json.loads((run / "eval" / "results.json").read_text())["results"]
        assert sorted(r["protocol"]["k_shot"] for r in got) == [1, 5]
        # a CPU re-scores the run brought back to the same figures, on the same fixed episodes
        again = tmp_path / f"rescore_{run.name}"
        assert cli(["eval", str(run), "device=cpu", "--out", str(again), "--no-plots", "--no-progress"]) == 0
        redo = json.loads((again / "results.json").read_text())["results"]
        assert [(r["fingerprint"], r["scores"]["set"]["mean"]) for r in redo] == \
            [(r["fingerprint"], r["scores"]["set"]["mean"]) for r in got]


def test_one_row_end_to_end_on_cpu(kit, tmp_path: Path, monkeypatch) -> None:
    _end_to_end(kit, tmp_path, monkeypatch, "protonet_conv4_1shot", measure=False)


@pytest.mark.slow
def test_every_row_end_to_end_on_cpu(kit, tmp_path: Path, monkeypatch) -> None:
    _end_to_end(kit, tmp_path, monkeypatch, ",".join(kit.ROW_NAMES), measure=True)


def test_a_failing_or_late_row_does_not_stop_the_others(kit, tmp_path: Path, monkeypatch) -> None:
    def fake_metamem(args, log, exact=False):  # the first row's training fails, the rest train
        return 1 if "protonet" in " ".join(args) else 0

    def too_big(run, dest):
        raise kit.KitError("above the size limit")

    monkeypatch.setattr(kit, "_metamem", fake_metamem)
    monkeypatch.setattr(kit, "export_half", too_big)
    plan = kit.make_plan(timing=None, data_calls=4, rows=kit._rows("protonet_conv4_1shot,matching_conv4"), steps=2)
    out = tmp_path / "out"
    done = kit.run_rows(tmp_path / "kit", out, plan, 1, [], "cpu", deadline_s=600)
    assert [d["status"] for d in done] == ["training failed (rc 1; see runs-call1.log)",
                                           "export failed (KitError: above the size limit)"]
    assert json.loads((out / "runs-call1-status.json").read_text()) == done
    assert (out / "runs-call1.json").is_file()  # packed all the same (no run in it)
    # a row that would end past the deadline is not started
    late = kit.run_rows(tmp_path / "kit", out, plan, 1, [], "cpu", deadline_s=0.001)
    assert all(d["status"].startswith("skipped: planned") for d in late)
