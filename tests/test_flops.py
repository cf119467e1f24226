"""Counted compute (labkit.flops): the counter follows what the models actually process."""
import pytest
import torch

from labkit import flops
from labkit.lora import peft_lora
from labkit.models import build_model, tiny_llama_config

VOCAB, D, LAYERS, HEADS, FF = 50, 32, 2, 4, 64


@pytest.fixture()
def model():
    return build_model(tiny_llama_config(VOCAB, D, LAYERS, HEADS, FF, max_len=64), seed=0)


def matmul_weights() -> int:
    """Weights in the tiny model's matrix products, by hand: per block q, k, v, o (d×d each) and the
    SwiGLU MLP's three d×ff matrices, plus the output head (d×V, tied to the embedding)."""
    return LAYERS * (4 * D * D + 3 * D * FF) + D * VOCAB


def test_a_trained_pass_costs_six_n_per_token_plus_attention(model):
    rows, tokens = 3, 10
    ids = torch.randint(0, VOCAB, (rows, tokens))
    with flops.counting() as count:
        model(input_ids=ids).logits.sum().backward()
    forward = 2 * matmul_weights() * rows * tokens + 4 * LAYERS * D * rows * tokens * tokens
    assert count.forward_trained == forward
    assert count.backward == 2 * forward                      # PaLM's 6N + 12·L·d·T per token
    assert count.total == count.training == 3 * forward and count.inference == 0
    assert count.as_report() == {"flops": 3 * forward, "flops_training": 3 * forward, "flops_inference": 0}


def test_a_pass_without_gradient_is_inference_only(model):
    ids = torch.randint(0, VOCAB, (2, 7))
    with torch.no_grad(), flops.counting() as count:
        model(input_ids=ids)
    assert count.inference == 2 * matmul_weights() * 14 + 4 * LAYERS * D * 14 * 7
    assert count.training == 0 and count.passes == 1


def test_a_pass_never_back_propagated_counts_as_forward_only(model):
    ids = torch.randint(0, VOCAB, (1, 5))
    with flops.counting() as count:
        model(input_ids=ids)              # grad enabled, but no backward follows
    assert count.training == 0 and count.inference == 2 * matmul_weights() * 5 + 4 * LAYERS * D * 25


def test_sampling_counts_each_new_token_against_its_context(model):
    """generate(): the prompt's pass, then one pass per new token over a growing cache; the head runs
    on the last position only. The count is the sum of those passes, done here by hand."""
    rows, prompt, new = 2, 6, 5
    ids = torch.randint(3, VOCAB, (rows, prompt))
    with torch.no_grad(), flops.counting() as count:
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new,
                             min_new_tokens=new, do_sample=False, pad_token_id=0)
    assert out.shape[1] == prompt + new
    body, head = matmul_weights() - D * VOCAB, D * VOCAB
    expected = 2 * body * rows * prompt + 2 * head * rows + 4 * LAYERS * D * rows * prompt * prompt
    for step in range(1, new):           # the last token is chosen from the previous pass's logits
        context = prompt + step
        expected += 2 * (body + head) * rows + 4 * LAYERS * D * rows * context
    assert count.passes == new
    assert count.inference == expected


def test_lora_skips_the_frozen_weights_gradients(model):
    """A LoRA step still back-propagates through every frozen matrix (the adapters below need the
    gradient) but computes weight gradients for the adapters' r·(m + n) numbers only."""
    rank = 4
    lora = peft_lora(model, rank=rank)
    adapters = LAYERS * rank * (4 * (D + D) + 3 * (D + FF))   # q, k, v, o and the MLP's three, each r·(in + out)
    ids = torch.randint(0, VOCAB, (2, 8))
    with flops.counting() as count:
        lora(input_ids=ids).logits.sum().backward()
    n_tokens, attention = 16, 4 * LAYERS * D * 16 * 8
    matmul = 2 * (matmul_weights() + adapters) * n_tokens
    assert count.forward_trained == matmul + attention
    assert count.backward == matmul + 2 * adapters * n_tokens + 2 * attention
    assert count.training < 0.75 * 3 * count.forward_trained  # well under full training's 6N


def test_blocks_nest_and_leave_no_hook_behind(model):
    ids = torch.randint(0, VOCAB, (1, 4))
    with torch.no_grad(), flops.counting() as outer:
        model(input_ids=ids)
        with flops.counting() as inner:
            model(input_ids=ids)
    assert outer.inference == 2 * inner.inference > 0
    assert flops._handle is None
    with torch.no_grad():
        model(input_ids=ids)              # outside every block: nothing counts
    assert outer.passes == 2


def test_the_matmul_peak_is_a_rate():
    peak = flops.matmul_peak(size=128, repeats=3)
    assert peak["flops_per_s"] > 1e8 and peak["size"] == 128 and peak["dtype"] == "float32"
