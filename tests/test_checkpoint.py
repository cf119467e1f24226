"""Atomic checkpoints: complete or absent, never half-written."""
from __future__ import annotations

import os

import pytest
import torch

from labkit import checkpoint as ckpt
from labkit import models
from labkit import tokenizer as T

TEXTS = ["once upon a time , mia the baker lived near the mill .", "mia baked bread ."]


@pytest.fixture(scope="module")
def tok():
    return T.train_tokenizer(TEXTS)


def tiny_model(tok, seed):
    return models.build_model(models.tiny_llama_config(len(tok), 16, 1, 2, 24, 32, tokenizer=tok), seed=seed).eval()


def logits(model, tok):
    with torch.no_grad():
        return model(tok("mia the baker lived near the mill .", return_tensors="pt")["input_ids"]).logits


def test_round_trip(tok, tmp_path):
    model, path = tiny_model(tok, 0), tmp_path / "pretrain"
    assert not ckpt.is_complete(path)
    ckpt.save_checkpoint(path, model, tok, {"preset": "smoke", "val_loss": 2.5})
    assert ckpt.is_complete(path)
    assert (path / "model.safetensors").is_file()
    loaded, loaded_tok, meta = ckpt.load_checkpoint(path, device="cpu")
    assert meta == {"preset": "smoke", "val_loss": 2.5}
    assert torch.equal(logits(loaded, loaded_tok), logits(model, tok))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pretrain"]  # no temp dirs left behind


def test_overwrite_replaces_the_old_checkpoint(tok, tmp_path):
    path = tmp_path / "sft"
    ckpt.save_checkpoint(path, tiny_model(tok, 0), tok, {"run": 1})
    ckpt.save_checkpoint(path, tiny_model(tok, 1), None, {"run": 2})
    model, loaded_tok, meta = ckpt.load_checkpoint(path, device="cpu")
    assert meta == {"run": 2} and loaded_tok is None
    assert torch.equal(logits(model, tok), logits(tiny_model(tok, 1), tok))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sft"]


def interrupt_while_writing(monkeypatch, model):
    real = model.save_pretrained

    def half_save(directory, **kw):
        real(directory, **kw)
        (directory / "model.safetensors").write_bytes(b"truncated")
        raise KeyboardInterrupt

    monkeypatch.setattr(model, "save_pretrained", half_save)


def interrupt_before_swap(monkeypatch, model):
    def boom(root):
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt, "_fsync_tree", boom)


def interrupt_between_renames(monkeypatch, model):
    real = os.replace

    def replace(src, dst):
        if ".tmp-" in str(src):  # the old checkpoint has just been moved aside
            raise KeyboardInterrupt
        return real(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", replace)


@pytest.mark.parametrize("interrupt", [interrupt_while_writing, interrupt_before_swap, interrupt_between_renames])
def test_interrupted_save_keeps_the_previous_checkpoint(tok, tmp_path, monkeypatch, interrupt):
    path, old_model = tmp_path / "sft", tiny_model(tok, 0)
    ckpt.save_checkpoint(path, old_model, tok, {"run": 1})

    new_model = tiny_model(tok, 1)
    with monkeypatch.context() as patch:
        interrupt(patch, new_model)
        with pytest.raises(KeyboardInterrupt):
            ckpt.save_checkpoint(path, new_model, tok, {"run": 2})

    assert sorted(p.name for p in tmp_path.iterdir()) == ["sft"]  # no partial or temp directory
    model, loaded_tok, meta = ckpt.load_checkpoint(path, device="cpu")
    assert meta == {"run": 1}
    assert torch.equal(logits(model, loaded_tok), logits(old_model, tok))


def test_interrupted_first_save_leaves_nothing(tok, tmp_path, monkeypatch):
    model = tiny_model(tok, 0)
    interrupt_while_writing(monkeypatch, model)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(tmp_path / "pretrain", model, tok)
    assert list(tmp_path.iterdir()) == []


def _dead_pid() -> int:
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid  # it has ended (and been reaped): no process has this id now


def test_stale_temp_dirs_are_cleaned_up(tok, tmp_path):
    stale = tmp_path / f".sft.tmp-{_dead_pid()}-deadbeef"
    stale.mkdir()
    (stale / "config.json").write_text("{}")
    ckpt.save_checkpoint(tmp_path / "sft", tiny_model(tok, 0), tok)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sft"]


def test_refuses_to_overwrite_a_directory_that_is_not_a_checkpoint(tok, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a labkit checkpoint"):
        ckpt.save_checkpoint(tmp_path, tiny_model(tok, 0), tok)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_metadata_must_be_json(tok, tmp_path):
    with pytest.raises(TypeError):
        ckpt.save_checkpoint(tmp_path / "x", tiny_model(tok, 0), tok, {"bad": object()})
    assert not (tmp_path / "x").exists()


def test_missing_checkpoint_says_how_to_build_it(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        ckpt.load_checkpoint(tmp_path / "sft", stage="sft")
    message = str(info.value)
    assert str(tmp_path / "sft") in message
    assert "labkit.pipeline.ensure('sft')" in message and "python -m labkit pipeline --stages sft" in message


def test_reward_model_checkpoint_loads_with_its_own_class(tok, tmp_path):
    from transformers import LlamaForSequenceClassification

    cfg = models.tiny_llama_config(len(tok), 16, 1, 2, 24, 32, tokenizer=tok)
    cfg.num_labels = 1
    torch.manual_seed(0)
    ckpt.save_checkpoint(tmp_path / "reward", LlamaForSequenceClassification(cfg), tok, {"stage": "reward"})
    model, _, meta = ckpt.load_checkpoint(tmp_path / "reward", device="cpu")
    assert isinstance(model, LlamaForSequenceClassification) and meta == {"stage": "reward"}
