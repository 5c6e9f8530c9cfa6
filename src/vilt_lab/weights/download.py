"""Download a file once, hashing it on the way, and refuse it when its SHA-256 is not the one expected.

The file streams into `<dest>.part` and is renamed into place only when it is complete and its hash
checked, so an interrupted or refused download never leaves a file that looks finished; a file
already at `dest` (a finished earlier download) is hashed and reused instead of fetched again.
`urllib` serves https:// as well as file:// (a mirror on a shared disk, and the tests).
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from ..utils.progress import progress_bar

CHUNK = 1 << 20


class DownloadError(ValueError):
    """A download that failed or whose content is not the expected one; the message says which."""


def default_cache_dir() -> Path:
    """Where downloads are kept: $XDG_CACHE_HOME/vilt_lab (default ~/.cache/vilt_lab)."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vilt_lab"


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file on disk, hex."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def check_sha256(what: str, actual: str, expected: str | None) -> None:
    """Raise DownloadError showing both hashes when `expected` is given and differs."""
    if expected is not None and actual.lower() != expected.lower():
        raise DownloadError(f"{what}: SHA-256 mismatch: expected {expected.lower()}, got {actual}; refused")


def download(url: str, dest: Path, expected_sha256: str | None = None, progress: bool = True) -> str:
    """`url` into `dest` (kept there for later calls); returns the file's SHA-256.

    Raises DownloadError when the transfer fails or the hash differs from `expected_sha256`
    (a downloaded file is then deleted; a cached one is left alone but still refused).
    """
    dest = Path(dest)
    if dest.is_file():
        actual = file_sha256(dest)
        check_sha256(f"{dest} (cached from {url})", actual, expected_sha256)
        return actual
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".part")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url) as response, partial.open("wb") as out:
            total = response.headers.get("Content-Length")
            # A live bar on a terminal, a line every 30 s in a log file.
            with progress_bar(
                desc=dest.name, style=progress, total=int(total) if total else None, unit="B", unit_scale=True
            ) as bar:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError) as err:
        partial.unlink(missing_ok=True)
        raise DownloadError(f"{url}: download failed: {getattr(err, 'reason', err)}") from err
    actual = digest.hexdigest()
    try:
        check_sha256(url, actual, expected_sha256)
    except DownloadError:
        partial.unlink()
        raise
    partial.rename(dest)
    return actual
