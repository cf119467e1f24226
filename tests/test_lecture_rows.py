"""Lecture rows the labs teach, asserted: teacher forcing as lab 01 shows it, and the rows labs 00–02 cite.

Lab 01's section 4 says that in training the model reads the *true* text at every position, even after a
wrong guess, and that this is why one forward pass scores every position of a document. Its table
comes from :func:`labkit.metrics.teacher_forcing_table`; the pretraining loss from
:func:`labkit.train.pretrain.token_losses` (and :func:`labkit.losses.next_token_cross_entropy`). Both
are checked here on a tiny untrained model, one forward pass per true prefix as the reference.
"""
from pathlib import Path

import nbformat
import pytest
import torch

from labkit import losses, metrics, models, world
from labkit.train.pretrain import IGNORE, token_losses

pytestmark = pytest.mark.usefixtures("one_thread")

LABS = Path(__file__).resolve().parent.parent / "labs"
TEXT = "once upon a time , mia the baker lived near the mill . she had three cakes ."


@pytest.fixture(scope="module")
def model(tok):
    config = models.tiny_llama_config(len(tok), 16, 1, 2, 24, 64, tokenizer=tok)
    return models.build_model(config, seed=0).eval()


def _ids(tok) -> torch.Tensor:
    """The text's ids as the table builds them: the tokenizer's ids, then </s>."""
    ids = tok(TEXT, return_tensors="pt")["input_ids"]
    return torch.cat([ids, torch.tensor([[tok.eos_token_id]])], dim=1)


@torch.no_grad()
def _p_next(model, prefix: torch.Tensor) -> torch.Tensor:
    """The model's next-token distribution after ``prefix`` alone (1-D ids): one forward pass per prefix."""
    return model(input_ids=prefix.view(1, -1)).logits[0, -1].float().softmax(-1)


def test_the_text_is_in_the_tokenizers_vocabulary(tok):
    assert tok.unk_token_id not in _ids(tok)[0].tolist()
    assert all(word in world.vocabulary() for word in TEXT.split())


def test_each_row_of_the_teacher_forcing_table_reads_the_true_prefix(model, tok):
    ids = _ids(tok)[0]
    table = metrics.teacher_forcing_table(model, tok, TEXT)
    assert len(table) == len(ids) - 1  # one row per predicted token, </s> included
    for t, row in table.iterrows():
        p_true = float(_p_next(model, ids[: t + 1])[ids[t + 1]])
        assert row["p(true)"] == pytest.approx(p_true, rel=1e-4, abs=1e-6)
        assert row["loss (nats)"] == pytest.approx(-torch.log(torch.tensor(p_true)).item(), rel=1e-4, abs=1e-6)
        assert row["true next"] == tok.convert_ids_to_tokens(int(ids[t + 1]))


def test_after_a_wrong_guess_the_next_row_still_reads_the_true_token(model, tok):
    """Teacher forcing, not free running: where the model's top guess was wrong, the next row is computed
    from the true token, and feeding the model its own guess instead would have given another number."""
    ids = _ids(tok)[0]
    table = metrics.teacher_forcing_table(model, tok, TEXT)
    wrong = [t for t in range(len(ids) - 2) if int(_p_next(model, ids[: t + 1]).argmax()) != int(ids[t + 1])]
    assert wrong, "an untrained model guesses wrong somewhere"
    for t in wrong:
        guess = _p_next(model, ids[: t + 1]).argmax().view(1)
        p_teacher_forced = float(_p_next(model, ids[: t + 2])[ids[t + 2]])
        p_free_running = float(_p_next(model, torch.cat([ids[: t + 1], guess]))[ids[t + 2]])
        assert table.loc[t + 1, "p(true)"] == pytest.approx(p_teacher_forced, rel=1e-4, abs=1e-6)
        assert abs(p_teacher_forced - p_free_running) > 1e-6


def test_one_forward_pass_scores_every_position(model, tok):
    calls = []
    handle = model.register_forward_hook(lambda module, args, kwargs_or_out, *rest: calls.append(1))
    try:
        metrics.teacher_forcing_table(model, tok, TEXT)
    finally:
        handle.remove()
    assert len(calls) == 1


def test_the_pretraining_loss_is_the_teacher_forced_loss_at_every_position(model, tok):
    """The loss pretraining minimises (per token, and its mean) is −ln p(true next | true prefix)."""
    ids = _ids(tok)
    labels = ids.clone()
    labels[0, 0] = IGNORE  # as pack_documents does at a document's start
    with torch.no_grad():
        per_token = token_losses(model, ids, labels)[0]
        mean = losses.next_token_cross_entropy(model(input_ids=ids).logits, ids)
    expected = torch.tensor([-torch.log(_p_next(model, ids[0, : t + 1])[ids[0, t + 1]]).item()
                             for t in range(ids.size(1) - 1)])
    assert torch.allclose(per_token, expected, rtol=1e-4, atol=1e-6)
    assert float(mean) == pytest.approx(float(expected.mean()), rel=1e-4)
    table = metrics.teacher_forcing_table(model, tok, TEXT)
    assert float(table["loss (nats)"].mean()) == pytest.approx(float(expected.mean()), rel=1e-4)


# ------------------------------------------------------------------ the lecture rows labs 00–02 cite

def _markdown(lab: str) -> str:
    return "\n".join(c.source for c in nbformat.read(LABS / lab, as_version=4).cells if c.cell_type == "markdown")


ROWS = {
    "00_start_here.ipynb": ["**attention** lets every token the model writes look back at every token of the prompt",
                            "a lot of **code**", "The\nlecture's explanation"],
    "01_pretraining.ipynb": ["**Double descent.**", "*interpolation threshold*", "Belkin et al., 2019",
                             "Nakkiran et al., 2019", "MMLU (Hendrycks et al., 2021)", "57 subjects",
                             "**The Bitter Lesson.**", "Sutton (2019)", "**teacher forcing**"],
    "02_instruction_tuning.ipynb": [
        "| QANet | none | Chinese | 66.1 | 78.1 |", "| BERT | Chinese | Chinese | 82.0 | 89.1 |",
        "| multilingual BERT | 104 languages | Chinese | 81.2 | 88.7 |",
        "| multilingual BERT | 104 languages | **English only** | **63.3** | **78.8** |",
        "| multilingual BERT | 104 languages | Chinese + English | 82.6 | 90.1 |", "| people | | | | 93.3 |",
        "The slide's sentence says the reverse of its table row",
        "43 % of cases (Zhou et al., 2023)", "Wei et al., 2022", "Sanh et al., 2022", "the more task clusters",
        "**self-instruct** (Wang et al., 2023)", "52K", "terms of use"],
}


@pytest.mark.parametrize("lab", ROWS)
def test_the_labs_cite_the_lecture_rows(lab):
    text = _markdown(lab)
    missing = [row for row in ROWS[lab] if row not in text]
    assert not missing, f"{lab} should say {missing}"
