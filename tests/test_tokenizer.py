"""The word-level tokenizer and its chat template."""
from __future__ import annotations

import pytest

from labkit import tokenizer as T

TEXTS = [
    "once upon a time , mia the baker lived near the mill .",
    "mia baked bread . the mill was old .",
]
CHAT = [
    {"role": "system", "content": "you are a helpful baker ."},
    {"role": "user", "content": "who lived near the mill ?"},
    {"role": "assistant", "content": "mia the baker ."},
]


@pytest.fixture(scope="module")
def tok():
    return T.train_tokenizer(TEXTS, extra_words=["you", "are", "helpful", "who", "?"])


def test_special_token_ids(tok):
    assert T.SPECIAL_TOKENS == ["<pad>", "<unk>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
    assert [tok.convert_tokens_to_ids(t) for t in T.SPECIAL_TOKENS] == list(range(8))
    assert (tok.pad_token_id, tok.unk_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2, 3)
    assert (T.PAD_ID, T.BOS_ID, T.EOS_ID, T.END_ID) == (0, 2, 3, 7)


def test_vocab_is_deterministic_and_includes_extra_words(tok):
    again = T.train_tokenizer(list(TEXTS), extra_words=["you", "are", "helpful", "who", "?"])
    assert again.backend_tokenizer.to_str() == tok.backend_tokenizer.to_str()
    vocab = tok.get_vocab()
    assert {"helpful", "?", "mill", "."} <= set(vocab)
    # after the 8 special tokens: most frequent first ("." and "the" occur 3 times), ties alphabetically
    assert (vocab["."], vocab["the"]) == (8, 9)


def test_saved_tokenizer_json_is_identical_for_the_same_texts(tok, tmp_path):
    T.save_tokenizer(tok, tmp_path / "a")
    T.save_tokenizer(T.train_tokenizer(TEXTS, extra_words=["you", "are", "helpful", "who", "?"]), tmp_path / "b")
    assert (tmp_path / "a" / "tokenizer.json").read_bytes() == (tmp_path / "b" / "tokenizer.json").read_bytes()


def test_extra_words_must_be_single_words():
    with pytest.raises(ValueError, match="single words"):
        T.train_tokenizer(TEXTS, extra_words=["two words"])


def test_encode_prepends_bos_and_decode_round_trips(tok):
    sentence = "mia the baker lived near the mill ."
    ids = tok(sentence)["input_ids"]
    assert ids[0] == T.BOS_ID and T.EOS_ID not in ids
    assert len(ids) == 1 + len(sentence.split())
    assert tok.decode(ids, skip_special_tokens=True) == sentence
    assert tok.decode(ids) == "<s> " + sentence


def test_unknown_word_becomes_unk(tok):
    assert tok("the dragon")["input_ids"] == [T.BOS_ID, tok.convert_tokens_to_ids("the"), T.UNK_ID]


def test_chat_template_renders_exactly(tok):
    text = tok.apply_chat_template(CHAT, tokenize=False)
    assert text == ("<s> <|system|> you are a helpful baker . <|end|> <|user|> who lived near the mill ? "
                    "<|end|> <|assistant|> mia the baker . <|end|>")


def test_generation_prompt(tok):
    text = tok.apply_chat_template(CHAT[:2], tokenize=False, add_generation_prompt=True)
    assert text.endswith("who lived near the mill ? <|end|> <|assistant|>")
    ids = tok.apply_chat_template(CHAT[:2], tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"]
    assert ids[0] == T.BOS_ID and ids.count(T.BOS_ID) == 1 and ids[-1] == T.ASSISTANT_ID


def test_assistant_mask_covers_exactly_the_answer_and_its_end(tok):
    ids = tok.apply_chat_template(CHAT, tokenize=True, return_dict=True)["input_ids"]
    mask = T.assistant_mask(tok, CHAT)
    assert len(mask) == len(ids)
    assert tok.convert_ids_to_tokens([i for i, m in zip(ids, mask) if m]) == ["mia", "the", "baker", ".", "<|end|>"]
    two_turns = CHAT + [{"role": "user", "content": "who ?"}, {"role": "assistant", "content": "mia ."}]
    ids2 = tok.apply_chat_template(two_turns, tokenize=True, return_dict=True)["input_ids"]
    masked = [i for i, m in zip(ids2, T.assistant_mask(tok, two_turns)) if m]
    assert tok.convert_ids_to_tokens(masked) == ["mia", "the", "baker", ".", "<|end|>", "mia", ".", "<|end|>"]


def test_trl_accepts_the_template_for_assistant_only_loss(tok):
    from trl.chat_template_utils import has_generation_markers, is_chat_template_stop_token_trained

    assert has_generation_markers(tok.chat_template)
    assert is_chat_template_stop_token_trained(tok)


def test_unknown_role_is_a_clear_error(tok):
    with pytest.raises(Exception, match="unknown chat role"):
        tok.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)


def test_save_and_load(tok, tmp_path):
    T.save_tokenizer(tok, tmp_path / "tok")
    loaded = T.load_tokenizer(tmp_path / "tok")
    assert loaded("the mill .")["input_ids"] == tok("the mill .")["input_ids"]
    assert loaded.apply_chat_template(CHAT, tokenize=False) == tok.apply_chat_template(CHAT, tokenize=False)
    assert T.assistant_mask(loaded, CHAT) == T.assistant_mask(tok, CHAT)


def test_load_missing_tokenizer_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        T.load_tokenizer(tmp_path / "nowhere")


@pytest.mark.filterwarnings("ignore:`gradient_checkpointing` is deprecated:FutureWarning")  # raised inside TRL
def test_trl_sft_trainer_trains_only_on_the_answer(tok, tmp_path):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from labkit import models

    model = models.build_model(models.tiny_llama_config(len(tok), 16, 1, 2, 24, 64, tokenizer=tok), seed=0)
    args = SFTConfig(output_dir=str(tmp_path), assistant_only_loss=True, report_to=[], use_cpu=True,
                     dataloader_pin_memory=False, disable_tqdm=True)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list([{"messages": CHAT}]),
                         processing_class=tok)
    labels = trainer.data_collator([trainer.train_dataset[0]])["labels"][0].tolist()
    assert tok.convert_ids_to_tokens([i for i in labels if i != -100]) == ["mia", "the", "baker", ".", "<|end|>"]
