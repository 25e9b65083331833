"""Seeded, bounded fuzzing of every parser that reads untrusted bytes: zip archives, pickles
(mini-ImageNet caches and checkpoints), PNG/JPEG headers, and YAML (experiment configs and
dataset cards). Each mutated input must either load or raise a metamem error; any other
exception (a raw ``OSError``, ``struct.error``, ``MemoryError``, ``UnicodeDecodeError``...)
fails the test with the seed and case that produced it.

The mutants are a pure function of ``SEED``: every CI run fuzzes the same inputs.
"""

from __future__ import annotations

import io
import pickle
import random
import subprocess
import sys
import tempfile
import textwrap
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import metamem
from metamem.config import ConfigError, load_config
from metamem.data.base import DatasetError
from metamem.data.download import safe_extract
from metamem.data.folder import read_card
from metamem.data.mini_imagenet import restricted_pickle_load
from metamem.data.sources import ZipSource, decode_images
from metamem.evaluation.user_episodes import EpisodeInputError, Preprocess
from metamem.runs import FORMAT, CheckpointError, load_checkpoint, save_checkpoint
from metamem.validate import validate_config

SEED = 20261203
TOKENS = [b":", b"- ", b"&a ", b"*a", b"!!python/object/apply:os.system ['true']", b"{", b"}",
          b"[", b"]", b"'", b'"', b"\t", b"\x00", b"%YAML 1.1\n", b"---\n", b"\xff\xfe",
          b"?", b"|", b">", b"#", b"\n  ", b"1e999", b".nan", b"~", b"<<: *a\n"]


def mutate(data: bytes, rng: random.Random, *, head: int | None = None) -> bytes:
    """1-4 random edits: flip a byte, set a byte, truncate, insert bytes or a YAML token,
    duplicate or delete a chunk. ``head`` confines edits to the first ``head`` bytes."""
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        span = max(1, min(len(b), head or len(b)))
        op = rng.randrange(7)
        i = rng.randrange(span)
        if op == 0 and b:
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1 and b:
            b[i] = rng.randrange(256)
        elif op == 2:
            del b[rng.randrange(len(b) + 1):]
        elif op == 3:
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 4:
            b[i:i] = rng.choice(TOKENS)
        elif op == 5 and b:
            j = min(len(b), i + rng.randint(1, 16))
            b[i:i] = b[i:j]
        elif b:
            del b[i:i + rng.randint(1, 16)]
    return bytes(b)


def fuzz(base: bytes, cases: int, target: Callable[[bytes, int], None],
         allowed: tuple[type[BaseException], ...], *, salt: int, head: int | None = None) -> int:
    """Run ``target`` on ``cases`` mutants of ``base``; returns how many loaded fine."""
    rng = random.Random(SEED * 1000 + salt)
    ok = 0
    for case in range(cases):
        data = mutate(base, rng, head=head)
        try:
            target(data, case)
            ok += 1
        except allowed as e:
            msg = str(e)
            assert msg and "\n" not in msg.strip(), f"case {case}: multi-line or empty message {msg!r}"
        except Exception as e:  # noqa: BLE001  (what this test exists to catch)
            pytest.fail(f"seed {SEED} salt {salt} case {case}: {type(e).__name__} escaped: {e}")
    return ok


def png_bytes(mode: str = "L", size: int = 8, fmt: str = "PNG") -> bytes:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).convert(mode).save(buf, format=fmt)
    return buf.getvalue()


# ------------------------------------------------------------------------ zip
def make_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for c in ("a", "b"):
            for k in range(2):
                zf.writestr(f"top/{c}/{k}.png", png_bytes(size=6))
    return buf.getvalue()


def test_fuzz_zip_archives(tmp_path: Path) -> None:
    def target(data: bytes, case: int) -> None:
        path = tmp_path / f"{case}.zip"
        path.write_bytes(data)
        src = ZipSource(path)
        if src.files:
            decode_images(src, src.files, mode="L", size=6, workers=1)
        dest = tmp_path / f"x{case}"
        safe_extract(path, dest)

    loaded = fuzz(make_zip(), 150, target, (DatasetError,), salt=1)
    assert loaded > 0  # some mutants are harmless: the harness does reach the decoders


# --------------------------------------------------------------------- pickle
def mini_pickle(protocol: int) -> bytes:
    data = np.random.default_rng(0).integers(0, 256, (4, 6, 6, 3), dtype=np.uint8)
    return pickle.dumps({"image_data": data, "class_dict": {"n01": [0, 1], "n02": [2, 3]}},
                        protocol=protocol)


@pytest.mark.parametrize("protocol", [2, 4])
def test_fuzz_mini_imagenet_pickles(tmp_path: Path, protocol: int) -> None:
    (tmp_path / "split").mkdir()
    (tmp_path / "split" / "test.csv").write_text("filename,label\na.jpg,n01\nb.jpg,n02\n")

    def target(data: bytes, case: int) -> None:
        root = Path(tempfile.mkdtemp(dir=tmp_path))
        (root / "mini-imagenet-cache-test.pkl").write_bytes(data)
        metamem.load_dataset("mini_imagenet", split="test", root=root, layout="pickle",
                             split_dir=tmp_path / "split", image_size=6, cache=False)

    loaded = fuzz(mini_pickle(protocol), 150, target, (DatasetError,), salt=10 + protocol)
    assert loaded > 0


def test_a_pickle_length_asking_for_a_terabyte_is_a_dataset_error(tmp_path: Path) -> None:
    """A byte-flipped length field used to escape as MemoryError. Run under an address-space
    cap (resource.setrlimit) so the allocation fails the same way on every machine."""
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(b"\x80\x04\x8e" + (1 << 40).to_bytes(8, "little") + b"\x00" * 64)
    code = textwrap.dedent(f"""
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
        from metamem.data.mini_imagenet import restricted_pickle_load
        from metamem.data.base import DatasetError
        try:
            restricted_pickle_load({str(bad)!r})
        except DatasetError as e:
            print("DatasetError:", e)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"DatasetError: {bad} is not a readable pickle" in out.stdout
    with pytest.raises(DatasetError, match=f"{bad} is not a readable pickle"):
        restricted_pickle_load(bad)  # uncapped: refused too (MemoryError or truncation)


def test_fuzz_checkpoints(tmp_path: Path) -> None:
    good = tmp_path / "good.pt"
    save_checkpoint(good, {"config": {"learner": {"name": "x"}}, "step": 3,
                           "model": {"w": torch.arange(6.0)}, "rng": {"torch_cpu": torch.get_rng_state()}})
    assert load_checkpoint(good)["format"] == FORMAT

    def target(data: bytes, case: int) -> None:
        path = tmp_path / f"{case}.pt"
        path.write_bytes(data)
        load_checkpoint(path)

    fuzz(good.read_bytes(), 60, target, (CheckpointError,), salt=20)


# ----------------------------------------------------------------- PNG / JPEG
@pytest.mark.parametrize("fmt, mode", [("PNG", "L"), ("PNG", "RGB"), ("PNG", "P"), ("JPEG", "RGB"),
                                       ("JPEG", "L")])
def test_fuzz_image_headers(tmp_path: Path, fmt: str, mode: str) -> None:
    ext = ".png" if fmt == "PNG" else ".jpg"
    good = png_bytes(mode, 8, fmt)
    pre = Preprocess(mode="L", size=(8, 8))

    def target(data: bytes, case: int) -> None:
        root = Path(tempfile.mkdtemp(dir=tmp_path))
        (root / "a").mkdir(parents=True)
        (root / "b").mkdir()
        (root / "a" / f"0{ext}").write_bytes(data)  # sorts first: the channel sniffing reads it
        (root / "b" / f"0{ext}").write_bytes(good)
        try:
            pre.load(root / "a" / f"0{ext}")
        except EpisodeInputError:
            pass
        metamem.load_dataset("folder", root=root, cache=False, image_size=8)

    # most edits in the header (signature, IHDR / SOF sizes, chunk lengths), some anywhere
    fuzz(good, 80, target, (DatasetError,), salt=30 + len(fmt + mode), head=64)
    fuzz(good, 20, target, (DatasetError,), salt=40 + len(fmt + mode))


# ----------------------------------------------------------------------- YAML
CONFIG = (Path(__file__).resolve().parents[2] / "experiments" / "base" / "synthetic.yaml").read_text() + \
    "learner: {name: lstm, controller_size: 16}\n"


def test_fuzz_experiment_yaml(tmp_path: Path) -> None:
    def target(data: bytes, case: int) -> None:
        path = tmp_path / f"{case}.yaml"
        path.write_bytes(data)
        cfg = load_config(path, ["train.steps=3"] if case % 3 == 0 else [])
        validate_config(cfg, source=str(path), require_learner=False)

    loaded = fuzz(CONFIG.encode(), 200, target, (ConfigError,), salt=50)
    assert loaded > 0


def test_fuzz_dataset_cards(tmp_path: Path) -> None:
    card = b"name: pets\nimage_size: 8\nchannels: 1\nsplits:\n  train: [a, b]\n  test: [c]\n"

    def target(data: bytes, case: int) -> None:
        (tmp_path / "card.yaml").write_bytes(data)
        read_card(tmp_path)

    fuzz(card, 200, target, (DatasetError,), salt=60)


def test_yaml_alias_bombs_and_self_references_are_config_errors(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} {{{', '.join(f'k{j}: *a{i - 1}' for j in range(10))}}}" for i in range(1, 9)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=r"more than 100000 values"):
        load_config(bomb)
    loop = tmp_path / "loop.yaml"
    loop.write_text("data: &d {options: *d}\n")
    with pytest.raises(ConfigError, match=r"a YAML alias refers to itself"):
        load_config(loop)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"seed: 1\n\xff\xfe\n")
    with pytest.raises(ConfigError, match=r"bin.yaml: not UTF-8 text"):
        load_config(binary)
