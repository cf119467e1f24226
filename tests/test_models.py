"""The tiny Llama model and loading causal LMs by path or hub id."""
from __future__ import annotations

import pytest
import torch

from labkit import models
from labkit import tokenizer as T
from labkit.presets import ModelSize

TEXTS = ["once upon a time , mia the baker lived near the mill .", "mia baked bread ."]


@pytest.fixture(scope="module")
def tok():
    return T.train_tokenizer(TEXTS)


def tiny_config(vocab_size=40, **kw):
    size = dict(d_model=16, n_layers=1, n_heads=2, d_ff=24, max_len=32) | kw
    return models.tiny_llama_config(vocab_size, **size)


def weights(model):
    return {name: p.detach().clone() for name, p in model.state_dict().items()}


def test_config_is_a_tied_bias_free_llama_with_labkit_special_ids():
    cfg = tiny_config()
    assert cfg.model_type == "llama" and cfg.tie_word_embeddings
    assert not cfg.attention_bias and not cfg.mlp_bias
    assert (cfg.pad_token_id, cfg.bos_token_id, cfg.eos_token_id) == (T.PAD_ID, T.BOS_ID, T.EOS_ID)
    assert cfg.head_dim == 8 and cfg.num_key_value_heads == 2


def test_config_from_size_and_tokenizer(tok):
    cfg = models.config_from_size(ModelSize(d_model=32, n_layers=2, n_heads=4, d_ff=48, max_len=64), len(tok), tok)
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.intermediate_size) == (32, 2, 4, 48)
    assert cfg.max_position_embeddings == 64 and cfg.vocab_size == len(tok)
    with pytest.raises(ValueError, match="vocab_size"):
        models.config_from_size(ModelSize(), 5, tok)
    with pytest.raises(ValueError, match="divisible"):
        tiny_config(d_model=15)


def test_same_seed_same_weights_different_seed_different():
    cfg = tiny_config()
    a, b, c = (weights(models.build_model(cfg, seed=s)) for s in (0, 0, 1))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_build_model_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    models.build_model(tiny_config(), seed=7)
    assert torch.equal(torch.rand(3), expected)


def test_parameter_count_matches_the_formula():
    V, d, L, f = 40, 16, 2, 24
    model = models.build_model(tiny_config(V, n_layers=L, d_ff=f), seed=0)
    per_layer = 4 * d * d + 3 * d * f + 2 * d  # q,k,v,o + gate,up,down (SwiGLU) + two RMSNorm weights
    assert models.count_parameters(model) == V * d + L * per_layer + d  # tied embedding + layers + final norm
    model.model.embed_tokens.weight.requires_grad_(False)
    assert models.count_parameters(model, trainable_only=True) == L * per_layer + d


def test_save_pretrained_then_load_causal_lm_gives_identical_logits(tok, tmp_path):
    model = models.build_model(models.tiny_llama_config(len(tok), 16, 1, 2, 24, 32, tokenizer=tok), seed=0).eval()
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded, loaded_tok = models.load_causal_lm(tmp_path, device="cpu")
    ids = tok("mia the baker lived near the mill .", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(model(ids).logits, loaded(ids).logits)
    assert loaded_tok("the mill")["input_ids"] == tok("the mill")["input_ids"]
    assert loaded.generation_config.eos_token_id == [T.EOS_ID, T.END_ID]


def test_local_dir_without_tokenizer_loads_with_none(tmp_path):
    models.build_model(tiny_config(), seed=0).save_pretrained(tmp_path)
    model, tokenizer = models.load_causal_lm(str(tmp_path), device="cpu", dtype=torch.float32)
    assert tokenizer is None and model.dtype == torch.float32


def test_missing_directory_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist") as info:
        models.load_causal_lm(tmp_path / "no_such_model")
    assert str(tmp_path / "no_such_model") in str(info.value)
    with pytest.raises(FileNotFoundError, match="config.json"):
        models.load_causal_lm(tmp_path)  # exists, but holds no model


def test_hub_id_offline_is_a_runtime_error_saying_what_to_do(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="internet") as info:
        models.load_causal_lm("labkit-tests/no-such-model")
    message = str(info.value)
    assert "labkit-tests/no-such-model" in message and "huggingface-cli download" in message


def test_cuda_device_turns_on_tensor_float_32_and_cpu_leaves_float32_alone(monkeypatch):
    from labkit import runtime

    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        monkeypatch.setenv("LABKIT_DEVICE", "cpu")
        assert runtime.device().type == "cpu"
        assert torch.get_float32_matmul_precision() == "highest"  # the CPU's numbers are untouched
        monkeypatch.setenv("LABKIT_DEVICE", "cuda")  # a device object needs no GPU to exist
        assert runtime.device().type == "cuda"
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(before)
