import warnings

import pytest

import labkit
from labkit import reference
from labkit.presets import ModelSize, PretrainConfig, get_preset


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(ValueError) as err:
        get_preset("laptop")
    assert "smoke, cpu, gpu, hub" in str(err.value)


def test_environment_variable_picks_the_preset(monkeypatch):
    monkeypatch.setattr(labkit.presets, "_active", None)
    monkeypatch.setenv("LABKIT_PRESET", "cpu")
    assert get_preset().name == "cpu"
    monkeypatch.setenv("LABKIT_PRESET", "nope")
    with pytest.raises(ValueError, match="Valid presets"):
        get_preset()


def test_use_preset_overrides_for_the_session(monkeypatch):
    monkeypatch.setattr(labkit.presets, "_active", None)
    assert labkit.use_preset("smoke").name == "smoke"
    assert get_preset().name == "smoke"


@pytest.mark.parametrize("kwargs, field", [({"d_model": 30, "n_heads": 4}, "divisible"),
                                           ({"n_layers": 0}, "n_layers")])
def test_model_size_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        ModelSize(**kwargs)


def test_pretrain_config_validation_names_the_field():
    with pytest.raises(ValueError, match="lr"):
        PretrainConfig(lr=5.0)


def test_presets_are_frozen():
    with pytest.raises(Exception):
        get_preset("cpu").seed = 3


def test_gpu_preset_without_a_gpu_warns_with_the_cpu_time_and_the_preset_that_fits(monkeypatch):
    from labkit import presets

    monkeypatch.setattr(presets.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(presets, "_warned_gpu_on_cpu", False)
    # 6 layers of 4·384² + 3·384·1024 weights, 4,000 × 32,768 tokens, against 2 × (4·128² + 3·128·384), 540 × 8,192.
    ratio = (6 * (4 * 384**2 + 3 * 384 * 1024) * 4000 * 32768) / (2 * (4 * 128**2 + 3 * 128 * 384) * 540 * 8192)
    assert presets.pretrain_compute(presets.PRESETS["gpu"]) / presets.pretrain_compute(presets.PRESETS["cpu"]) \
        == pytest.approx(ratio) and round(ratio) == 738
    # the hours scale the reference run's pretraining time (results/cpu.json) by that ratio
    hours = reference.figure("stages.pretrain.train_seconds", "cpu") * ratio / 3600
    assert presets.cpu_seconds_estimate(presets.PRESETS["gpu"]) == pytest.approx(hours * 3600)
    with pytest.warns(UserWarning, match=rf"about {hours:,.0f} hours on a 2-core laptop CPU .*Use the 'cpu' preset"):
        assert presets.get_preset("gpu").name == "gpu"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per session, not at every call
        presets.get_preset("gpu")


@pytest.mark.parametrize("make, message", [
    (lambda: PretrainConfig(lr=1.5), r"PretrainConfig.lr must lie strictly between 0 and 1, got 1.5"),
    (lambda: PretrainConfig(warmup=-1), r"PretrainConfig.warmup must be >= 0, got -1"),
    (lambda: ModelSize(n_layers=0), r"ModelSize.n_layers must be >= 1, got 0"),
    (lambda: labkit.presets.RewardStageConfig(epochs=0), r"RewardStageConfig.epochs must lie strictly between 0"),
    (lambda: labkit.presets.RewardStageConfig(warmup_steps=-2), r"RewardStageConfig.warmup_steps must be >= 0"),
    (lambda: labkit.presets.LoRASweepConfig(lora_lr=2.0), r"LoRASweepConfig.lora_lr must lie strictly between"),
    (lambda: labkit.presets.LoRASweepConfig(ranks=()), r"LoRASweepConfig.ranks must be a non-empty tuple"),
    (lambda: labkit.presets.RewardDemosConfig(best_of_n=6), r"RewardDemosConfig.best_of_n must be a power of two"),
    (lambda: labkit.presets.PPODemosConfig(overopt_lr=1.5), r"PPODemosConfig.overopt_lr must lie strictly between 0 and 1"),
])
def test_each_validator_names_the_wrong_field_and_its_range(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.fixture
def a_cuda_machine(monkeypatch):
    """This process as on a machine that reports CUDA, with no preset chosen."""
    import torch

    from labkit import presets

    monkeypatch.setattr(presets, "_active", None)
    monkeypatch.delenv("LABKIT_PRESET", raising=False)
    monkeypatch.delenv("LABKIT_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch, "set_float32_matmul_precision", lambda precision: None)  # runtime's TF32 switch on CUDA


def test_a_cuda_machine_runs_the_cpu_preset_on_its_gpu_until_the_gpu_preset_is_proven(a_cuda_machine, monkeypatch):
    from labkit import presets, runtime

    assert not presets.GPU_PRESET_PROVEN  # results/gpu.json does not yet meet every threshold
    assert get_preset().name == "cpu" and runtime.device().type == "cuda"  # the cpu-sized preset, on the GPU
    note = presets.default_note()
    assert "'cpu' preset runs on this GPU (cuda)" in note and "LABKIT_PRESET=gpu" in note
    monkeypatch.setenv("LABKIT_PRESET", "gpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # on a GPU, no warning about the time it would take on a CPU
        assert get_preset().name == "gpu"  # still selected by name
    assert presets.default_note() is None
    monkeypatch.setenv("LABKIT_PRESET", "cpu")
    assert presets.default_note() is None  # chosen, so nothing to explain
    monkeypatch.delenv("LABKIT_PRESET")
    monkeypatch.setattr(presets, "GPU_PRESET_PROVEN", True)  # once its reference run meets every threshold
    assert get_preset().name == "gpu" and presets.default_note(get_preset("cpu")) is None


def test_no_gpu_or_apple_mps_gets_the_cpu_preset_and_only_a_gpu_gets_the_note(monkeypatch):
    import torch

    from labkit import presets, runtime

    monkeypatch.setattr(presets, "_active", None)
    monkeypatch.delenv("LABKIT_PRESET", raising=False)
    monkeypatch.delenv("LABKIT_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(presets, "GPU_PRESET_PROVEN", True)  # even then: `gpu` needs CUDA
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert get_preset().name == "cpu" and presets.default_note() is None
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert get_preset().name == "cpu" and runtime.device().type == "mps"
    assert "runs on this GPU (mps)" in presets.default_note()


def test_the_pipeline_command_says_once_why_a_gpu_runs_the_cpu_preset(a_cuda_machine, monkeypatch, capsys):
    import argparse

    from labkit import cli, pipeline

    monkeypatch.setattr(pipeline, "run", lambda stages, preset, *a, **k: {"preset": preset.name, "stages": {}})
    args = argparse.Namespace(preset=None, stages="pretrain", report=None, quiet=True, fresh=False)
    assert cli._pipeline(args) == 0
    err = capsys.readouterr().err
    assert err.count("'cpu' preset runs on this GPU (cuda)") == 1
    assert cli._pipeline(argparse.Namespace(**{**vars(args), "preset": "cpu"})) == 0
    assert "runs on this GPU" not in capsys.readouterr().err  # chosen on the command line
