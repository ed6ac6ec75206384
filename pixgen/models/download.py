"""Resumable HTTP downloads into the weights cache.

A download goes to ``NAME.part`` beside its final name and is renamed into place only
when complete and (where the checksum is known) verified, so the cache never holds a
partial file under a final name. An interrupted download keeps its ``.part`` file and the
next attempt resumes it with a ``Range`` request; a server that ignores ``Range`` makes
it restart from the beginning.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pixgen.errors import WeightsError
from pixgen.version import __version__

CHUNK = 1 << 20
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_UNSATISFIABLE = re.compile(r"bytes\s+\*/(\d+)")


class DownloadInterrupted(WeightsError):
    """The connection broke mid-download; the ``.part`` file is kept for resuming."""


@dataclass(frozen=True)
class DownloadResult:
    path: Path
    sha256: str
    size: int
    resumed_from: int = 0  # bytes that were already in the .part file


def part_path(dest: Path) -> Path:
    """Where a download of ``dest`` is kept until it is complete."""
    return dest.with_name(dest.name + ".part")


def sha256_file(path: Path) -> str:
    """The sha256 of a file, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def download(
    url: str,
    dest: str | os.PathLike[str],
    *,
    sha256: str | None = None,
    progress: bool = True,
    label: str | None = None,
    timeout: float = 60.0,
) -> DownloadResult:
    """Fetch ``url`` to ``dest``: resumable, verified against ``sha256`` when given."""
    target = Path(dest)
    part = part_path(target)
    try:  # fail early, before any network traffic
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _cache_error(target.parent, exc) from None
    existed = target.exists()
    with _exclusive(target):
        if not existed and target.exists():  # another process finished it while we waited
            digest = sha256_file(target)
            if not sha256 or digest.lower() == sha256.lower():
                return DownloadResult(target, digest, target.stat().st_size)
        return _download(url, target, part, sha256, progress, label or target.name, timeout, True)


@contextlib.contextmanager
def _exclusive(target: Path) -> Iterator[None]:
    """One download of a file at a time, across processes: two pixgen runs that need the
    same weights must not append to the same ``.part`` file; the second one waits."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): no cross-process guard
        yield
        return
    # Kept outside the cache folder so that model folders hold only their files.
    folder = Path(tempfile.gettempdir()) / "pixgen-locks"
    name = hashlib.sha1(str(target.resolve()).encode()).hexdigest()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(folder / f"{name}.lock", "a+b")  # noqa: SIM115 - held throughout
    except OSError:  # no lock possible: go on without the guard
        yield
        return
    with handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _download(
    url: str,
    target: Path,
    part: Path,
    sha256: str | None,
    progress: bool,
    label: str,
    timeout: float,
    may_restart: bool,
) -> DownloadResult:
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": f"pixgen/{__version__}", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            # Our .part is at least as long as the file: complete, or junk to restart.
            total = _unsatisfiable_size(exc.headers.get("Content-Range"))
            exc.close()
            if total == offset:
                return _finish(target, part, sha256, offset, label, url)
            part.unlink(missing_ok=True)
            if may_restart:
                return _download(url, target, part, sha256, progress, label, timeout, False)
        raise WeightsError(
            f"download of {label} failed: HTTP {exc.code} {exc.reason} from {url}. "
            "The file may have moved or the server may be down; try again later, or "
            "download it another way and register it with `pixgen models import`."
        ) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise WeightsError(
            f"cannot download {label} from {url}: {reason}. Check the network (or use "
            "`pixgen models import` with files copied from another machine)."
        ) from None

    with contextlib.closing(response):
        status = getattr(response, "status", 200)
        length_header = response.headers.get("Content-Length")
        length = int(length_header) if length_header and length_header.isdigit() else None
        if offset and status == 206:
            match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != offset:
                offset = 0  # an answer we cannot splice onto our .part: start over
                response.close()
                part.unlink(missing_ok=True)
                if may_restart:
                    return _download(url, target, part, sha256, progress, label, timeout, False)
                raise WeightsError(f"download of {label} from {url}: bad Content-Range")
        elif status != 206:
            offset = 0  # the server sent the whole file (it ignored Range): restart
        total = offset + length if length is not None else None
        received = offset
        handle = _open_in_cache(part, "ab" if offset else "wb")
        try:
            with handle, _progress(progress, label, total, offset) as advance:
                while True:
                    block = response.read(CHUNK)
                    if not block:
                        break
                    handle.write(block)
                    received += len(block)
                    advance(len(block))
                handle.flush()
                os.fsync(handle.fileno())
        except (OSError, http.client.HTTPException) as exc:
            raise _interrupted(label, url, received, total, part, exc) from None
        if total is not None and received < total:
            # http.client returns a short body silently when the peer hangs up.
            raise _interrupted(label, url, received, total, part, None)
    return _finish(target, part, sha256, offset, label, url)


def _open_in_cache(path: Path, mode: str) -> Any:
    try:
        return open(path, mode)
    except OSError as exc:
        raise _cache_error(path.parent, exc) from None


def _cache_error(folder: Path, exc: OSError) -> WeightsError:
    return WeightsError(
        f"cannot write to the weights cache at {folder}: {exc.strerror or exc}. "
        "Free some space or set PIXGEN_HOME to a writable folder."
    )


def _finish(
    target: Path, part: Path, sha256: str | None, resumed_from: int, label: str, url: str
) -> DownloadResult:
    digest = sha256_file(part)
    size = part.stat().st_size
    if sha256 and digest.lower() != sha256.lower():
        part.unlink(missing_ok=True)
        raise WeightsError(
            f"checksum mismatch for {label} from {url}: expected sha256 {sha256}, got "
            f"{digest}. The download was corrupt or the file changed upstream; the bad "
            "file was deleted. Run the same command again to download it afresh."
        )
    os.replace(part, target)
    return DownloadResult(target, digest, size, resumed_from)


def _interrupted(
    label: str, url: str, received: int, total: int | None, part: Path, exc: Exception | None
) -> DownloadInterrupted:
    of = f" of {total}" if total is not None else ""
    why = f" ({exc})" if exc else ""
    return DownloadInterrupted(
        f"download of {label} from {url} was interrupted after {received}{of} bytes{why}. "
        f"The partial file is kept at {part}; run the same command again to resume."
    )


def _unsatisfiable_size(header: str | None) -> int | None:
    match = _UNSATISFIABLE.match(header or "")
    return int(match.group(1)) if match else None


@contextlib.contextmanager
def _progress(enabled: bool, label: str, total: int | None, done: int) -> Iterator[Any]:
    """A rich progress bar on stderr; yields ``advance(nbytes)``."""
    if not enabled:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    console = Console(file=sys.stderr)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task(label, total=total, completed=done)
        yield lambda n: bar.advance(task, n)


def copy_into_cache(source: Path, dest: Path) -> str:
    """Copy a local file into the cache atomically; returns its sha256."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = part_path(dest)
    digest = hashlib.sha256()
    try:
        with open(source, "rb") as src, open(tmp, "wb") as out:
            for block in iter(lambda: src.read(CHUNK), b""):
                digest.update(block)
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return digest.hexdigest()
