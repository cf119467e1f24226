"""The hub preset's code path, exercised offline on a local save_pretrained directory."""
import socket

import pytest

from labkit import pipeline, runtime, world
from labkit.metrics import nats_per_word
from labkit.models import build_model, config_from_size
from labkit.presets import get_preset
from labkit.train.pretrain import evaluate, pack_documents


def _tiny_model_dir(tmp_path):
    preset = get_preset("smoke")
    data = pipeline.pretrain_data(preset)
    model = build_model(config_from_size(preset.model, len(data.tokenizer), data.tokenizer), seed=0)
    model.save_pretrained(tmp_path / "tiny")
    data.tokenizer.save_pretrained(tmp_path / "tiny")
    return tmp_path / "tiny", model, data


def test_hub_preset_without_network_fails_at_once_saying_what_to_do(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def no_network(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(socket, "create_connection", no_network)
    with pytest.raises(RuntimeError, match="LABKIT_PRESET=cpu") as err:
        runtime.require_hub("SomeOrg/some-model")
    assert "cannot be reached" in str(err.value)


def test_hub_stage_runs_on_a_local_directory(tmp_path):
    path, _, _ = _tiny_model_dir(tmp_path)
    preset = get_preset("hub").replace(hub_model=str(path), n_val_docs=10)
    report = pipeline.run(["pretrain"], preset, tmp_path / "r.json", progress=False)
    stage = report["stages"]["pretrain"]
    assert stage["model"] == str(path)
    assert stage["val_loss"] > stage["entropy_floor"]


def test_nats_per_word_equals_the_ordinary_loss_for_a_word_level_model(tmp_path):
    _, model, data = _tiny_model_dir(tmp_path)
    docs = world.corpus("validation", 12)
    ids = [row + [data.tokenizer.eos_token_id] for row in data.tokenizer([d.text for d in docs])["input_ids"]]
    # One document per row (packed rows would let a document see the one before it).
    per_doc = [evaluate(model, pack_documents([row], len(row), data.tokenizer.pad_token_id)) for row in ids]
    expected = sum(loss * (len(row) - 1) for loss, row in zip(per_doc, ids)) / sum(len(r) - 1 for r in ids)
    assert nats_per_word(model, data.tokenizer, [d.text for d in docs]) == pytest.approx(expected, rel=1e-6)
