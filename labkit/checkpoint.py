"""Checkpoints that are either complete or absent, never half-written, and one writer at a time.

A checkpoint is a directory: the model's ``save_pretrained`` files (safetensors), the tokenizer,
and ``labkit.json`` (metadata such as the preset, a config hash and metrics, and the size of every
other file). ``labkit.json`` is written last, so its presence marks a checkpoint as finished, and
:func:`problems` checks the rest against it before anything trusts it: a file missing, cut short
(a full disk, a copy that stopped) or a ``labkit.json`` that does not parse makes it broken.

Saving is atomic: everything is written into a hidden sibling directory, flushed to disk, and
only then renamed into place. Interrupt a save at any moment (an exception, Ctrl-C in a notebook)
and ``path`` still holds either the previous complete checkpoint or nothing.

Two processes (two notebooks, a notebook and ``python -m labkit pipeline``) may share a cache:
:func:`writer_lock` lets one of them write a checkpoint while the other waits, and the leftovers of
an interrupted save are tidied only by the lock's holder, never from under a live writer.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import struct
import threading
import uuid
from pathlib import Path
from typing import Callable

import torch
import transformers

from labkit import heads, runtime

METADATA_FILE = "labkit.json"
FILES_KEY = "files"  # in labkit.json: {file name: size in bytes} of every other file of the checkpoint


class BrokenCheckpointError(RuntimeError):
    """A checkpoint directory exists but cannot be trusted; the message names it and says what to do."""


# ------------------------------------------------------------------------------- one writer at a time

_thread_locks: dict[str, threading.RLock] = {}
_held: dict[str, int] = {}   # checkpoint path -> file descriptor of its lock file, while this process holds it
_guard = threading.Lock()


def _lock_file(path: Path) -> Path:
    return path.parent / f".{path.name}.lock"


@contextlib.contextmanager
def writer_lock(path: str | Path, on_wait: Callable[[], None] | None = None):
    """Hold the one-writer lock of the checkpoint at ``path`` (another process or thread waits for it).

    ``on_wait()`` is called once if the lock is taken and this call has to wait. The lock is a
    hidden file beside ``path`` (``.NAME.lock``), locked with ``flock`` and removed on release; the
    same thread may take it again inside (re-entrant). Where ``flock`` does not exist (Windows) only
    threads of one process are kept apart.
    """
    path = Path(path).expanduser().absolute()
    key = str(path)
    with _guard:
        thread_lock = _thread_locks.setdefault(key, threading.RLock())
    waited = False
    if not thread_lock.acquire(blocking=False):
        waited = True
        if on_wait is not None:
            on_wait()
        thread_lock.acquire()
    try:
        if key in _held:  # this thread holds it already
            yield path
            return
        _held[key] = _acquire_file_lock(path, None if waited else on_wait)
        try:
            yield path
        finally:
            _release_file_lock(path, _held.pop(key))
    finally:
        thread_lock.release()


def _acquire_file_lock(path: Path, on_wait: Callable[[], None] | None) -> int:
    try:
        import fcntl
    except ImportError:  # Windows: the thread lock alone
        return -1
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = _lock_file(path)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
                on_wait = None
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:  # the holder before us removes the file on release: make sure ours is still the one in place
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def _release_file_lock(path: Path, fd: int) -> None:
    if fd < 0:
        return
    import fcntl

    with contextlib.suppress(FileNotFoundError):
        os.unlink(_lock_file(path))  # while still holding it: a waiter then finds the file gone and retries
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


# ------------------------------------------------------------------------------- is it complete?

def _safetensors_problem(file: Path) -> str | None:
    """Why ``file`` is not a whole safetensors file (its header promises more bytes than it has), or None."""
    try:
        with open(file, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return f"{file.name} is cut short ({file.stat().st_size} bytes)"
            (n,) = struct.unpack("<Q", head)
            header = json.loads(f.read(n))
    except (OSError, ValueError, struct.error) as error:
        return f"{file.name} is not a readable safetensors file ({error.__class__.__name__})"
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    if file.stat().st_size < 8 + n + end:
        return f"{file.name} is cut short ({file.stat().st_size:,} bytes, its header describes {8 + n + end:,})"
    return None


def problems(path: str | Path) -> list[str]:
    """What is wrong with the checkpoint at ``path``: [] for a complete one; ["absent"] if nothing is there.

    A complete checkpoint has a ``labkit.json`` that parses, every file it lists at the size it
    lists, and whole safetensors files. (Checkpoints saved before ``labkit.json`` listed its files
    are checked for ``config.json`` and whole weights.)
    """
    path = Path(path)
    if not path.exists():
        return ["absent"]
    if not path.is_dir():
        return [f"{path} is a file, not a checkpoint directory"]
    meta_file = path / METADATA_FILE
    if not meta_file.is_file():
        return [f"{METADATA_FILE} is missing (the save did not finish, or it was deleted)"]
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        return [f"{METADATA_FILE} cannot be read ({error})"]
    found = []
    files = meta.get(FILES_KEY) if isinstance(meta, dict) else None
    expected = files if isinstance(files, dict) else {"config.json": None}
    for name, size in expected.items():
        file = path / name
        if not file.is_file():
            found.append(f"{name} is missing")
        elif size is not None and file.stat().st_size != size:
            found.append(f"{name} has {file.stat().st_size:,} bytes, {METADATA_FILE} recorded {size:,}")
    for weights in sorted(path.glob("*.safetensors")):
        if (problem := _safetensors_problem(weights)) and problem not in found:
            found.append(problem)
    return found


def is_complete(path: str | Path) -> bool:
    """True if ``path`` holds a complete, whole checkpoint (see :func:`problems`)."""
    return not problems(path)


def is_broken(path: str | Path) -> bool:
    """True if something is at ``path`` but it is not a complete checkpoint."""
    return problems(path) not in ([], ["absent"])


# ------------------------------------------------------------------------------- saving

def _siblings(path: Path, kind: str) -> list[Path]:
    """Hidden work directories next to ``path``: ``.NAME.tmp-*`` (being written) or ``.NAME.old-*`` (replaced)."""
    return sorted(path.parent.glob(f".{path.name}.{kind}-*"))


def _fsync_tree(root: Path) -> None:
    """Flush every file under ``root`` (and the directories) to disk, so a rename cannot expose empty files."""
    for item in [*root.rglob("*"), root]:
        if item.is_file():
            with open(item, "rb") as f:
                os.fsync(f.fileno())
        else:
            _fsync_dir(item)


def _fsync_dir(path: Path) -> None:
    try:  # directories cannot be opened this way on Windows; there the rename is durable enough
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def pid_alive(pid: int) -> bool:
    """Whether the process ``pid`` (on this machine) is still running."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _owner_gone(work_dir: Path, own_tag: str | None) -> bool:
    """Whether ``.NAME.tmp-PID-XXXX`` (or ``.old-``) belongs to this save (``own_tag``) or a process that has ended."""
    tag = work_dir.name.rsplit("-", 2)
    if own_tag is not None and work_dir.name.endswith(own_tag):
        return True
    try:
        return not pid_alive(int(tag[-2]))
    except (ValueError, IndexError):
        return True  # not ours to understand: an old leftover


def recover(path: str | Path, own_tag: str | None = None) -> None:
    """Tidy up after an interrupted save (call it holding :func:`writer_lock`): if ``path`` went missing
    between a save's two renames, put the previous complete checkpoint back; remove the work
    directories of this save (``own_tag``) and of processes that have ended, never a live one's."""
    path = Path(path).expanduser().absolute()
    if not path.parent.is_dir():
        return
    olds = [p for p in _siblings(path, "old") if is_complete(p) and _owner_gone(p, own_tag)]
    if not path.exists() and olds:
        os.replace(olds[-1], path)  # a save died between its two renames: put the old checkpoint back
    for leftover in _siblings(path, "tmp") + _siblings(path, "old"):
        if leftover.exists() and _owner_gone(leftover, own_tag):
            shutil.rmtree(leftover, ignore_errors=True)


def _looks_like_a_checkpoint(path: Path) -> bool:
    return any((path / name).exists() for name in (METADATA_FILE, "config.json", "model.safetensors"))


def save_checkpoint(path: str | Path, model, tokenizer=None, metadata: dict | None = None) -> Path:
    """Save ``model`` (+ ``tokenizer`` and ``metadata``) to the directory ``path``, atomically.

    An existing checkpoint at ``path`` (complete, or a broken one labkit wrote) is replaced only once
    the new one is fully on disk; a directory that is no checkpoint is never touched. ``metadata``
    must be JSON-serialisable; ``labkit.json`` also records each file's size. Only one process or
    thread writes ``path`` at a time (:func:`writer_lock`). Returns ``path``.
    """
    path = Path(path).expanduser().absolute()
    metadata = dict(metadata or {})
    json.dumps(metadata)  # fail early if not serialisable
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _storage_error(error, path.parent) from error
    with writer_lock(path):
        recover(path)
        if path.exists() and (not path.is_dir() or (any(path.iterdir()) and not _looks_like_a_checkpoint(path))):
            raise FileExistsError(
                f"{path} exists and is not a labkit checkpoint (no {METADATA_FILE}); refusing to overwrite it. "
                "Delete it or choose another path."
            )
        tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp, old = path.parent / f".{path.name}.tmp-{tag}", path.parent / f".{path.name}.old-{tag}"
        try:
            tmp.mkdir()
            model.save_pretrained(tmp)  # safetensors
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)
            metadata[FILES_KEY] = {str(f.relative_to(tmp)): f.stat().st_size for f in sorted(tmp.rglob("*"))
                                   if f.is_file()}
            (tmp / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True),
                                             encoding="utf-8")  # last: marks it complete
            _fsync_tree(tmp)
            if path.exists():
                os.replace(path, old)  # keep the previous checkpoint until the new one is in place
            os.replace(tmp, path)
            _fsync_dir(path.parent)
        except OSError as error:
            raise _storage_error(error, path) from error
        finally:
            recover(path, own_tag=tag)  # on success: deletes `old`; on interruption: restores it, deletes `tmp`
    return path


def _storage_error(error: OSError, path: Path) -> OSError:
    """``error`` again, with a message that names ``path`` and says what to do (full disk, read-only, …)."""
    where = runtime.home()
    advice = {
        errno.ENOSPC: f"the disk is full. Free some space (or set LABKIT_HOME to a folder on a larger disk; now {where})",
        errno.EROFS: f"the file system is read-only. Set LABKIT_HOME to a writable folder (now {where})",
        errno.EACCES: f"permission denied. Set LABKIT_HOME to a folder you may write (now {where})",
        errno.ENOTDIR: f"a part of that path is a file, not a folder. Set LABKIT_HOME to a folder (now {where})",
    }.get(error.errno)
    if advice is None:
        return error
    return type(error)(error.errno, f"cannot write the checkpoint {path}: {advice}")


def load_checkpoint(path: str | Path, device: str | torch.device | None = None, *, stage: str | None = None):
    """Load ``(model, tokenizer, metadata)`` from a checkpoint written by :func:`save_checkpoint`.

    The model class is the one that was saved (``config.architectures``): a causal LM, or e.g. a
    reward model (``LlamaForSequenceClassification``, or its summed-score form: :mod:`labkit.heads`).
    ``tokenizer`` is ``None`` if none was saved.
    The model is put on ``device`` (default: ``labkit.runtime.device()``) in eval mode. ``stage``
    (e.g. ``"sft"``) only improves the error message when the checkpoint is missing.
    """
    path = Path(path).expanduser().absolute()
    found = problems(path)
    if found and path.parent.is_dir() and (_siblings(path, "old") or _siblings(path, "tmp")):
        with writer_lock(path):  # an interrupted save may have left the previous checkpoint aside
            recover(path)
        found = problems(path)
    name = stage or "<stage>"
    if found == ["absent"]:
        raise FileNotFoundError(
            f"No complete checkpoint at {path} (missing {METADATA_FILE}). Build it with "
            f"labkit.pipeline.ensure('{name}') or `python -m labkit pipeline --stages {name}`."
        )
    if found:
        raise BrokenCheckpointError(broken_message(path, found, stage))
    metadata = json.loads((path / METADATA_FILE).read_text(encoding="utf-8"))
    metadata.pop(FILES_KEY, None)
    model_class = heads.model_class(transformers.AutoConfig.from_pretrained(str(path)))
    model = (model_class or transformers.AutoModelForCausalLM).from_pretrained(str(path))
    model.to(torch.device(device) if device is not None else runtime.device()).eval()
    has_tokenizer = (path / "tokenizer_config.json").is_file() or (path / "tokenizer.json").is_file()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(path)) if has_tokenizer else None
    return model, tokenizer, metadata


def broken_message(path: Path, found: list[str], stage: str | None = None) -> str:
    """One line: which checkpoint is broken, why, and how to mend it."""
    fix = (f"train it again with `python -m labkit pipeline --fresh --stages {stage}` (or "
           f"labkit.pipeline.ensure('{stage}'), which retrains a broken checkpoint), or delete {path}"
           if stage else f"delete {path} and save it again")
    return f"The checkpoint {path} is broken: {'; '.join(found)}. To mend it, {fix}."
