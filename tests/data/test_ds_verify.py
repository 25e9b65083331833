"""Content manifests of the full Omniglot sets and ``metamem prepare omniglot --from``.

Fast tier: the committed manifests are checked against the bundled official small zips, and
the verification/installation logic runs on a "set" made from ``background_small1`` with a
manifest written for it. Slow tier: the real full sets of ``../shared/data/omniglot/full``.
"""

from __future__ import annotations

import hashlib
import shutil
import zipfile
from pathlib import Path

import pytest

import metamem
from metamem.cli.main import main
from metamem.data.base import DatasetError
from metamem.data.verify import (
    content_digest,
    content_hashes,
    find_sets,
    prepare_from,
    read_manifest,
    verify_content,
    write_manifest,
)

BUNDLED = Path(__file__).resolve().parents[2] / "datasets" / "omniglot"
SMALL1 = BUNDLED / "images_background_small1.zip"
SMALL2 = BUNDLED / "images_background_small2.zip"
FULL = Path(__file__).resolve().parents[3] / "shared" / "data" / "omniglot" / "full"
needs_full = pytest.mark.skipif(
    not (FULL / "images_evaluation.zip").is_file(),
    reason=f"the full Omniglot sets are not at {FULL} (../shared/data/omniglot/full)",
)


def test_committed_manifests_match_the_official_small_zips() -> None:
    bg, ev = read_manifest("background"), read_manifest("evaluation")
    assert (len(bg.files), len(ev.files)) == (19280, 13180)
    assert len({n.rsplit("/", 1)[0] for n in bg.files}) == 964
    assert len({n.rsplit("/", 1)[0] for n in ev.files}) == 659
    for small in (SMALL1, SMALL2):  # official zips, byte-identical images
        hashes = content_hashes(small)
        assert hashes and all(bg.files[n] == md5 for n, md5 in hashes.items())
    with pytest.raises(DatasetError, match="no content manifest for Omniglot set 'background_small1'"):
        read_manifest("background_small1")


@pytest.fixture()
def fake_set(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    """``images_background/`` holding background_small1's images, and a manifest for it."""
    folder = tmp_path / "src" / "images_background"
    with zipfile.ZipFile(SMALL1) as zf:
        for info in zf.infolist():
            if not info.is_dir():
                target = folder / info.filename.split("/", 1)[1]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(zf.read(info))
    hashes = content_hashes(folder)
    manifests = write_manifest(hashes, "background", tmp_path / "manifests").parent
    return folder, manifests, hashes


def _rezip(folder: Path, out: Path, *, top: str | None, reverse: bool = True) -> Path:
    files = sorted((p for p in folder.rglob("*") if p.is_file()), reverse=reverse)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as zf:
        for p in files:
            rel = p.relative_to(folder).as_posix()
            zf.write(p, f"{top}/{rel}" if top else rel)
    return out


def test_digest_formula_and_rezipped_copies(fake_set, tmp_path: Path) -> None:
    folder, manifests, hashes = fake_set
    m = read_manifest("background", manifests)
    assert m.digest == content_digest(hashes) == metamem.data.sources.FolderSource(folder).digest()
    for top in ("images_background", None):  # other order, no compression, with/without top
        z = _rezip(folder, tmp_path / f"copy_{top}.zip", top=top)
        assert verify_content(z, "background", m) == hashes


@pytest.mark.parametrize("damage", ["changed", "missing", "extra"])
def test_damaged_copy_names_the_first_bad_file(fake_set, damage: str) -> None:
    folder, manifests, hashes = fake_set
    names = sorted(hashes)
    victim, second = names[100], names[200]
    if damage == "changed":
        data = bytearray((folder / victim).read_bytes())
        data[-20] ^= 0xFF
        (folder / victim).write_bytes(bytes(data))
        (folder / second).write_bytes((folder / second).read_bytes() + b"\0")
        want = rf"{victim} differs from the official image \(md5 \w+, expected {hashes[victim]}\) \(2 changed, 0 missing, 0 extra"
    elif damage == "missing":
        (folder / victim).unlink()
        (folder / second).unlink()
        want = rf"{victim} is missing \(0 changed, 2 missing, 0 extra"
    else:
        victim = victim.rsplit("/", 1)[0] + "/zz_extra.png"
        shutil.copyfile(folder / names[0], folder / victim)
        want = rf"{victim} is not an official image \(0 changed, 0 missing, 1 extra"
    with pytest.raises(DatasetError, match=want):
        verify_content(folder, "background", read_manifest("background", manifests))


def test_prepare_from_installs_only_verified_copies(fake_set, tmp_path: Path) -> None:
    folder, manifests, hashes = fake_set
    root = tmp_path / "root"
    # a folder: installed as the folder images_background/
    (out,) = prepare_from(folder, root, manifest_dir=manifests)
    assert out == root / "images_background" and content_hashes(out) == hashes
    # a re-zipped copy with the official top folder: installed as the archive
    z = _rezip(folder, tmp_path / "src" / "images_background.zip", top="images_background")
    shutil.rmtree(folder)
    assert find_sets(tmp_path / "src", manifests) == {"background": z}
    (out,) = prepare_from(tmp_path / "src", root, manifest_dir=manifests)
    assert out == root / "images_background.zip" and out.read_bytes() == z.read_bytes()
    # a damaged archive is refused and nothing in the root changes
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    bad = tmp_path / "bad" / "images_background.zip"
    bad.parent.mkdir()
    with zipfile.ZipFile(z) as src, zipfile.ZipFile(bad, "w") as dst:
        for i, info in enumerate(src.infolist()):
            data = src.read(info)
            dst.writestr(info.filename, data + b"x" if i == 7 else data)
    with pytest.raises(DatasetError, match=r"is not the official Omniglot images_background: .* differs"):
        prepare_from(bad, root, manifest_dir=manifests)
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before
    assert sorted(p.name for p in root.iterdir()) == ["images_background", "images_background.zip"]


def test_find_sets_by_alphabets_and_errors(fake_set, tmp_path: Path) -> None:
    folder, manifests, _ = fake_set
    plain = tmp_path / "my_copy"
    folder.rename(plain)  # a folder of alphabets under another name
    assert find_sets(plain, manifests) == {"background": plain}
    with pytest.raises(DatasetError, match="no Omniglot set found; expected images_background"):
        find_sets(tmp_path / "manifests", manifests)
    with pytest.raises(DatasetError, match="does not exist"):
        find_sets(tmp_path / "nope", manifests)
    with pytest.raises(DatasetError, match="set 'evaluation' not found there"):
        prepare_from(plain, tmp_path / "root", sets=("evaluation",), manifest_dir=manifests)


def test_cli_refuses_a_copy_that_is_not_official(tmp_path: Path, capsys) -> None:
    # the bundled small set is a subset of the background set: the first missing image is named
    src = tmp_path / "images_background.zip"
    shutil.copyfile(SMALL1, src)
    rc = main(["prepare", "omniglot", "--from", str(src), "--root", str(tmp_path / "root")])
    assert rc == 1
    err = capsys.readouterr().err
    assert "is not the official Omniglot images_background: Alphabet_of_the_Magi/character01/0709_01.png is missing" in err
    assert not (tmp_path / "root" / "images_background.zip").exists()


# ----------------------------------------------------------------------------- slow tier
@pytest.mark.slow
@needs_full
def test_prepare_from_shared_full_sets_then_load(tmp_path: Path, capsys) -> None:
    root = tmp_path / "root"
    rc = main(["prepare", "omniglot", "--from", str(FULL), "--root", str(root)])
    assert rc == 0, capsys.readouterr().err
    assert sorted(p.name for p in root.iterdir()) == ["images_background.zip", "images_evaluation.zip"]
    # re-zipped archives (not the official md5) load because their content is official
    ev = metamem.load_dataset("omniglot", split="evaluation", root=root, image_size=8,
                              cache_dir=tmp_path / "cache")
    assert (len(ev), ev.num_classes, len(ev.group_names or [])) == (13180, 659, 20)
    test = metamem.load_dataset("omniglot", split="vinyals/test", root=root, image_size=8,
                                cache_dir=tmp_path / "cache")
    assert test.num_classes == 423


@pytest.mark.slow
@needs_full
def test_tampered_full_copy_is_refused_and_not_loaded(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "images_evaluation.zip"
    victim = "images_evaluation/Tengwar/character05/1535_07.png"
    with zipfile.ZipFile(FULL / "images_evaluation.zip") as src, zipfile.ZipFile(bad, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == victim:
                data = hashlib.md5(data).digest() + data[16:]
            dst.writestr(info, data)
    root = tmp_path / "root"
    assert main(["prepare", "omniglot", "--from", str(bad), "--root", str(root)]) == 1
    assert "Tengwar/character05/1535_07.png differs from the official image" in capsys.readouterr().err
    root.mkdir()
    shutil.copyfile(bad, root / "images_evaluation.zip")  # put there by hand: the loader refuses it
    with pytest.raises(DatasetError, match="its images are not the official ones"):
        metamem.load_dataset("omniglot", split="evaluation", root=root, image_size=8,
                             cache_dir=tmp_path / "cache")
