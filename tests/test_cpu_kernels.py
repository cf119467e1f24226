"""labkit pins PyTorch's CPU kernels to the reference runs' AVX2 on any x86 CPU that has AVX2, so an
AVX-512 machine repeats the reference numbers (runtime.pin_cpu_kernels); results files say which kernels
their floats came from, and only files from the same kernels are compared figure for figure."""
import os
import platform
import subprocess
import sys

import pytest
import torch

from labkit import results, runtime

X86_WITH_AVX2 = platform.machine().lower() in ("x86_64", "amd64") and torch.cpu._is_avx2_supported()


def _python(code: str, **env) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    environment.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=120)


CAPABILITY = "import torch; print(torch.backends.cpu.get_cpu_capability())"


@pytest.mark.skipif(not X86_WITH_AVX2, reason="pinning applies to x86 CPUs with AVX2")
def test_importing_labkit_pins_the_avx2_kernels():
    done = _python("import torch, labkit; torch.ones(3).softmax(0); " + CAPABILITY)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["AVX2"]
    assert "already computed" not in done.stderr


@pytest.mark.skipif(not X86_WITH_AVX2, reason="pinning applies to x86 CPUs with AVX2")
def test_kernels_chosen_by_the_learner_win():
    done = _python("import labkit; " + CAPABILITY, ATEN_CPU_CAPABILITY="default")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["DEFAULT"]


@pytest.mark.skipif(not (X86_WITH_AVX2 and torch.cpu._is_avx512_supported()),
                    reason="needs an AVX-512 CPU, whose own kernels differ from the reference's")
def test_torch_run_before_labkit_keeps_its_kernels_and_says_so():
    done = _python("import torch; torch.ones(3).softmax(0); import labkit; " + CAPABILITY)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["AVX512"]
    assert "already computed with its AVX512 kernels" in done.stderr and "import labkit before" in done.stderr


@pytest.mark.skipif(not X86_WITH_AVX2, reason="pinning applies to x86 CPUs with AVX2")
def test_this_process_runs_the_reference_kernels_and_the_results_file_says_so():
    assert runtime.cpu_kernels() == "AVX2"
    assert results.machine()["kernels"] == "AVX2"


def _file(cpu="AMD EPYC", vector=("avx2",), kernels=None, threads=2):
    machine = {"cpu": cpu, "vector": list(vector), "threads": threads, "device_name": cpu}
    if kernels:
        machine["kernels"] = kernels
    return {"machine": machine, "versions": {"torch": "2.13.0+cpu", "transformers": "5.25.0", "trl": "1.16.0",
                                             "peft": "0.21.2"}}


def test_a_file_from_before_the_pinning_used_its_widest_kernels():
    assert results.kernels(_file()["machine"]) == "AVX2"
    assert results.kernels(_file(vector=("avx2", "avx512f"))["machine"]) == "AVX512"
    assert results.kernels(_file(vector=())["machine"]) == "DEFAULT"
    assert results.kernels(_file(vector=("avx2", "avx512f"), kernels="AVX2")["machine"]) == "AVX2"


def test_same_setup_means_the_same_kernels_not_the_same_vector_units():
    reference = _file()                                        # an AVX2 machine, before the pinning
    pinned = _file(vector=("avx2", "avx512f"), kernels="AVX2")  # an AVX-512 machine, pinned
    assert results.same_setup(pinned, reference)
    assert not results.same_setup(_file(vector=("avx2", "avx512f"), kernels="AVX512"), reference)
    assert not results.same_setup(_file(vector=("avx2", "avx512f")), reference)  # unpinned AVX-512
    assert not results.same_setup(_file(kernels="AVX2", threads=4), reference)
    assert not results.same_setup(_file(cpu="Intel Xeon", kernels="AVX2"), reference)  # MKL's own paths differ
