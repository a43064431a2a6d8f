"""train.data downloads: archives the test builds, served by an ``http.server`` on 127.0.0.1
in a thread (good, corrupt, truncated, 404, stalled, refused); nothing touches the internet."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import socket
import tarfile
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from train.cli import main
from train.config import load_config
from train.data import (DataError, default_data_dir, download_cifar10, load_cifar10_dir,
                        load_dataset)

from train_helpers import TINY, make_cifar_dir


def _archive(tmp_path: Path, top: str = "cifar-10-batches-py") -> bytes:
    folder, _, _ = make_cifar_dir(tmp_path / "src", train_rows=(20, 12), test_rows=9)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(folder, arcname=top)
    return buf.getvalue()


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict[str, bytes] = {}

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        body = self.routes.get(self.path)
        if self.path == "/stall.tar.gz":
            time.sleep(3)  # longer than the test's timeout: a server that never answers
            return
        if body is None:
            self.send_error(404, "Not Found")
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path == "/truncated.tar.gz":
            body = body[: len(body) // 2]  # promises the whole archive, sends half, closes
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[tuple[str, str]]:
    """(base URL, MD5 of /good.tar.gz) of a local server with the test archives."""
    good = _archive(tmp_path_factory.mktemp("good"))
    _Handler.routes = {"/good.tar.gz": good, "/truncated.tar.gz": good,
                       "/notgz.tar.gz": b"plain text, not gzip",
                       "/wrongtop.tar.gz": _archive(tmp_path_factory.mktemp("w"), top="other")}
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", hashlib.md5(good).hexdigest()
    httpd.shutdown()
    httpd.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_download_unpacks_a_valid_folder(server, tmp_path):
    base, md5 = server
    dest = download_cifar10(tmp_path / "cache" / "cifar", f"{base}/good.tar.gz", md5,
                            progress=False)
    ds = load_cifar10_dir(dest)
    assert len(ds.train) == 32 and len(ds.test) == 9
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["cifar"]  # no temp leftovers


def test_md5_null_warns_and_still_downloads(server, tmp_path):
    base, _ = server
    with pytest.warns(UserWarning, match=r"data.md5 is null: the archive from .* is not "
                                         r"checksum-verified"):
        download_cifar10(tmp_path / "d", f"{base}/good.tar.gz", None, progress=False)
    assert (tmp_path / "d" / "test_batch").is_file()


@pytest.mark.filterwarnings("ignore:data.md5 is null")
@pytest.mark.parametrize("path, md5, match", [
    ("/good.tar.gz", "0" * 32, r"MD5 [0-9a-f]{32} != expected 0{32} \(corrupt"),
    ("/truncated.tar.gz", None, r"truncated download"),
    ("/missing.tar.gz", None, r"HTTP 404 Not Found"),
    ("/notgz.tar.gz", None, r"not a readable \.tar\.gz archive"),
    ("/wrongtop.tar.gz", None, r"the archive has no cifar-10-batches-py/test_batch"),
    ("/stall.tar.gz", None, r"the server sent nothing for 0\.5 s \(timed out\)"),
])
def test_download_failures_leave_nothing_behind(server, tmp_path, path, md5, match):
    base, _ = server
    url = f"{base}{path}"
    with pytest.raises(DataError, match=rf"^downloading {url} failed: .*{match}.*set "
                                        r"data.dir to its cifar-10-batches-py folder; offline, "
                                        r".*synthetic, a smoke test\)$"):
        download_cifar10(tmp_path / "d", url, md5, timeout=0.5, progress=False)
    assert list(tmp_path.iterdir()) == []  # neither the folder nor a temporary one


def test_connection_refused(tmp_path):
    url = f"http://127.0.0.1:{_free_port()}/cifar.tar.gz"
    with pytest.raises(DataError, match=rf"^downloading {url} failed: .*refused"):
        download_cifar10(tmp_path / "d", url, None, timeout=5, progress=False)


def test_default_dir_honours_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_data_dir() == tmp_path / "jconv" / "cifar-10-batches-py"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_data_dir() == Path.home() / ".cache" / "jconv" / "cifar-10-batches-py"


def _auto_cfg(tmp_path: Path, *extra: str):
    # tfds.data_dir points at an empty folder, so "auto" never finds a prepared TFDS copy.
    return load_config("vgg.yaml", [f"data.data_dir={tmp_path / 'tfds'}", *extra])


def test_auto_prefers_an_existing_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    make_cifar_dir(tmp_path / "cache" / "jconv", train_rows=(5,), test_rows=3)
    ds = load_dataset(_auto_cfg(tmp_path, "data.url=http://127.0.0.1:9/never-fetched").data,
                      seed=0)
    assert len(ds.train) == 5 and "cifar10_dir" in ds.description


def test_auto_without_data_and_download_off_names_every_way_out(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cfg = _auto_cfg(tmp_path, "data.download=false")
    with pytest.raises(DataError, match=r"data.source=auto found no CIFAR-10: .*there is no "
                                        r".*cache/jconv/cifar-10-batches-py and "
                                        r"data.download=false\. Either set data.download=true "
                                        r".*set data.dir to .*or prepare TFDS"):
        load_dataset(cfg.data, seed=0)


def test_cli_downloads_then_trains_then_reuses_the_folder(server, tmp_path, monkeypatch,
                                                           capsys):
    """``python -m train --config vgg.yaml`` with only the URL pointed at the local
    server: auto finds nothing, downloads into the cache and trains; a second run reuses
    the folder (the server's archive is gone by then)."""
    base, md5 = server
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    args = ["--config", "vgg.yaml", "--quiet", f"data.data_dir={tmp_path / 'tfds'}",
            f"data.url={base}/good.tar.gz", f"data.md5={md5}", "train.epochs=1", *TINY]
    assert main([*args, "--workdir", str(tmp_path / "a")]) == 0
    assert (tmp_path / "cache" / "jconv" / "cifar-10-batches-py" / "test_batch").is_file()
    assert json.loads((tmp_path / "a" / "results.json").read_text())["test_images"] == 9
    monkeypatch.setitem(_Handler.routes, "/good.tar.gz", b"")
    assert main([*args, "--workdir", str(tmp_path / "b")]) == 0


def test_cli_download_error_is_one_line(server, tmp_path, monkeypatch, capsys):
    base, _ = server
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert main(["--config", "vgg.yaml", "--workdir", str(tmp_path / "r"),
                 f"data.data_dir={tmp_path / 'tfds'}", f"data.url={base}/missing.tar.gz",
                 *TINY]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"Error: downloading {base}/missing.tar.gz failed: HTTP 404")
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("override, match", [
    ("data.url=ftp://x/y.tar.gz", r"data.url='ftp://x/y.tar.gz' is invalid: expected an "
                                  r"https://, http:// or file:// URL"),
    ("data.md5=abc", r"data.md5='abc' is invalid: expected null or 32 hexadecimal digits"),
])
def test_url_and_md5_are_validated(override, match):
    with pytest.raises(ValueError, match=match):
        load_config("vgg.yaml", [override])


def test_file_url_is_copied_and_checked(server, tmp_path):
    base, md5 = server
    archive = tmp_path / "src.tar.gz"
    archive.write_bytes(_Handler.routes["/good.tar.gz"])
    dest = download_cifar10(tmp_path / "d", archive.as_uri(), md5, progress=False)
    assert len(load_cifar10_dir(dest).train) == 32
    with pytest.raises(DataError, match=r"failed: no such file .*nothing\.tar\.gz; check"):
        download_cifar10(tmp_path / "e", (tmp_path / "nothing.tar.gz").as_uri(), md5,
                         progress=False)


def test_progress_bar_only_once_the_server_answers(server, tmp_path, capsys):
    base, md5 = server
    with pytest.raises(DataError, match="HTTP 404"):
        download_cifar10(tmp_path / "a", f"{base}/missing.tar.gz", md5)
    assert "downloading missing.tar.gz" not in capsys.readouterr().err
    download_cifar10(tmp_path / "b", f"{base}/good.tar.gz", md5)
    assert "downloading good.tar.gz" in capsys.readouterr().err
