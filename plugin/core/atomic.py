"""The one way every writer replaces a file: through a temporary file beside it.

:func:`atomic_write` yields a temporary path in the target's folder (same file system, so the
final ``os.replace`` is atomic) named ``.<stem>.<pid>.tmp<suffix>`` (the suffix kept, so GDAL
and pyogrio pick the driver from it); on success the temporary file gets the mode a new file of
the user gets (0644 under the usual umask 022; safetensors and sqlite create 0600) and replaces
the target, on any failure it is removed and the target keeps its previous content.

Temporary files of a process that no longer runs (killed with ``kill -9``, a power cut) are
removed beside the target before each write (:func:`remove_stale_temporaries`): a killed
optimizer write once left 159 MB behind that no later run removed. Standard library only.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path


def temp_path(target: str | Path) -> Path:
    """The temporary path of this process for ``target``: ``.<stem>.<pid>.tmp<suffix>``."""
    t = Path(target)
    return t.with_name(f".{t.stem}.{os.getpid()}.tmp{t.suffix}")


def usual_mode() -> int:
    """The mode of a new file of the user: 0o666 less the umask (0644 under umask 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def remove_stale_temporaries(target: str | Path) -> list[Path]:
    """Remove the temporary files of ``target`` (``.<stem>.<pid>.tmp<suffix>``, and the older
    ``.<name>.<pid>.tmp``) whose process no longer runs on this machine; returns those removed.
    Files it cannot remove are left (a read-only folder fails later, with its own message)."""
    t = Path(target)
    patterns = (re.compile(rf"\.{re.escape(t.stem)}\.(\d+)\.tmp{re.escape(t.suffix)}"),
                re.compile(rf"\.{re.escape(t.name)}\.(\d+)\.tmp"))
    removed = []
    try:
        names = os.listdir(t.parent)
    except OSError:
        return removed
    for name in names:
        m = next((m for p in patterns if (m := p.fullmatch(name))), None)
        if m is None or int(m.group(1)) == os.getpid() or _pid_alive(int(m.group(1))):
            continue
        with contextlib.suppress(OSError):
            (t.parent / name).unlink()
            removed.append(t.parent / name)
    return removed


@contextlib.contextmanager
def atomic_write(target: str | Path, mode: int | None = None) -> Iterator[Path]:
    """Yield the temporary path for ``target`` (folders created); when the block ends without
    an exception, give it ``mode`` (default :func:`usual_mode`) and move it onto ``target``;
    the temporary file is removed whatever happens. Raises what the block or the file system
    raises (``OSError``), the target untouched. A block that writes nothing leaves the target
    as it was."""
    t = Path(target)
    t.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(t)
    tmp = temp_path(t)
    with contextlib.suppress(OSError):
        tmp.unlink()
    try:
        yield tmp
        if tmp.exists():
            os.chmod(tmp, usual_mode() if mode is None else mode)
            os.replace(tmp, t)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
