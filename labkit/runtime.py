"""Where things run and where they are kept: device, seeding, Colab detection, cache dir.

This is the one place that decides the device and the cache directory (one obvious place for each
concern). Everything else asks here.
"""
from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import numpy as np
import torch


def device() -> torch.device:
    """The best available device: CUDA, then Apple's MPS, then the CPU.

    Set ``LABKIT_DEVICE=cpu`` (or ``cuda``, ``mps``) to override. Under ``accelerate launch`` with
    several processes each process gets its own device (``cuda:0``, ``cuda:1``, …; the CPU for all).
    """
    if launched():
        own = distributed().device
        return torch.device("cpu") if own.type == "cpu" else own
    return _best_device()


def _best_device() -> torch.device:
    """This machine's best device (or ``LABKIT_DEVICE``), whatever the number of processes."""
    forced = os.environ.get("LABKIT_DEVICE")
    if forced:
        return _tensor_cores(torch.device(forced))
    if torch.cuda.is_available():
        return _tensor_cores(torch.device("cuda"))
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _tensor_cores(device: torch.device) -> torch.device:
    """On CUDA, let float32 matrix products run on the tensor cores as TensorFloat-32.

    Every stage trains in float32 (see ``train.common``: a T4 has no bfloat16). TF32 keeps float32's
    range and rounds the products' inputs to a 10-bit mantissa, which training does not notice; GPUs
    from the A100 on run it several times faster than full float32, and older GPUs ignore the switch.
    The CPU's numbers are untouched.
    """
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
    return device


# ------------------------------------------------------------------ the same float sums on every x86 CPU

REFERENCE_CPU_KERNELS = "avx2"  # the vector kernels the course's reference runs used (results/*.json, "kernels")


def pin_cpu_kernels() -> str | None:
    """Make PyTorch's CPU kernels the reference runs' (AVX2) on any x86 CPU that has AVX2; return the
    kernels PyTorch will use (None where nothing was pinned).

    PyTorch picks, once, the widest vector kernels the CPU offers for its element-wise operations and
    reductions (softmax, norms, sums): AVX2 or AVX-512. The two add floats in a different order, so
    their sums differ in the last bits, and a small model's training amplifies that (PPO's win rate
    once moved by points between an AVX2 and an AVX-512 machine). With the AVX2 kernels an AVX-512 AMD
    EPYC repeats the AVX2 reference run bit for bit: the slow tier's every stage and demonstration
    (lab 01's memorisation run also with one thread), at about the same speed. The matrix products
    (MKL) needed no pinning there; a CPU of another maker may still take other paths through them.

    Called when labkit is imported, before PyTorch computes anything. ``ATEN_CPU_CAPABILITY`` set by
    you (``avx512``, ``default``) wins. If PyTorch has already computed with other kernels in this
    process (a notebook that ran torch code before ``import labkit``), they cannot change any more:
    a warning says so once, and a restart with labkit imported first fixes it.
    """
    import platform

    if os.environ.get("ATEN_CPU_CAPABILITY") or platform.machine().lower() not in ("x86_64", "amd64", "x86"):
        return None
    try:
        has_avx2 = torch.cpu._is_avx2_supported()  # asks cpuinfo; does not fix the kernels yet
    except Exception:  # noqa: BLE001 -- a private helper: without it, leave PyTorch's choice alone
        return None
    if not has_avx2:
        return None  # an older CPU: its own kernels (asking it for AVX2 would crash)
    os.environ["ATEN_CPU_CAPABILITY"] = REFERENCE_CPU_KERNELS
    chosen = cpu_kernels()
    if chosen.lower() != REFERENCE_CPU_KERNELS:
        import warnings

        warnings.warn(f"PyTorch had already computed with its {chosen} kernels before labkit was imported, so this "
                      f"process's float sums differ slightly from the reference runs' ({REFERENCE_CPU_KERNELS.upper()}) "
                      "and trained numbers may too. Restart the kernel and import labkit before running any "
                      "PyTorch code (or set ATEN_CPU_CAPABILITY=avx2 before Python starts).", stacklevel=2)
    return chosen


def cpu_kernels() -> str:
    """The vector kernels PyTorch's CPU operations use in this process (``AVX2``, ``AVX512``, …)."""
    return torch.backends.cpu.get_cpu_capability()


# ------------------------------------------------------------------ several processes (data parallel)

def launched() -> bool:
    """True when this program is one of several data-parallel processes (``accelerate launch
    --num_processes N`` with N > 1, or ``torchrun``): the launcher sets ``WORLD_SIZE`` (MPI its own)."""
    names = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
    return any(int(os.environ.get(name, "1") or 1) > 1 for name in names)


def distributed():
    """accelerate's ``PartialState`` of this process: its rank, the number of processes, a barrier.

    Started on the first call (which joins the process group: NCCL between GPUs, gloo between CPU
    processes). Only called when :func:`launched`; a single process never starts one.
    """
    from accelerate import PartialState

    return PartialState(cpu=_best_device().type == "cpu")


def processes() -> int:
    """How many data-parallel processes train together: N under ``accelerate launch --num_processes N``, else 1."""
    return distributed().num_processes if launched() else 1


def is_main_process() -> bool:
    """True in the one process that writes checkpoints and reports and prints (always true when alone)."""
    return distributed().is_main_process if launched() else True


def wait_for_everyone() -> None:
    """A barrier: every process waits here until all have arrived (nothing to wait for when alone)."""
    if launched():
        distributed().wait_for_everyone()


def lone_process_note() -> str | None:
    """What to do when ``accelerate launch --num_processes N`` (N > 1) started this one process only.

    Without GPUs (or an MPI setup from ``accelerate config``), ``accelerate launch`` runs its simple
    launcher: one process, whatever ``--num_processes`` says. Its ``--multi_gpu`` launcher (torchrun
    underneath) starts the N processes, and on CPUs labkit then joins them with gloo.
    """
    asked_for_several = "ACCELERATE_USE_CPU" in os.environ and "MASTER_ADDR" in os.environ  # set by that launcher
    if not asked_for_several or launched():
        return None
    return ("note: accelerate launch started one process only (its simple launcher: no GPUs, no MPI), so this run "
            "is not data parallel. On CPUs start N processes with `accelerate launch --multi_gpu --num_processes N "
            "-m labkit ...` (or `torchrun --nproc_per_node N -m labkit ...`); labkit uses gloo between them.")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch so the same seed gives the same run."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def in_colab() -> bool:
    """True inside a Google Colab runtime."""
    return "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ


def home() -> Path:
    """The cache directory for checkpoints and reports: ``$LABKIT_HOME`` or ``~/.cache/labkit``."""
    path = Path(os.environ.get("LABKIT_HOME") or Path.home() / ".cache" / "labkit").expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as error:
        raise NotADirectoryError(f"labkit's cache folder {path} cannot be made: a part of that path is a file. "
                                 "Set LABKIT_HOME to a folder (or unset it for ~/.cache/labkit).") from error
    except OSError as error:
        raise OSError(error.errno, f"labkit's cache folder {path} cannot be made ({error.strerror}). Set "
                                   "LABKIT_HOME to a folder you may write.") from error
    return path


def check_writable(folder: Path, what: str = "labkit's cache folder") -> None:
    """Raise an ``OSError`` naming ``folder`` unless a file can be created in it (checked before training,
    so that minutes of training are not lost to a read-only or full disk)."""
    import errno
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".labkit-write-check-"):
            pass
    except OSError as error:
        why = {errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
               errno.ENOSPC: "the disk is full", errno.ENOTDIR: "a part of the path is a file"}.get(
                   error.errno, error.strerror or str(error))
        raise OSError(error.errno, f"{what} {folder} is not writable ({why}). Set LABKIT_HOME to a writable "
                                   "folder with some free space, and run again.") from error


def repo_root() -> Path:
    """The repository checkout this package lives in (holds ``datasets/`` and ``labs/``)."""
    return Path(__file__).resolve().parent.parent


def versions() -> dict[str, str]:
    """Versions of the libraries the workbook relies on, for the environment check in lab 00."""
    import importlib.metadata as md

    out = {"python": sys.version.split()[0]}
    for name in ["torch", "transformers", "trl", "peft", "accelerate", "datasets", "tokenizers",
                 "safetensors", "ipywidgets", "plotly", "pandas"]:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


# Warnings a learner cannot act on, raised inside the libraries labkit drives (matched by message,
# so any other warning still shows). Each names what labkit does that triggers it.
_THIRD_PARTY_WARNINGS = (
    # TRL's configs pass transformers' old argument name while transformers 5.x renames it.
    (FutureWarning, r"`gradient_checkpointing` is deprecated"),
    # peft and TRL read the old property name of a model while wrapping it.
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated"),
)


def quiet_third_party() -> None:
    """Silence third-party chatter in notebooks and scripts; labkit's own progress bars stay.

    transformers and datasets write their own progress bars ("Loading weights", "Writing model
    shards", "Tokenizing…") and info logs between the explanations and the results; here they are
    switched off, with the FutureWarnings listed in ``_THIRD_PARTY_WARNINGS``. Called when labkit is
    imported; call ``transformers.logging.set_verbosity_info()`` afterwards to see them again.
    """
    import warnings

    import datasets
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    for category, message in _THIRD_PARTY_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)


def require_hub(model_id: str | None, timeout: float = 3.0) -> None:
    """Fail at once, saying what to do, if ``model_id`` needs the Hugging Face Hub and it is unreachable.

    A local directory, or ``HF_HUB_OFFLINE=1`` (models already in the local cache), needs no network.
    """
    import socket
    from urllib.parse import urlparse

    if not model_id or Path(model_id).expanduser().exists():
        return
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}:
        return
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        raise RuntimeError(
            f"The hub preset needs the Hugging Face Hub to download {model_id!r}, and {host} cannot be "
            "reached from here. Connect to the internet and run again; or download the model on a "
            "connected machine (`huggingface-cli download MODEL`), copy the cache and set "
            "HF_HUB_OFFLINE=1; or choose a preset that needs no download: LABKIT_PRESET=cpu "
            "(or gpu on a GPU)."
        ) from None
