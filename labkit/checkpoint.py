"""Checkpoints that are either complete or absent, never half-written.

A checkpoint is a directory: the model's ``save_pretrained`` files (safetensors), the tokenizer,
and ``labkit.json`` (metadata such as the preset, a config hash and metrics). ``labkit.json`` is
written last, so its presence marks a complete checkpoint.

Saving is atomic: everything is written into a hidden sibling directory, flushed to disk, and
only then renamed into place. Interrupt a save at any moment (an exception, Ctrl-C in a notebook)
and ``path`` still holds either the previous complete checkpoint or nothing.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import torch
import transformers

from labkit import runtime

METADATA_FILE = "labkit.json"


def is_complete(path: str | Path) -> bool:
    """True if ``path`` holds a complete checkpoint (its ``labkit.json`` exists)."""
    return (Path(path) / METADATA_FILE).is_file()


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


def _recover(path: Path) -> None:
    """Tidy up after an interrupted save: restore a replaced checkpoint if ``path`` went missing, drop leftovers."""
    olds = [p for p in _siblings(path, "old") if is_complete(p)]
    if not path.exists() and olds:
        os.replace(olds[-1], path)  # a save died between its two renames: put the old checkpoint back
    for leftover in _siblings(path, "tmp") + _siblings(path, "old"):
        shutil.rmtree(leftover, ignore_errors=True)


def save_checkpoint(path: str | Path, model, tokenizer=None, metadata: dict | None = None) -> Path:
    """Save ``model`` (+ ``tokenizer`` and ``metadata``) to the directory ``path``, atomically.

    An existing complete checkpoint at ``path`` is replaced only once the new one is fully on
    disk. ``metadata`` must be JSON-serialisable. Returns ``path``.
    """
    path = Path(path).expanduser().absolute()
    meta_text = json.dumps(metadata or {}, indent=2, sort_keys=True)  # fail early if not serialisable
    path.parent.mkdir(parents=True, exist_ok=True)
    _recover(path)
    if path.exists() and not is_complete(path) and (not path.is_dir() or any(path.iterdir())):
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
        (tmp / METADATA_FILE).write_text(meta_text, encoding="utf-8")  # last: marks it complete
        _fsync_tree(tmp)
        if path.exists():
            os.replace(path, old)  # keep the previous checkpoint until the new one is in place
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        _recover(path)  # on success: deletes `old`; on interruption: restores it and deletes `tmp`
    return path


def load_checkpoint(path: str | Path, device: str | torch.device | None = None, *, stage: str | None = None):
    """Load ``(model, tokenizer, metadata)`` from a checkpoint written by :func:`save_checkpoint`.

    The model class is the one that was saved (``config.architectures``): a causal LM, or e.g. a
    reward model (``LlamaForSequenceClassification``). ``tokenizer`` is ``None`` if none was saved.
    The model is put on ``device`` (default: ``labkit.runtime.device()``) in eval mode. ``stage``
    (e.g. ``"sft"``) only improves the error message when the checkpoint is missing.
    """
    path = Path(path).expanduser().absolute()
    if path.parent.is_dir():
        _recover(path)
    if not is_complete(path):
        name = stage or "<stage>"
        raise FileNotFoundError(
            f"No complete checkpoint at {path} (missing {METADATA_FILE}). Build it with "
            f"labkit.pipeline.ensure('{name}') or `python -m labkit pipeline --stages {name}`."
        )
    metadata = json.loads((path / METADATA_FILE).read_text(encoding="utf-8"))
    architecture = (transformers.AutoConfig.from_pretrained(str(path)).architectures or [""])[0]
    model_class = getattr(transformers, architecture, None) if architecture else None
    model = (model_class or transformers.AutoModelForCausalLM).from_pretrained(str(path))
    model.to(torch.device(device) if device is not None else runtime.device()).eval()
    has_tokenizer = (path / "tokenizer_config.json").is_file() or (path / "tokenizer.json").is_file()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(path)) if has_tokenizer else None
    return model, tokenizer, metadata
