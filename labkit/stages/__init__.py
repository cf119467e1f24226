"""The pipeline's stages, one module each.

Each module in this package prepares its stage's data, holds its recipe (the function the stage
and the labs' experiments call) and registers a :class:`~labkit.stages.base.Stage` that declares
everything else labkit needs from it: prerequisites, the preset fields its checkpoint depends on,
its report keys, a bench slice, its LoRA option and its entries in lab 08's race.

The course's stages load in the order of :data:`COURSE`; any other module placed in this package
is found and loaded after them, and so are the modules named in the environment variable
``LABKIT_STAGES`` (comma-separated, importable names: a stage kept outside labkit, e.g. an
instructor's). Adding a stage is adding a module; :mod:`labkit.pipeline`, :mod:`labkit.bench` and
the race look stages up in :data:`STAGES`.
"""
from __future__ import annotations

import importlib
import os
import pkgutil

from labkit.stages.base import STAGES, Contender, RaceInputs, Stage, StageOutput, contenders, register

COURSE = ("pretrain", "sft", "reward", "ppo", "dpo", "dpo_online", "sft_math", "grpo")  # modules, in the course's order
_NOT_STAGES = {"base"}

__all__ = ["COURSE", "STAGES", "Contender", "RaceInputs", "Stage", "StageOutput", "contenders",
           "load_stage_modules", "register"]


def load_stage_modules(extra: str | None = None) -> dict[str, Stage]:
    """Import the course's stage modules, every other module of this package, and the modules named in
    ``extra`` (default: the ``LABKIT_STAGES`` environment variable); return the registry.

    Importing a module registers its stages; a module already imported is not imported again.
    """
    found = sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in _NOT_STAGES | set(COURSE))
    names = [f"{__name__}.{m}" for m in (*COURSE, *found)]
    extra = os.environ.get("LABKIT_STAGES", "") if extra is None else extra
    names += [name.strip() for name in extra.split(",") if name.strip()]
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as error:
            if name.startswith(__name__ + "."):
                raise
            raise ImportError(f"LABKIT_STAGES names the module {name!r}, which cannot be imported ({error}). "
                              "Put its folder on PYTHONPATH, or remove it from LABKIT_STAGES.") from error
    return STAGES


load_stage_modules()
