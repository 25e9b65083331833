"""The mini-ImageNet table's rows in one GPU window: data in hashed parts, rows planned to fit.

A device machine takes at most 64 MiB a call (the tracked files included), gives back at most
8 files of 16 MiB from ``$OUT``, runs one command for at most 10 minutes and lends 15 minutes
in all. This kit fits the table's rows into that:

``pack`` (here)
    splits ``train.zip`` and ``test.zip`` (126 + 39 MB of JPEGs) into parts that fit beside
    the tracked files, each in its own git-ignored folder ``.gpukit/pNN/`` with the manifest
    (sha256 of every part and of each whole zip), and prints the device calls.
``receive`` (device, one call per part)
    verifies every part carried so far against the manifest (a bad part is named); once all
    are there it rebuilds the zips, checks their sha256 and decodes them into the uint8 cache.
    The parts stay on the warm machine between calls (ignored paths are kept there).
``measure`` (device)
    the seconds per training step of every row, on synthetic 84x84 images, into
    ``.gpukit/timing.json``.
``plan`` (anywhere: the dry run)
    the planned minutes of every row and of the whole window, from the measured step times
    or, where none are measured, from figures marked *assumed*; exits 1 if it does not fit.
``run`` (device)
    trains each row with the planned steps (AMP bf16, channels-last, the fused sampler),
    exports it with float16 weights, scores it on the table's 1,000 fixed test episodes per
    cell (float32, TF32 off, so that a CPU re-scores the same figures) and packs the run
    directories into ``$OUT`` (at most 15 MiB a file, sha256 manifest) after every row.
``unpack`` (here)
    verifies the parts that came back and unpacks the run directories; ``metamem eval`` on
    any of them re-scores its row on a CPU.

Usage (docs/results/mini_imagenet.md, "Rows awaiting a GPU")::

    python scripts/gpu_kit.py pack                  # here; prints the device calls
    python scripts/gpu_kit.py plan                  # the dry run (assumed step times, marked)
    # device, one call per part, carry [".gpukit/pNN"]; the first also measures, in the background:
    export PYTHONPATH=$PWD; python3 scripts/gpu_kit.py receive && \
        (setsid nohup python3 scripts/gpu_kit.py measure > .gpukit/measure.out 2>&1 &)
    # device, the last call: the rows, planned for the minutes left
    export PYTHONPATH=$PWD; python3 scripts/gpu_kit.py run --left-min MINUTES_LEFT
    python scripts/gpu_kit.py unpack FILES_AT --dest runs/mini_imagenet_gpu   # here
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MIB = 1 << 20
FORMAT = "metamem-gpukit"
UPLOAD_BYTES = 64 * MIB  # a device call's upload, tracked files included
BACK_FILE_BYTES = 15 * MIB  # one file back from $OUT (the limit is 16 MiB)
BACK_FILES = 8  # files back from $OUT
SPLITS = ("train", "test")
DATA_BYTES = 126_058_310 + 39_072_741  # train.zip + test.zip of ../shared/data/mini_imagenet

# Assumed figures (used only where nothing is measured; the plan marks them "assumed").
#: Conv-4-64 forward+backward per 84x84 image under bf16 AMP + channels-last on one H200:
#: measured there on 2026-12-04 (159 episodes/s of 20-way 1-shot 15-query = 320 images each,
#: docs/benchmarks.md "GPU check"); the other per-image costs are scaled from it.
ASSUMED_IMAGE_S = {"conv4": 1 / (159 * 320), "conv4_32_maml": 6 / (159 * 320), "resnet12": 8e-5}
ASSUMED = {
    "step_overhead_s": 0.005,  # optimizer, launches, sampler per step
    "start_min": 1.5,  # a fresh machine's start ("a minute or more")
    "call_s": 30.0,  # one call: upload of up to 64 MiB and the gap before the next call
    "decode_s": 35.0,  # rebuilding the zips and decoding 50,400 JPEGs into the cache (last data call;
                       # 23.6 + 9.7 s on the shared CPU, docs/benchmarks_data.md "mini-ImageNet decode")
    "row_start_s": 10.0,  # per row, in one process: data to the GPU, learner, sampler compile, export
}

@dataclass(frozen=True)
class Row:
    """One row of the table: its experiment, its episode shape and how its time is planned."""

    name: str
    title: str
    config: str  # experiments/mini_imagenet/<config>.yaml
    images_per_step: int
    image_cost: str  # key of ASSUMED_IMAGE_S
    share: float  # fraction of the training time of the window
    eval_s: float  # assumed scoring time of both cells on the GPU
    overrides: tuple[str, ...] = ()
    schedule: str = "step"  # how the learning-rate schedule follows the planned steps

    def train_overrides(self, steps: int) -> list[str]:
        """The row's overrides for a run of ``steps`` steps (the schedule scaled to them)."""
        out = list(self.overrides)
        if self.schedule == "step":  # halve four times over the run (the papers halve by episodes)
            out.append(f"train.scheduler={{name: step, step_size: {max(1, steps // 5)}, gamma: 0.5}}")
        elif self.schedule == "cosine":
            out.append(f"train.scheduler={{name: cosine, T_max: {steps}}}")
        return out


ROWS: tuple[Row, ...] = (
    Row("protonet_conv4_1shot", "ProtoNet Conv-4, trained 30-way 1-shot", "protonet", 30 * 16, "conv4",
        0.17, 3.0, ("episodes.n_way=30", "episodes.k_shot=1", "episodes.n_query=15", "episodes.batch_size=1")),
    Row("protonet_conv4_5shot", "ProtoNet Conv-4, trained 20-way 5-shot", "protonet", 20 * 20, "conv4",
        0.17, 3.0, ("episodes.n_way=20", "episodes.k_shot=5", "episodes.n_query=15", "episodes.batch_size=1")),
    Row("matching_conv4", "Matching Networks Conv-4, cosine x 10", "matching", 4 * 5 * 16, "conv4",
        0.07, 6.0, ("learner.scale=10", "episodes.n_way=5", "episodes.k_shot=1", "episodes.n_query=15",
                     "episodes.batch_size=4")),
    Row("memory_matching_conv4", "Memory Matching Networks Conv-4", "memory_matching", 4 * 5 * 16, "conv4",
        0.07, 8.0, ("episodes.n_way=5", "episodes.k_shot=1", "episodes.n_query=15", "episodes.batch_size=4")),
    Row("maml_conv4_32", "MAML Conv-4-32, second order", "maml", 4 * 5 * 16, "conv4_32_maml",
        0.12, 30.0, ("episodes.n_way=5", "episodes.k_shot=1", "episodes.n_query=15", "episodes.batch_size=4"),
        schedule="none"),
    Row("probe_resnet12", "ResNet-12 pretrain, then logistic-regression probe", "linear_probe", 64 * 4,
        "resnet12", 0.40, 20.0,
        ("learner.backbone=resnet12", "episodes.n_way=64", "episodes.k_shot=1", "episodes.n_query=3",
         "episodes.batch_size=1", "episodes.augment={crop_area: 0.5, flip: 0.5}",
         "train.optimizer={name: sgd, lr: 0.05, momentum: 0.9, weight_decay: 0.0005, nesterov: true}"),
        schedule="cosine"),
)
ROW_NAMES = tuple(r.name for r in ROWS)
#: what every row shares: the GPU speed-ups and the table's protocol (1,000 fixed episodes a cell)
COMMON = ("train.amp=true", "train.amp_dtype=bfloat16", "train.channels_last=true", "episodes.fused=true",
          "train.val_every=0", "train.checkpoint_every=0",
          "eval.episodes=1000", "eval.k_shot=[1,5]", "eval.n_way=5", "eval.n_query=15", "eval.seed=1234",
          "eval.protocol=set")


MEASURING = ".measuring"  # in the kit folder while `measure` runs (in the background)


class KitError(Exception):
    """A step that cannot go on; the message names the file or value and the fix."""


# ----------------------------------------------------------------------------- files
def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(MIB), b""):
            h.update(block)
    return h.hexdigest()


def write_json(path: Path, obj: Any) -> None:
    """Atomic: a temporary file renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KitError(f"{path} not found ({what})") from None
    except (OSError, ValueError) as e:
        raise KitError(f"{path} is not readable JSON ({what}): {e}") from None


def tracked_bytes(repo: Path = ROOT) -> int:
    """Bytes of the files git tracks in ``repo`` (what travels to the device in every call)."""
    try:
        names = subprocess.run(["git", "ls-files", "-z"], cwd=repo, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return 0
    return sum((repo / n).stat().st_size for n in names.decode().split("\0") if n and (repo / n).is_file())


# ----------------------------------------------------------------------------- pack / receive
def pack(source: Path, kit: Path, part_bytes: int, splits: tuple[str, ...] = SPLITS) -> dict[str, Any]:
    """Split ``source/<split>.zip`` (in that order, as one byte stream) into parts of at most
    ``part_bytes``: ``kit/pNN/part.bin`` beside a copy of the manifest. Parts already there
    with the right hash are kept. Returns the manifest."""
    if part_bytes < MIB:
        raise KitError(f"part size {part_bytes} B is below 1 MiB: the tracked files leave too little "
                       "of the 64 MiB upload (shrink them, or pass --part-mib)")
    files, offset = [], 0
    for split in splits:
        p = source / f"{split}.zip"
        if not p.is_file():
            raise KitError(f"{p} not found; pass --source DIR holding {', '.join(s + '.zip' for s in splits)}")
        size = p.stat().st_size
        files.append({"name": p.name, "bytes": size, "offset": offset, "sha256": sha256(p)})
        offset += size
    n_parts = max(1, math.ceil(offset / part_bytes))
    part_bytes = math.ceil(offset / n_parts)  # equal parts
    parts = []
    with _Stream([source / f["name"] for f in files]) as stream:
        for i in range(n_parts):
            name = f"p{i + 1:02d}"
            data = stream.read(min(part_bytes, offset - i * part_bytes))
            digest = hashlib.sha256(data).hexdigest()
            target = kit / name / "part.bin"
            if not (target.is_file() and target.stat().st_size == len(data) and sha256(target) == digest):
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(".part.bin.tmp")
                tmp.write_bytes(data)
                os.replace(tmp, target)
            parts.append({"name": name, "bytes": len(data), "sha256": digest})
    manifest = {"format": FORMAT, "files": files, "parts": parts}
    for part in parts:
        write_json(kit / part["name"] / "manifest.json", manifest)
    write_json(kit / "manifest.json", manifest)
    return manifest


class _Stream:
    """The files read one after the other as one byte stream."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths, self.i, self.f = paths, 0, None

    def __enter__(self) -> _Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.f is not None:
            self.f.close()

    def read(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n and self.i < len(self.paths):
            if self.f is None:
                self.f = open(self.paths[self.i], "rb")
            chunk = self.f.read(n - len(out))
            if not chunk:
                self.f.close()
                self.f, self.i = None, self.i + 1
            out += chunk
        return bytes(out)


def _manifest_of(kit: Path) -> dict[str, Any]:
    """The manifest carried with the parts (all copies must agree)."""
    copies = sorted(kit.glob("p[0-9][0-9]/manifest.json")) + [kit / "manifest.json"]
    found = [(p, read_json(p, "the kit's manifest")) for p in copies if p.is_file()]
    if not found:
        raise KitError(f"no part in {kit}: carry a folder {kit}/pNN written by `gpu_kit.py pack`")
    first_path, first = found[0]
    for p, m in found[1:]:
        if m != first:
            raise KitError(f"{p} differs from {first_path}: parts of two different packs; "
                           "carry the parts of one `gpu_kit.py pack`")
    if first.get("format") != FORMAT:
        raise KitError(f"{first_path} is not a gpu_kit manifest (format {first.get('format')!r})")
    return first


def receive(kit: Path, data_dir: Path) -> tuple[list[str], list[str]]:
    """Verify the parts in ``kit`` against their manifest; when all are there, rebuild the zips
    into ``data_dir`` (each checked against its sha256). Returns (present, missing) part names.

    Raises:
        KitError: naming a part whose size or sha256 is wrong (carry it again), or a rebuilt
            zip whose sha256 is wrong.
    """
    manifest = _manifest_of(kit)
    present, missing = [], []
    for part in manifest["parts"]:
        p = kit / part["name"] / "part.bin"
        if not p.is_file():
            missing.append(part["name"])
            continue
        if p.stat().st_size != part["bytes"] or sha256(p) != part["sha256"]:
            raise KitError(f"{p}: size or sha256 differs from the manifest (the part arrived damaged); "
                           f"carry {kit / part['name']} again")
        present.append(part["name"])
    if missing:
        return present, missing
    data_dir.mkdir(parents=True, exist_ok=True)
    sizes = [part["bytes"] for part in manifest["parts"]]
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    for f in manifest["files"]:
        target = data_dir / f["name"]
        if target.is_file() and target.stat().st_size == f["bytes"] and sha256(target) == f["sha256"]:
            continue
        tmp = target.with_name(f".{target.name}.tmp")
        h = hashlib.sha256()
        with open(tmp, "wb") as out:
            lo, hi = f["offset"], f["offset"] + f["bytes"]
            for part, start, size in zip(manifest["parts"], starts, sizes, strict=True):
                a, b = max(lo, start), min(hi, start + size)
                if a >= b:
                    continue
                with open(kit / part["name"] / "part.bin", "rb") as src:
                    src.seek(a - start)
                    block = src.read(b - a)
                h.update(block)
                out.write(block)
        if h.hexdigest() != f["sha256"]:
            tmp.unlink()
            raise KitError(f"{target}: the rebuilt file's sha256 differs from the manifest; pack again")
        os.replace(tmp, target)
    return present, missing


def sizes(source: Path, classes: int = 2) -> dict[str, int]:
    """Bytes of ``classes`` train classes (spread over the split) as the JPEGs shipped and as a
    decoded uint8 cache compressed losslessly several ways (the alternative to sending JPEGs)."""
    import bz2
    import io
    import lzma
    import zipfile
    import zlib

    import numpy as np
    from PIL import Image

    from metamem.data.mini_imagenet import read_split_csv
    from metamem.data.paths import bundled_dir

    rows = read_split_csv(bundled_dir("mini_imagenet") / "train.csv")
    wnids = sorted({w for _, w in rows})
    picked = wnids[:: max(1, len(wnids) // classes)][:classes]
    out = dict.fromkeys(("jpeg", "uint8", "zlib-9", "bz2-9", "xz-6", "png", "webp-lossless"), 0)
    with zipfile.ZipFile(source / "train.zip") as z:
        for wnid in picked:
            jpegs = [z.read(f"images/{f}") for f, w in rows if w == wnid]
            arrays = [np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in jpegs]
            raw = np.stack(arrays).tobytes()
            out["jpeg"] += sum(map(len, jpegs))
            out["uint8"] += len(raw)
            out["zlib-9"] += len(zlib.compress(raw, 9))
            out["bz2-9"] += len(bz2.compress(raw, 9))
            out["xz-6"] += len(lzma.compress(raw, preset=6))
            for fmt, key, kw in (("PNG", "png", {"optimize": True}),
                                 ("WEBP", "webp-lossless", {"lossless": True, "quality": 100})):
                for a in arrays:
                    buf = io.BytesIO()
                    Image.fromarray(a).save(buf, format=fmt, **kw)
                    out[key] += buf.tell()
    return out


# ----------------------------------------------------------------------------- plan
@dataclass
class PlannedRow:
    row: Row
    step_s: float
    measured: bool
    steps: int
    train_s: float
    other_s: float  # scoring + process start
    call: int = 1

    @property
    def total_s(self) -> float:
        return self.train_s + self.other_s


@dataclass
class Plan:
    rows: list[PlannedRow]
    window_s: float
    fixed: dict[str, float]  # start, data calls, decode, measure (seconds)
    margin_s: float
    call_limit_s: float
    labels: dict[str, str] = field(default_factory=dict)  # "measured" / "assumed" per figure

    @property
    def calls(self) -> int:
        return max((r.call for r in self.rows), default=0)

    @property
    def total_s(self) -> float:
        return sum(self.fixed.values()) + sum(r.total_s for r in self.rows) + self.calls * ASSUMED["call_s"]

    @property
    def fits(self) -> bool:
        calls_ok = all(sum(r.total_s for r in self.rows if r.call == c) <= self.call_limit_s
                       for c in range(1, self.calls + 1))
        return calls_ok and self.total_s + self.margin_s <= self.window_s


def assumed_step_s(row: Row) -> float:
    return row.images_per_step * ASSUMED_IMAGE_S[row.image_cost] + ASSUMED["step_overhead_s"]


def make_plan(*, timing: dict[str, Any] | None, data_calls: int, window_min: float = 15.0,
              margin_min: float = 2.0, call_limit_min: float = 9.0, rows: tuple[Row, ...] = ROWS,
              steps: int | None = None, left: bool = False) -> Plan:
    """Share out the window's training time among ``rows`` (by ``Row.share``) and turn it into
    steps with each row's seconds per step (measured in ``timing`` where present, else assumed).
    Rows go to run calls in order, a new call when the next row would pass ``call_limit_min``.
    ``steps`` gives every row that many steps instead (then the plan may not fit). ``left``:
    the window is what is left of the device time once the data is there (no start, no data
    calls: ``run --left-min`` with the minutes the device tool reports as left)."""
    measured = (timing or {}).get("rows", {})
    # `measure` runs in the background during the data calls (setsid): it costs no window time
    fixed = ({} if left else {"machine start": ASSUMED["start_min"] * 60,
                              "data calls": data_calls * ASSUMED["call_s"],
                              "rebuild + decode": ASSUMED["decode_s"]})
    margin, window = margin_min * 60, window_min * 60
    other = {r.name: r.eval_s + ASSUMED["row_start_s"] for r in rows}
    # each run call costs a call's overhead too; at most two run calls are planned for
    run_calls = 1 if sum(other.values()) + 0.5 * window < call_limit_min * 60 else 2
    train_total = window - margin - sum(fixed.values()) - sum(other.values()) - run_calls * ASSUMED["call_s"]
    if train_total <= 0 and steps is None:
        raise KitError(f"no training time is left in a {window_min:g}-minute window after the fixed costs "
                       f"({sum(fixed.values()) / 60:.1f} min) and scoring; widen --window-min")
    share = sum(r.share for r in rows)
    planned, call, in_call = [], 1, 0.0
    for r in rows:
        step_s = float(measured.get(r.name, 0.0)) or assumed_step_s(r)
        n = steps or max(1, int(train_total * r.share / share / step_s))
        p = PlannedRow(r, step_s, r.name in measured, n, n * step_s, other[r.name])
        if in_call and in_call + p.total_s > call_limit_min * 60:
            call, in_call = call + 1, 0.0
        p.call, in_call = call, in_call + p.total_s
        planned.append(p)
    return Plan(planned, window, fixed, margin, call_limit_min * 60)


def format_plan(plan: Plan, timing: dict[str, Any] | None) -> str:
    src = (f"measured on {timing.get('device', '?')}" if timing else
           "ASSUMED (no timing.json: run `gpu_kit.py measure` on the device)")
    lines = [f"step times: {src}", "",
             "| row | s/step | steps | train min | score + start min | row min | call |",
             "|---|---|---|---|---|---|---|"]
    for p in plan.rows:
        mark = "" if p.measured else " (assumed)"
        lines.append(f"| {p.row.name} | {p.step_s:.4f}{mark} | {p.steps} | {p.train_s / 60:.2f} | "
                     f"{p.other_s / 60:.2f} (assumed) | {p.total_s / 60:.2f} | {p.call} |")
    lines.append("")
    for key, s in plan.fixed.items():
        lines.append(f"{key}: {s / 60:.2f} min (assumed)")
    lines.append(f"run calls: {plan.calls} ({plan.calls * ASSUMED['call_s'] / 60:.2f} min of call overhead, "
                 f"assumed)")
    for c in range(1, plan.calls + 1):
        s = sum(p.total_s for p in plan.rows if p.call == c)
        lines.append(f"run call {c}: {s / 60:.2f} min (limit {plan.call_limit_s / 60:.1f})")
    lines.append(f"total {plan.total_s / 60:.2f} min + margin {plan.margin_s / 60:.1f} min "
                 f"= {(plan.total_s + plan.margin_s) / 60:.2f} of a {plan.window_s / 60:.0f}-minute window: "
                 f"{'FITS' if plan.fits else 'DOES NOT FIT'}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- measure / run
def _use_kit_env(kit: Path) -> None:
    """The kit's data root and decode cache for the runs of this process."""
    os.environ.setdefault("METAMEM_CACHE", str((kit / "cache").resolve()))
    os.environ["METAMEM_DATA"] = str((kit / "data").resolve())


def _metamem(args: list[str], log: Path, *, exact: bool = False) -> int:
    """``metamem ARGS`` in this process (no start-up per row), its output appended to ``log``.

    ``exact``: TF32 off for the call (CUDA convolutions and matmuls in full float32), so that
    a CPU re-scores the same figures."""
    import contextlib

    import torch

    from metamem.cli.main import main as cli

    flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    with open(log, "a", encoding="utf-8") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        print(f"$ metamem {' '.join(args)}", flush=True)
        if exact:
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        try:
            return cli(args)
        except Exception as e:  # a row's failure must not lose the rows after it
            print(f"failed: {type(e).__name__}: {e}", flush=True)
            return 1
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


def _step_seconds(metrics: Path) -> float:
    """Seconds per step between the first and the last timed lines of ``metrics.jsonl``."""
    lines = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
    timed = [x for x in lines if "elapsed_s" in x]
    if len(timed) < 2 or timed[-1]["step"] <= timed[0]["step"]:
        raise KitError(f"{metrics}: fewer than two timed lines; measure with more steps")
    return (timed[-1]["elapsed_s"] - timed[0]["elapsed_s"]) / (timed[-1]["step"] - timed[0]["step"])


def measure(kit: Path, rows: tuple[Row, ...], steps: int, extra: list[str], device: str,
            synthetic: str = "{num_classes: 64, per_class: 20, image_size: 84, channels: 3}") -> dict[str, Any]:
    """Seconds per training step of each row on synthetic images (the steps after the first
    tenth, which hold the start and the compilation), into ``kit/timing.json``."""
    log = kit / "measure.log"
    kit.mkdir(parents=True, exist_ok=True)
    _use_kit_env(kit)
    (kit / MEASURING).write_text(str(os.getpid()))
    try:
        return _measure(kit, rows, steps, extra, device, synthetic, log)
    finally:
        (kit / MEASURING).unlink(missing_ok=True)


def _measure(kit: Path, rows: tuple[Row, ...], steps: int, extra: list[str], device: str, synthetic: str,
             log: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"device": _device_name(device), "steps": steps, "rows": {}}
    for r in rows:
        run = kit / "measure" / r.name
        args = ["train", str(ROOT / "experiments" / "mini_imagenet" / f"{r.config}.yaml"),
                *r.train_overrides(steps), *COMMON, "data.name=synthetic", f"data.options={synthetic}",
                "data.val_split=null", "data.test_split=null", f"train.steps={steps}",
                f"train.log_every={max(1, steps // 10)}", f"device={device}", *extra,
                "--out", str(run), "--overwrite", "--no-progress", "--no-eval"]
        if _metamem(args, log) == 0:
            out["rows"][r.name] = round(_step_seconds(run / "metrics.jsonl"), 6)
            print(f"{r.name}: {out['rows'][r.name]:.4f} s/step", flush=True)
        else:
            print(f"{r.name}: measurement FAILED (see {log})", flush=True)
    write_json(kit / "timing.json", out)
    return out


def _device_name(device: str) -> str:
    import torch

    if device != "cpu" and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return "cpu"


def export_half(run: Path, dest: Path) -> Path:
    """The shareable copy of ``run`` with float16 weights (config, metrics, weights)."""
    import torch

    from metamem.training.export import export_run

    return export_run(run, dest, overwrite=True, max_bytes=BACK_FILES * BACK_FILE_BYTES,
                      weights_dtype=torch.float16)


def pack_back(export_dir: Path, out: Path, tag: str, extra_files: list[Path]) -> list[Path]:
    """``export_dir`` as ``out/<tag>.tar.gz.NN`` parts of at most 15 MiB with ``out/<tag>.json``
    (sha256 of each part and of the whole archive); replaces an earlier pack of ``tag``."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{tag}.tar.gz.tmp"
    with tarfile.open(tmp, "w:gz", compresslevel=1) as tar:
        for d in sorted(p for p in export_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            tar.add(d, arcname=d.name)
    blob_sha, size = sha256(tmp), tmp.stat().st_size
    for old in out.glob(f"{tag}.tar.gz.*"):
        old.unlink()
    parts = []
    with open(tmp, "rb") as f:
        for i in range(max(1, math.ceil(size / BACK_FILE_BYTES))):
            data = f.read(BACK_FILE_BYTES)
            p = out / f"{tag}.tar.gz.{i:02d}"
            p.write_bytes(data)
            parts.append({"name": p.name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    tmp.unlink()
    write_json(out / f"{tag}.json", {"format": FORMAT, "archive_sha256": blob_sha, "parts": parts})
    for f in extra_files:
        if f.is_file():
            shutil.copyfile(f, out / f.name)
    files = [p for p in out.iterdir() if p.is_file() and not p.name.startswith(".")]
    if len(files) > BACK_FILES:
        raise KitError(f"{out} holds {len(files)} files, more than the {BACK_FILES} that come back from $OUT")
    return files


def _train_export_score(args: list[str], run: Path, dest: Path, device: str, log: Path,
                        item: dict[str, Any]) -> str:
    """Train one row, export it with float16 weights and score the copy; its status line."""
    rc = _metamem(args, log)
    if rc != 0:
        return f"training failed (rc {rc}; see {log.name})"
    try:
        export_half(run, dest)
    except Exception as e:  # a size limit, a missing checkpoint: the rows after it still run
        return f"export failed ({type(e).__name__}: {e})"
    rc = _metamem(["eval", str(dest), f"device={device}", "--out", str(dest / "eval"), "--overwrite",
                   "--no-plots", "--no-progress"], log, exact=True)
    if rc != 0:
        shutil.rmtree(dest, ignore_errors=True)  # an unscored copy does not go back
        return f"scoring failed (rc {rc}; see {log.name})"
    from metamem.results_check import read_checked_results

    try:  # checked: schema, ranges, stored means against the per-episode scores
        res = read_checked_results(dest / "eval" / "results.json")
    except (OSError, ValueError) as e:
        return f"scoring unreadable ({e})"
    item["scores"] = {f"5w{r['protocol']['k_shot']}s": round(100 * r["scores"]["set"]["mean"], 2) for r in res}
    return "done"


def _free_device_memory() -> None:
    """What one row left on the GPU, before the next row starts."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_rows(kit: Path, out: Path, plan: Plan, call: int, extra: list[str], device: str,
             deadline_s: float, tag: str | None = None) -> list[dict[str, Any]]:
    """Train, export (float16) and score the rows of run call ``call``, packing after each row."""
    t0 = time.monotonic()
    tag = tag or f"runs-call{call}"
    log, status_file = out / f"{tag}.log", out / f"{tag}-status.json"
    out.mkdir(parents=True, exist_ok=True)
    export_dir = kit / "export" / tag
    shutil.rmtree(export_dir, ignore_errors=True)
    export_dir.mkdir(parents=True)
    done: list[dict[str, Any]] = []
    _use_kit_env(kit)
    for p in [p for p in plan.rows if p.call == call]:
        n = p.steps
        planned = n * p.step_s + p.other_s
        left = deadline_s - (time.monotonic() - t0)
        item: dict[str, Any] = {"row": p.row.name, "steps": n, "planned_s": round(planned, 1)}
        if planned > left:
            item["status"] = f"skipped: planned {planned:.0f} s, {left:.0f} s left before the deadline"
            done.append(item)
            print(f"{p.row.name}: {item['status']}", flush=True)
            continue
        r0 = time.monotonic()
        run = kit / "runs" / p.row.name
        args = ["train", str(ROOT / "experiments" / "mini_imagenet" / f"{p.row.config}.yaml"),
                *p.row.train_overrides(n), *COMMON, f"train.steps={n}", f"train.log_every={max(1, n // 50)}",
                f"device={device}", *extra, "--out", str(run), "--overwrite", "--no-progress", "--no-eval"]
        item["status"] = _train_export_score(args, run, export_dir / p.row.name, device, log, item)
        _free_device_memory()
        item["seconds"] = round(time.monotonic() - r0, 1)
        done.append(item)
        print(f"{p.row.name}: {item['status']} in {item['seconds']:.0f} s (planned {planned:.0f}) "
              f"{item.get('scores', '')}", flush=True)
        write_json(status_file, done)
        pack_back(export_dir, out, tag, [])
    write_json(status_file, done)
    pack_back(export_dir, out, tag, [])
    return done


# ----------------------------------------------------------------------------- unpack
def unpack(files: Path, dest: Path) -> list[Path]:
    """Verify the parts in ``files`` (``<tag>.json`` + ``<tag>.tar.gz.NN``) and unpack their run
    directories into ``dest``. Returns the run directories.

    Raises:
        KitError: naming a missing or damaged part, or an archive member that would land
            outside ``dest``.
    """
    manifests = sorted(m for m in files.glob("*.json") if not m.name.endswith("-status.json"))
    runs: list[Path] = []
    for m in manifests:
        man = read_json(m, "a manifest of runs brought back")
        if man.get("format") != FORMAT:
            continue
        blob = hashlib.sha256()
        data = bytearray()
        for part in man["parts"]:
            p = files / part["name"]
            if not p.is_file():
                raise KitError(f"{p} is missing (listed in {m.name}); fetch the call's files again")
            b = p.read_bytes()
            if hashlib.sha256(b).hexdigest() != part["sha256"]:
                raise KitError(f"{p}: sha256 differs from {m.name} (damaged on the way back)")
            data += b
            blob.update(b)
        if blob.hexdigest() != man["archive_sha256"]:
            raise KitError(f"{m.name}: the joined parts' sha256 differs from the manifest")
        dest.mkdir(parents=True, exist_ok=True)
        import io

        with tarfile.open(fileobj=io.BytesIO(bytes(data)), mode="r:gz") as tar:
            for member in tar.getmembers():
                target = (dest / member.name).resolve()
                if not (member.isfile() or member.isdir()) or dest.resolve() not in target.parents:
                    raise KitError(f"{m.name}: archive member {member.name!r} is not a plain file inside {dest}")
            tops = {member.name.split("/")[0] for member in tar.getmembers()}
            for top in tops:
                shutil.rmtree(dest / top, ignore_errors=True)
            tar.extractall(dest, filter="data")
        runs += [dest / t for t in sorted(tops)]
    if not runs:
        raise KitError(f"no runs to unpack in {files} (expected runs-callN.json and its parts)")
    return runs


# ----------------------------------------------------------------------------- CLI
def _rows(arg: str | None) -> tuple[Row, ...]:
    if not arg:
        return ROWS
    names = [n for n in arg.split(",") if n]
    bad = [n for n in names if n not in ROW_NAMES]
    if bad:
        raise KitError(f"--rows: unknown row {bad[0]!r}; rows: {', '.join(ROW_NAMES)}")
    return tuple(r for r in ROWS if r.name in names)


def _data_calls(kit: Path, tracked_mib: float | None) -> int:
    """Calls the data takes: the packed parts, or (before ``pack``) the split zips' bytes over
    what the tracked files leave of an upload."""
    m = kit / "manifest.json"
    if m.is_file() and tracked_mib is None:
        return len(read_json(m, "the kit's manifest")["parts"])
    tracked = tracked_mib * MIB if tracked_mib is not None else tracked_bytes()
    room = UPLOAD_BYTES - tracked - 2 * MIB
    if room < 4 * MIB:
        raise KitError(f"the tracked files are {tracked / MIB:.1f} MiB: they leave no room for data in a "
                       f"{UPLOAD_BYTES / MIB:.0f} MiB upload; shrink them (or plan with --tracked-mib N)")
    return math.ceil(DATA_BYTES / room)


def _timing(kit: Path, path: Path | None, wait_s: float = 0.0) -> dict[str, Any] | None:
    """The measured step times, waiting up to ``wait_s`` for a `measure` still running."""
    p = path or kit / "timing.json"
    end = time.monotonic() + wait_s
    while (kit / MEASURING).is_file() and time.monotonic() < end:
        time.sleep(2)
    return read_json(p, "measured step times") if p.is_file() else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kit", type=Path, default=ROOT / ".gpukit", help="the kit's (git-ignored) folder")
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("pack", help="split the zips into parts that fit the upload (here)")
    a.add_argument("--source", type=Path, default=None,
                   help="folder holding train.zip and test.zip (default: the data root's mini_imagenet/)")
    a.add_argument("--part-mib", type=float, default=None,
                   help="part size (default: 64 MiB less the tracked files less 2 MiB)")
    z = sub.add_parser("sizes", help="the train split as JPEGs vs a compressed uint8 cache (a sample of classes)")
    z.add_argument("--source", type=Path, default=None, help="as for pack")
    z.add_argument("--classes", type=int, default=2)
    r = sub.add_parser("receive", help="verify the parts carried so far; rebuild and decode once all are there")
    r.add_argument("--no-decode", action="store_true", help="do not decode the rebuilt zips into the cache")
    r.add_argument("--image-size", type=int, default=84)
    r.add_argument("--split-dir", type=Path, default=None, help="split CSVs (default: the bundled Ravi split)")
    for name, help_ in (("measure", "seconds per step of each row on synthetic images"),
                        ("plan", "the dry run: planned minutes per row and for the window"),
                        ("run", "train, export and score the rows of one run call")):
        s = sub.add_parser(name, help=help_)
        s.add_argument("--rows", default=None, help=f"comma-separated subset of {','.join(ROW_NAMES)}")
        s.add_argument("--timing", type=Path, default=None, help="timing.json (default KIT/timing.json)")
        s.add_argument("--window-min", type=float, default=15.0)
        s.add_argument("--margin-min", type=float, default=2.0)
        s.add_argument("--call-limit-min", type=float, default=9.0)
        s.add_argument("--steps", type=int, default=None, help="the same steps for every row (tests)")
        s.add_argument("--tracked-mib", type=float, default=None,
                       help="plan for tracked files of this size (default: the packed parts, else measured)")
        s.add_argument("--device", default="cuda")
        s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="an override added to every row's training (tests: tiny shapes)")
        if name == "run":
            s.add_argument("--call", type=int, default=1, help="which run call of the plan")
            s.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu_kit_out")))
            s.add_argument("--deadline-min", type=float, default=9.3, help="stop starting rows after this")
            s.add_argument("--left-min", type=float, default=None,
                           help="plan for the device minutes left now (the data already there)")
            s.add_argument("--wait-timing-s", type=float, default=90.0,
                           help="wait this long for a `measure` still running in the background")
    u = sub.add_parser("unpack", help="verify and unpack the runs brought back (here)")
    u.add_argument("files", type=Path, help="the folder the call's files came back to")
    u.add_argument("--dest", type=Path, default=ROOT / "runs" / "mini_imagenet_gpu")
    args = p.parse_args(argv)
    kit: Path = args.kit
    if getattr(args, "source", "unset") is None:
        from metamem.data.paths import data_root

        args.source = data_root() / "mini_imagenet"  # $METAMEM_DATA or ~/.cache/metamem/data
    try:
        if args.cmd == "pack":
            tracked = tracked_bytes()
            part = int(args.part_mib * MIB) if args.part_mib else UPLOAD_BYTES - tracked - 2 * MIB
            if part < MIB:
                raise KitError(f"the tracked files are {tracked / MIB:.1f} MiB: they leave no room for data in a "
                               f"{UPLOAD_BYTES / MIB:.0f} MiB upload; shrink them (or pass --part-mib for the "
                               "size they will have)")
            man = pack(args.source, kit, part)
            print(f"tracked files {tracked / MIB:.1f} MiB; {len(man['parts'])} parts of "
                  f"{man['parts'][0]['bytes'] / MIB:.1f} MiB in {kit} (sha256 in manifest.json)")
            for i, pt in enumerate(man["parts"], 1):
                also = (" && (setsid nohup python3 scripts/gpu_kit.py measure > .gpukit/measure.out 2>&1 &)"
                        if i == 1 else "")
                print(f"call {i}: carry [\".gpukit/{pt['name']}\"]  command: export PYTHONPATH=$PWD; "
                      f"python3 scripts/gpu_kit.py receive{also}")
            print("then: export PYTHONPATH=$PWD; python3 scripts/gpu_kit.py run --left-min MINUTES_LEFT --call 1 "
                  "(and --call 2 if the plan has two); the files come back from $OUT")
            return 0
        if args.cmd == "sizes":
            got = sizes(args.source, args.classes)
            scale = 64 / args.classes
            for key, n in got.items():
                print(f"{key:14s} {n / MIB:7.2f} MiB for {args.classes} classes -> train split ~{scale * n / MIB:6.0f} MiB "
                      f"({n / got['jpeg']:.2f}x the JPEGs)")
            return 0
        if args.cmd == "receive":
            data = kit / "data" / "mini_imagenet"
            present, missing = receive(kit, data)
            print(f"parts verified: {len(present)}/{len(present) + len(missing)}"
                  + (f"; still to carry: {' '.join(missing)}" if missing else "; zips rebuilt and verified"))
            if not missing and not args.no_decode:
                import metamem

                _use_kit_env(kit)
                for split in SPLITS:
                    t = time.perf_counter()
                    ds = metamem.load_dataset("mini_imagenet", split=split, root=data, image_size=args.image_size,
                                              split_dir=args.split_dir)
                    print(f"{split}: {len(ds)} images decoded/cached in {time.perf_counter() - t:.1f} s")
            return 0
        if args.cmd == "unpack":
            runs = unpack(args.files, args.dest)
            table = _load_table_script()
            for run in runs:
                print(table.row(run))
            return 0
        rows = _rows(args.rows)
        if args.cmd == "measure":
            measure(kit, rows, args.steps or 40, args.set, args.device)
            return 0
        left = args.cmd == "run" and args.left_min is not None
        timing = _timing(kit, args.timing, wait_s=args.wait_timing_s if args.cmd == "run" else 0.0)
        plan = make_plan(timing=timing, data_calls=0 if left else _data_calls(kit, args.tracked_mib),
                         window_min=args.left_min if left else args.window_min, margin_min=args.margin_min,
                         call_limit_min=args.call_limit_min, rows=rows, steps=args.steps, left=left)
        print(format_plan(plan, timing), flush=True)
        if args.cmd == "plan":
            return 0 if plan.fits else 1
        done = run_rows(kit, args.out, plan, args.call, args.set, args.device, args.deadline_min * 60)
        return 0 if done and all(d["status"] == "done" for d in done) else 1
    except KitError as e:
        print(f"gpu_kit: {e}", file=sys.stderr)
        return 2


def _load_table_script() -> Any:
    """scripts/mini_imagenet_table.py (a script, not a package), for its row()."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("mini_imagenet_table", ROOT / "scripts" / "mini_imagenet_table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


if __name__ == "__main__":
    raise SystemExit(main())
