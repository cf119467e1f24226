"""A new stage is one module: written, registered, trained by the pipeline, reported and benched, with no
other file edited; and no module outside a stage's own branches on a stage's name."""
import ast
import os
import sys
import textwrap
from pathlib import Path

import pytest

import labkit.stages
from labkit import bench, checkpoint, pipeline
from labkit.presets import get_preset
from labkit.stages import STAGES, load_stage_modules

# The whole of a small extra stage: a few more instruction-tuning steps from the pretrained model.
# It declares its prerequisite, the preset fields it keys on, its report and its bench slice.
EXTRA_STAGE = textwrap.dedent('''
    """Stage ``sft_short``: sixteen conversations of instruction tuning, from the pretrained model."""
    import dataclasses

    from labkit import checkpoint
    from labkit.stages.base import Stage, StageOutput, register
    from labkit.stages.sft import sft_rows, sft_slice
    from labkit.train.sft import train_sft


    def short_config(preset, n):
        return dataclasses.replace(preset.sft, train_examples=n, epochs=1)


    def train_sft_short(preset, inputs, progress, callback):
        model, tokenizer, _ = checkpoint.load_checkpoint(inputs["pretrain"])
        model.train()
        config = short_config(preset, 16)
        result = train_sft(model, tokenizer, sft_rows(preset.replace(sft=config), "train"), config,
                           seed=preset.seed, progress=progress, callback=callback)
        metrics = {"final_train_loss": result.history[-1]["train_loss"], "steps": result.steps,
                   "train_seconds": result.seconds}
        return StageOutput(model, tokenizer, metrics, result.history)


    def bench_sft_short(preset, inputs, steps, rank=0):
        config = short_config(preset, steps * preset.sft.batch_size)
        rows = sft_rows(preset.replace(sft=config), "train")[:config.train_examples]
        return sft_slice(preset, inputs["pretrain"], rows, config, "conversation")


    register(Stage("sft_short", needs=("pretrain",), fields=("name", "world_seed", "sft", "seed"),
                   report=("seconds", "final_train_loss", "steps"), train=train_sft_short, bench=bench_sft_short))
''')


@pytest.fixture
def registry():
    """The registry as it was, restored after the test (and the extra modules forgotten)."""
    saved = dict(STAGES)
    yield STAGES
    STAGES.clear()
    STAGES.update(saved)
    for name in [m for m in sys.modules if m.endswith("sft_short")]:
        del sys.modules[name]


def test_a_new_stage_module_is_trained_reported_and_benched(tmp_path, monkeypatch, registry):
    (tmp_path / "sft_short.py").write_text(EXTRA_STAGE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))  # children
    monkeypatch.setenv("LABKIT_STAGES", "sft_short")
    monkeypatch.setenv("LABKIT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    smoke = get_preset("smoke")

    load_stage_modules()
    assert list(registry)[-1] == "sft_short" and registry["sft_short"].needs == ("pretrain",)

    report = pipeline.run(["sft_short"], "smoke", tmp_path / "report.json", progress=False)
    row = report["stages"]["sft_short"]
    assert set(row) == {"seconds", "final_train_loss", "steps", "flops", "flops_training", "flops_inference"}
    assert 0 < row["flops_training"] == row["flops"] - row["flops_inference"]  # counted while it trained
    assert row["steps"] == 16 // smoke.sft.batch_size and 0 < row["final_train_loss"] < 10 and row["seconds"] > 0
    assert checkpoint.is_complete(pipeline.stage_dir("sft_short", smoke))
    assert "| sft_short | final_train_loss |" in (tmp_path / "report.md").read_text()

    measured = bench.bench("smoke", ["sft_short"], steps=2, progress=False)  # in a fresh process, which finds it too
    slice_ = measured["stages"]["sft_short"]
    assert slice_["steps"] == 2 and slice_["rank"] == 0 and slice_["samples_per_step"] == smoke.sft.batch_size
    assert slice_["seconds_per_step"] > 0 and slice_["peak_MB"] >= slice_["before_MB"] > 0
    assert measured["comparisons"] == {} and measured["fresh_processes"] == 1
    with pytest.raises(ValueError, match="no LoRA option"):
        bench.stage_step("smoke", "sft_short", 1, 4)


def test_a_module_placed_in_the_package_is_found(tmp_path, monkeypatch, registry):
    (tmp_path / "sft_short.py").write_text(EXTRA_STAGE)
    monkeypatch.setattr(labkit.stages, "__path__", [*labkit.stages.__path__, str(tmp_path)])
    load_stage_modules(extra="")
    assert "sft_short" in registry and "labkit.stages.sft_short" in sys.modules
    assert list(registry)[:len(labkit.stages.COURSE) + 1] == ["pretrain", "sft", "reward", "reward_naive", "ppo",
                                                              "dpo", "dpo_online", "sft_math", "grpo"]


def test_an_unimportable_extra_stage_module_says_what_to_do(monkeypatch):
    with pytest.raises(ImportError, match="LABKIT_STAGES names the module 'no_such_stage_module'"):
        load_stage_modules(extra="no_such_stage_module")


def test_a_stage_needing_an_unregistered_stage_is_refused(registry):
    from labkit.stages import Stage, register

    with pytest.raises(ValueError, match="needs 'kto_data'"):
        register(Stage("kto", needs=("kto_data",), fields=(), report=("seconds",), train=lambda *a: None))


ORCHESTRATORS = ["pipeline.py", "bench.py", "cli.py", "experiments/showdown.py", "widgets/panels.py"]


@pytest.mark.parametrize("module", ORCHESTRATORS)
def test_no_orchestrator_branches_on_a_stage_name(module):
    """``if stage == "ppo"`` or ``stage in ("sft", "sft_math")`` outside a stage's module: what a stage
    needs belongs in its declaration."""
    source = (Path(labkit.stages.__file__).parent.parent / module).read_text()
    names = set(STAGES)
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            for side in [node.left, *node.comparators]:
                literals = side.elts if isinstance(side, (ast.Tuple, ast.List, ast.Set)) else [side]
                found += [f"line {node.lineno}: {lit.value!r}" for lit in literals
                          if isinstance(lit, ast.Constant) and lit.value in names]
    assert not found, f"{module} branches on stage names: {found}"
