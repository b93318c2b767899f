"""A job's output files appear together or not at all, never over a file the user already has.

`OutputSet` hands out temporary paths in the target folder, and on success renames them to their
final names as a set: it picks a fresh stem (``chair``, ``chair_2``, ...) unless told to overwrite,
writes a small journal first, links each temporary to its final name without replacing anything,
then deletes the journal. A cancel before the commit, an exception or Ctrl-C removes the
temporaries; a kill -9 leaves temporaries and perhaps a journal, which `clean_stale` (run when a
server or job starts) removes, rolling back any half-done commit. Files get the mode the user's
umask gives ordinary files (temporaries start as 0600).

Temporary names carry the writing process's pid and a per-process token, so a cleaner never
touches a live process's files.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import threading
import time
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Union

from ..errors import BadInputError, Cancelled

log = logging.getLogger("trellis.output")

PathLike = Union[str, Path]
SUFFIXES = {"glb": ".glb", "ply": ".ply", "slat": ".slat.npz"}  # default file kind -> suffix (TRELLIS)
# every suffix a job of any family writes: a fresh stem is free of all of them (TRELLIS.2's sidecar too)
ALL_SUFFIXES = (".glb", ".ply", ".slat.npz", ".trellis2.npz")
SESSION = secrets.token_hex(4)       # this process's token in temporary names
TEMP_TAG = ".trellis-tmp-"           # ".<final name>.trellis-tmp-<pid>-<session>-<random>"
PARTIAL_TAG = ".partial-"            # export.atomic_path's ".<name>.partial-<pid>-<session>-<random>"
JOURNAL_PREFIX = ".trellis-commit-"  # ".trellis-commit-<pid>-<session>-<random>.json"
LEGACY_TEMP_AGE_S = 600              # pid-less temporaries of older versions: removed once this old
_OWNER = re.compile(r"(?:\.trellis-tmp-|\.partial-|^\.trellis-commit-)(\d+)-([0-9a-f]{8})-")
_LEGACY = re.compile(r"^\..+\.(?:glb|ply|slat\.npz|trellis2\.npz)\.partial-[a-z0-9_]{8}$")  # older versions' mkstemp names

_committed: List[str] = []
_committed_lock = threading.Lock()
_umask_lock = threading.Lock()


# ---------------------------------------------------------------------------- modes
def current_umask() -> int:
    """The process umask, read without changing it where /proc allows (os.umask is process-global)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def user_file_mode() -> int:
    """Mode of a file the user saves: 0666 minus the umask."""
    return 0o666 & ~current_umask()


def apply_user_mode(path: PathLike) -> None:
    with contextlib.suppress(OSError):  # file systems without modes (FAT, some shares)
        os.chmod(path, user_file_mode())


# ---------------------------------------------------------------------------- names
def temp_name(final_name: str) -> str:
    return f".{final_name}{TEMP_TAG}{os.getpid()}-{SESSION}-{secrets.token_hex(4)}"


def partial_prefix(final_name: str) -> str:
    """Prefix for export.atomic_path's mkstemp temporaries (owner pid and session inside)."""
    return f".{final_name}{PARTIAL_TAG}{os.getpid()}-{SESSION}-"


def stem_is_free(folder: Path, stem: str, suffixes: Iterable[str]) -> bool:
    return not any(os.path.lexists(folder / f"{stem}{s}") for s in suffixes)


def fresh_stem(folder: PathLike, stem: str, suffixes: Iterable[str] = ALL_SUFFIXES) -> str:
    """`stem`, or `stem_2`, `stem_3`, ... : the first whose files (any of `suffixes`) do not exist yet."""
    folder, suffixes = Path(folder), tuple(suffixes)
    candidate, k = stem, 1
    while not stem_is_free(folder, candidate, suffixes):
        k += 1
        candidate = f"{stem}_{k}"
    return candidate


# ------------------------------------------------------------------------- cleanup
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _is_stale(name: str, path: Path) -> Optional[bool]:
    """True for a leftover of a dead writer, False for a live one's, None for files that are not ours."""
    m = _OWNER.search(name)
    if m:
        pid, session = int(m.group(1)), m.group(2)
        if pid == os.getpid():
            return session != SESSION
        return not _pid_alive(pid)
    if _LEGACY.match(name):  # an older version's temporary, without an owner
        with contextlib.suppress(OSError):
            return time.time() - path.stat().st_mtime > LEGACY_TEMP_AGE_S
    return None


def _roll_back(journal: Path) -> List[str]:
    """Undo a commit that a killed process left half done: remove what it had renamed, and its temporaries."""
    removed = []
    try:
        entries = json.loads(journal.read_text())["entries"]
    except (OSError, ValueError, KeyError, TypeError):
        entries = []
    for e in entries:
        try:
            final, temp = journal.parent / str(e["final"]), journal.parent / str(e["temp"])
            st = os.lstat(final)
            if (st.st_ino, st.st_dev) == (int(e["ino"]), int(e["dev"])):
                final.unlink()
                removed.append(str(final))
        except (OSError, KeyError, TypeError, ValueError):
            pass
        with contextlib.suppress(OSError, KeyError, TypeError):
            (journal.parent / str(e["temp"])).unlink()
    with contextlib.suppress(OSError):
        journal.unlink()
    return removed


def clean_stale(folder: PathLike) -> List[str]:
    """Remove temporaries and roll back unfinished commits of dead writers in `folder`; returns what went."""
    folder = Path(folder)
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    removed = []
    for name in names:  # journals first: they name final files that must go too
        if name.startswith(JOURNAL_PREFIX) and name.endswith(".json") and _is_stale(name, folder / name):
            removed += _roll_back(folder / name)
            removed.append(str(folder / name))
    for name in names:
        path = folder / name
        if (TEMP_TAG in name or PARTIAL_TAG in name) and name.startswith(".") and _is_stale(name, path):
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(str(path))
    if removed:
        log.info("removed %d leftover file(s) of unfinished jobs in %s", len(removed), folder)
    return removed


def committed_files() -> List[str]:
    """Every final path this process has committed (the CLI's Ctrl-C message reports them)."""
    with _committed_lock:
        return list(_committed)


# ------------------------------------------------------------------------ the set
def _fsync(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _place(temp: Path, final: Path, overwrite: bool) -> None:
    """Give `temp` the name `final`; without `overwrite`, FileExistsError if `final` exists (even racing)."""
    if overwrite:
        os.replace(temp, final)
        return
    try:
        os.link(temp, final)
    except FileExistsError:
        raise
    except OSError:  # no hard links here (FAT, some shares): check-then-rename
        if os.path.lexists(final):
            raise FileExistsError(final) from None
        os.replace(temp, final)
        return
    temp.unlink()


class OutputSet:
    """Temporary paths for one job's files, committed together under a fresh (or the given) stem.

    ``with OutputSet(folder, "chair", ["glb", "slat"], cancel=ev) as out: write(out.temp("glb")) ...``;
    afterwards ``out.paths`` maps kind -> final path. `kinds` is a list of `SUFFIXES` keys or a mapping
    kind -> suffix (TRELLIS.2: ``{"glb": ".glb", "slat": ".trellis2.npz"}``). `cancel` (``is_set()``) is checked just before
    the commit; once the commit starts it completes.
    """

    def __init__(self, folder: PathLike, stem: str, kinds: Iterable[str], overwrite: bool = False, cancel=None):
        self.folder = Path(folder).expanduser()
        if self.folder.exists() and not self.folder.is_dir():
            raise BadInputError(f"the output folder is a file: {self.folder}", hint="Choose a folder for the outputs.")
        self.folder.mkdir(parents=True, exist_ok=True)
        clean_stale(self.folder)
        self.stem = stem
        self.suffixes: Dict[str, str] = dict(kinds) if isinstance(kinds, dict) else {k: SUFFIXES[k] for k in kinds}
        self.kinds = list(self.suffixes)
        self.overwrite = overwrite
        self.cancel = cancel
        self._temps: Dict[str, Path] = {k: self.folder / temp_name(f"{stem}{self.suffixes[k]}") for k in self.kinds}
        self.paths: Dict[str, str] = {}

    def temp(self, kind: str) -> Path:
        return self._temps[kind]

    def __enter__(self) -> "OutputSet":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None and self.cancel is not None and self.cancel.is_set():
            self.discard()
            raise Cancelled("cancelled while writing the files; nothing was written")
        if exc_type is not None:
            self.discard()
            return False
        try:
            self.commit()
        except BaseException:
            self.discard()
            raise
        return False

    def discard(self) -> None:
        for temp in self._temps.values():
            with contextlib.suppress(OSError):
                temp.unlink()

    def commit(self) -> Dict[str, str]:
        missing = [str(t) for t in self._temps.values() if not t.is_file()]
        if missing:
            raise IOError(f"output files were not written: {', '.join(missing)}")
        for temp in self._temps.values():
            apply_user_mode(temp)
            _fsync(temp)
        suffixes = ALL_SUFFIXES
        stem = self.stem if self.overwrite else fresh_stem(self.folder, self.stem, suffixes)
        for _ in range(1000):  # another writer may take a name between the check and the link
            try:
                self._commit_as(stem)
                break
            except FileExistsError:
                stem = fresh_stem(self.folder, f"{self.stem}_{secrets.token_hex(2)}", suffixes)
        else:
            raise IOError(f"could not find a free name for {self.stem} in {self.folder}")
        with _committed_lock:
            _committed.extend(self.paths.values())
        return self.paths

    def _commit_as(self, stem: str) -> None:
        finals = {k: self.folder / f"{stem}{self.suffixes[k]}" for k in self.kinds}
        entries = []
        for k in self.kinds:
            st = os.stat(self._temps[k])
            entries.append({"final": finals[k].name, "temp": self._temps[k].name, "ino": st.st_ino, "dev": st.st_dev})
        journal = self.folder / f"{JOURNAL_PREFIX}{os.getpid()}-{SESSION}-{secrets.token_hex(4)}.json"
        journal_tmp = self.folder / temp_name(journal.name)
        journal_tmp.write_text(json.dumps({"stem": stem, "entries": entries}))
        _fsync(journal_tmp)
        os.replace(journal_tmp, journal)
        placed = []
        try:
            for k in self.kinds:
                _place(self._temps[k], finals[k], self.overwrite)
                placed.append(k)
        except BaseException:
            for k in placed:  # the set is incomplete: what this commit placed goes again
                with contextlib.suppress(OSError):
                    finals[k].unlink()
            with contextlib.suppress(OSError):
                journal.unlink()
            raise
        journal.unlink()
        self.paths = {k: str(finals[k].resolve()) for k in self.kinds}
