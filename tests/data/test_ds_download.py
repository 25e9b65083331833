"""Downloads for real against a local HTTP server, and archive extraction safety."""

from __future__ import annotations

import socket
import zipfile
from pathlib import Path

import pytest

import metamem
from metamem.cli.main import main as cli
from metamem.data.download import OMNIGLOT_FILES, DownloadError, download, prepare_omniglot, safe_extract

SMALL1_MD5 = OMNIGLOT_FILES["background_small1"][1]
SMALL2_MD5 = OMNIGLOT_FILES["background_small2"][1]
NAME = "images_background_small1.zip"


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_download_verifies_md5_and_zip(server: str, tmp_path: Path, md5sum) -> None:
    dest = download(f"{server}/ok/{NAME}", tmp_path / NAME, md5=SMALL1_MD5, progress=False)
    assert md5sum(dest) == SMALL1_MD5
    assert leftovers(tmp_path) == []


def test_prepare_downloads_extracts_and_loads(server: str, tmp_path: Path) -> None:
    root = tmp_path / "omni"
    paths = prepare_omniglot(root, sets=("background_small1",), base_url=f"{server}/ok",
                             progress=False)
    assert paths == [root / NAME]
    assert (root / "images_background_small1" / "Greek" / "character01").is_dir()
    assert len(list((root / "images_background_small1").rglob("*.png"))) == 2720
    ds = metamem.load_dataset("omniglot", split="background_small1", root=root, image_size=8,
                              cache_dir=tmp_path / "cache")
    assert ds.info["source"] == str(root / NAME)  # the downloaded archive, not the bundled one
    assert (len(ds), ds.num_classes) == (2720, 136)
    # a second prepare finds the verified archive and downloads nothing
    assert prepare_omniglot(root, sets=("background_small1",), base_url="http://127.0.0.1:9/none",
                            progress=False) == [root / NAME]


def test_cli_prepare_uses_the_env_url(server: str, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("METAMEM_OMNIGLOT_URL", f"{server}/ok")
    rc = cli(["prepare", "omniglot", "--root", str(tmp_path), "--sets", "background_small2",
              "--no-extract", "--quiet"])
    assert rc == 0
    assert (tmp_path / "images_background_small2.zip").is_file()
    assert not (tmp_path / "images_background_small2").exists()
    assert f"{server}/ok" in capsys.readouterr().out


@pytest.mark.parametrize("route", ["html", "htmlbody"])
def test_html_page_is_refused(server: str, tmp_path: Path, route: str) -> None:
    with pytest.raises(DownloadError, match=rf"{route}/{NAME} returned an HTML page"):
        download(f"{server}/{route}/{NAME}", tmp_path / NAME, md5=SMALL1_MD5, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_truncated_body_is_refused_and_previous_file_kept(server: str, tmp_path: Path) -> None:
    (tmp_path / NAME).write_bytes(b"previous")
    with pytest.raises(DownloadError, match=rf"truncated download of {NAME} .*: got \d+ of \d+ bytes"):
        download(f"{server}/trunc/{NAME}", tmp_path / NAME, md5=SMALL1_MD5, progress=False)
    assert (tmp_path / NAME).read_bytes() == b"previous"
    assert leftovers(tmp_path) == []


def test_truncated_zip_is_refused(server: str, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match=rf"{NAME} from .* is not a valid zip archive"):
        download(f"{server}/badzip/{NAME}", tmp_path / NAME, md5=None, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_md5_mismatch_names_file_and_keeps_previous_data(server: str, tmp_path: Path) -> None:
    root = tmp_path / "omni"
    prepare_omniglot(root, sets=("background_small1",), base_url=f"{server}/ok", progress=False)
    (root / NAME).write_bytes(b"stale")  # forces a new download
    with pytest.raises(DownloadError, match=rf"md5 mismatch for {NAME} from .*: expected "
                       rf"{SMALL1_MD5}, got {SMALL2_MD5}"):
        prepare_omniglot(root, sets=("background_small1",), base_url=f"{server}/wrong",
                         progress=False)
    assert (root / NAME).read_bytes() == b"stale"
    assert len(list((root / "images_background_small1").rglob("*.png"))) == 2720
    assert leftovers(root) == []


def test_unreachable_url(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError, match=r"cannot reach http://127\.0\.0\.1:\d+/x\.zip"):
        download(f"http://127.0.0.1:{port}/x.zip", tmp_path / "x.zip", progress=False, timeout=5)


def test_http_error_and_cli_message(server: str, tmp_path: Path, capsys) -> None:
    with pytest.raises(DownloadError, match="failed: HTTP 404"):
        download(f"{server}/missing.zip", tmp_path / "m.zip", progress=False)
    rc = cli(["prepare", "omniglot", "--root", str(tmp_path), "--sets", "background_small1",
              "--url", f"{server}/html", "--quiet"])
    assert rc == 1
    assert "metamem prepare: error:" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["../evil.txt", "/abs/evil.txt", "ok/../../evil.txt", "C:/evil.txt"])
def test_escaping_members_are_refused_and_nothing_extracted(tmp_path: Path, bad: str) -> None:
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("top/good.txt", "fine")
        zf.writestr(bad, "evil")
    dest = tmp_path / "out"
    with pytest.raises(DownloadError, match=rf"refusing to extract member '{bad}'.*nothing was extracted"):
        safe_extract(archive, dest)
    assert not dest.exists()
    assert not (tmp_path / "evil.txt").exists()


def test_extract_replaces_an_older_copy(tmp_path: Path) -> None:
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("top/new.txt", "new")
    (tmp_path / "out" / "top").mkdir(parents=True)
    (tmp_path / "out" / "top" / "old.txt").write_text("old")
    assert safe_extract(archive, tmp_path / "out") == [tmp_path / "out" / "top"]
    assert sorted(p.name for p in (tmp_path / "out" / "top").iterdir()) == ["new.txt"]
    assert leftovers(tmp_path / "out") == []
