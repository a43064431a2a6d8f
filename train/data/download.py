"""The CIFAR-10 python archive fetched with ``pooch`` (download, MD5 check, untar, progress
bar) into a folder that appears only once it is complete; every failure is one
:class:`~train.errors.DataError` naming the URL and the way out (offline, too)."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tarfile
import tempfile
import urllib.parse
import urllib.request
import warnings
import zlib
from pathlib import Path
from typing import Any, Iterator

import pooch
from tqdm import tqdm

from ..errors import DataError

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"  # published next to the archive
CIFAR10_FOLDER = "cifar-10-batches-py"  # the archive's top folder
# The end of every "no CIFAR-10 here" message: what runs without the full download.
OFFLINE = ("offline, train on the real 5,170-image subset (--config cifar_subset.yaml) or on "
           "random images (data.source=synthetic, a smoke test)")


def download_cifar10(dest: str | Path, url: str = CIFAR10_URL, md5: str | None = CIFAR10_MD5,
                     *, timeout: float = 60.0, progress: bool = True) -> Path:
    """Download the CIFAR-10 python archive from ``url`` and unpack its
    ``cifar-10-batches-py`` folder as ``dest``; returns ``dest``.

    ``pooch`` fetches the archive into a temporary folder next to ``dest`` (with a progress
    bar), checks its MD5 against ``md5`` (``None`` skips the check with a warning) and
    unpacks it there; the folder is renamed into place only when complete, so an
    interrupted or corrupt download never leaves a folder that looks valid. ``timeout``
    (seconds) bounds the wait for the connection and for each read of a stalled server.
    ``file://`` URLs are copied. Every failure is a :class:`~train.errors.DataError` naming
    the URL and the way out.

    Example:
      >>> download_cifar10("/tmp/x", url="http://127.0.0.1:9/none.tar.gz", timeout=1)
      Traceback (most recent call last):
      ...
      train.errors.DataError: downloading http://127.0.0.1:9/none.tar.gz failed: ...
    """
    dest = Path(dest).expanduser()
    fail = f"downloading {url} failed"
    fix = (f"check the URL (data.url) and the connection and run again, or unpack "
           f"{CIFAR10_URL} yourself and set data.dir to its {CIFAR10_FOLDER} folder; "
           f"{OFFLINE}")
    if md5 is None:
        warnings.warn(f"data.md5 is null: the archive from {url} is not checksum-verified",
                      stacklevel=2)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.download-", dir=dest.parent))
    try:
        try:
            archive = _fetch(url, md5, tmp, timeout, progress)
        except (ValueError, OSError) as e:  # requests' errors are OSErrors too
            raise DataError(f"{fail}: {_fetch_failure(e, md5, timeout)}; {fix}") from None
        try:
            pooch.Untar(extract_dir=str(tmp / "unpacked"))(archive, "download", None)
        except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
            why = " ".join(str(e).split())  # tarfile lists each compression it tried
            raise DataError(f"{fail}: not a readable .tar.gz archive ({why}); {fix}") from None
        _move_into_place(tmp / "unpacked" / CIFAR10_FOLDER, dest, fail, fix)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _fetch(url: str, md5: str | None, folder: Path, timeout: float, progress: bool) -> str:
    """``pooch.retrieve`` of ``url`` into ``folder``, hash-checked: the archive's path."""
    bar = _Progress(f"downloading {url.rsplit('/', 1)[-1]}") if progress else False
    downloader = _copy_file if url.startswith("file://") else \
        pooch.HTTPDownloader(timeout=timeout, progressbar=bar)
    with _quiet_pooch():
        try:
            return pooch.retrieve(url, None if md5 is None else f"md5:{md5.lower()}",
                                  fname="archive.tar.gz", path=folder, downloader=downloader)
        finally:
            if bar:
                bar.close()


class _Progress:
    """The progress bar pooch drives (it sets ``total`` once the server has answered, then
    calls ``update``, ``reset`` and ``close``): a tqdm bar that appears only then, so a
    failed request prints nothing but its error."""

    def __init__(self, desc: str) -> None:
        self.desc, self.bar = desc, None

    @property
    def total(self) -> int | None:
        return None if self.bar is None else self.bar.total

    @total.setter
    def total(self, total: int) -> None:
        self.close()
        self.bar = tqdm(total=total or None, unit="B", unit_scale=True, desc=self.desc)

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def reset(self) -> None:
        if self.bar is not None:
            self.bar.reset(self.bar.total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.bar = None


@contextlib.contextmanager
def _quiet_pooch() -> Iterator[None]:
    """pooch logs each download at INFO on stderr; the progress bar already says it."""
    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _copy_file(url: str, output_file: Any, _pooch: Any) -> None:
    """A pooch downloader for ``file://`` URLs (pooch knows http(s), ftp, sftp and doi)."""
    source = urllib.request.url2pathname(urllib.parse.urlparse(url).path)
    if hasattr(output_file, "write"):
        with open(source, "rb") as f:
            shutil.copyfileobj(f, output_file)
    else:
        shutil.copyfile(source, output_file)


def _fetch_failure(e: BaseException, md5: str | None, timeout: float) -> str:
    """What went wrong in one phrase: HTTP status, timeout, truncation, checksum, OS."""
    import requests

    text = str(e)
    hashes = re.search(r"expected (?:md5:)?([0-9a-fA-F]+) but got ([0-9a-fA-F]+)", text)
    if isinstance(e, ValueError) and hashes:
        return f"MD5 {hashes.group(2)} != expected {md5} (corrupt or a different file)"
    if isinstance(e, requests.HTTPError) and e.response is not None:
        return f"HTTP {e.response.status_code} {e.response.reason}"
    if isinstance(e, requests.Timeout) or "timed out" in text:
        return f"the server sent nothing for {timeout:g} s (timed out)"
    if isinstance(e, (requests.exceptions.ChunkedEncodingError,
                      requests.exceptions.ContentDecodingError)):
        return "the connection closed before the whole archive arrived (truncated download)"
    if isinstance(e, requests.ConnectionError):
        reason = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
        return reason.group(1) if reason else text
    if isinstance(e, FileNotFoundError):
        return f"no such file {e.filename}"
    return f"{type(e).__name__}: {text}"


def _move_into_place(unpacked: Path, dest: Path, fail: str, fix: str) -> None:
    """Rename the unpacked folder to ``dest``; a folder another process completed first is
    kept."""
    if not (unpacked / "test_batch").is_file():
        raise DataError(f"{fail}: the archive has no {CIFAR10_FOLDER}/test_batch; {fix}")
    try:
        os.rename(unpacked, dest)
    except OSError:
        # Another process (a second trainer on this host) may have finished first.
        if not (dest / "test_batch").is_file():
            raise DataError(f"{fail}: cannot move the unpacked folder to {dest} (it exists "
                            f"and is not a complete {CIFAR10_FOLDER} folder: remove it "
                            f"or choose another data.dir)") from None
