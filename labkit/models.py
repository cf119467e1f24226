"""Models: the tiny Llama we pretrain from scratch, and loading any causal LM by id or path.

The tiny model is a real ``transformers`` ``LlamaForCausalLM`` (RMSNorm, rotary position
embeddings, SwiGLU MLP, no biases, input and output embeddings tied), only small. Because it is
the same class as the hub's Llama models, every later stage (TRL's trainers, peft's LoRA,
``generate``) treats our model and a downloaded one alike.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from labkit import runtime, tokenizer as tok
from labkit.presets import ModelSize


def tiny_llama_config(vocab_size: int, d_model: int, n_layers: int, n_heads: int, d_ff: int,
                      max_len: int, tokenizer=None) -> LlamaConfig:
    """A ``LlamaConfig`` for a small model with tied embeddings, RoPE and no biases.

    Special-token ids come from ``tokenizer`` when given (its vocabulary must fit in
    ``vocab_size``), else from labkit's tokenizer constants (``<s>``=2, ``</s>``=3, ``<pad>``=0).
    """
    ModelSize(d_model=d_model, n_layers=n_layers, n_heads=n_heads, d_ff=d_ff, max_len=max_len)  # validates
    bos, eos, pad = tok.BOS_ID, tok.EOS_ID, tok.PAD_ID
    if tokenizer is not None:
        if len(tokenizer) > vocab_size:
            raise ValueError(f"vocab_size ({vocab_size}) is smaller than the tokenizer's vocabulary "
                             f"({len(tokenizer)}); pass vocab_size=len(tokenizer)")
        bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=d_model,
        intermediate_size=d_ff,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_heads,      # plain multi-head attention (no grouped-query sharing)
        max_position_embeddings=max_len,
        tie_word_embeddings=True,         # the LM head reuses the embedding matrix: V*d fewer parameters
        attention_bias=False,
        mlp_bias=False,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=pad,
    )


def config_from_size(size: ModelSize, vocab_size: int, tokenizer=None) -> LlamaConfig:
    """``tiny_llama_config`` from a preset's ``ModelSize``."""
    return tiny_llama_config(vocab_size, size.d_model, size.n_layers, size.n_heads, size.d_ff,
                             size.max_len, tokenizer=tokenizer)


def build_model(config: LlamaConfig, seed: int) -> LlamaForCausalLM:
    """A freshly initialised ``LlamaForCausalLM``; the same seed gives the same weights.

    The seed is applied in a forked RNG, so building a model does not disturb the caller's
    random state.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    # Stop generating at the end of a document or of a chat turn.
    model.generation_config.eos_token_id = [config.eos_token_id, tok.END_ID]
    model.generation_config.pad_token_id = config.pad_token_id
    return model


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (tied weights counted once); only those with ``requires_grad`` if asked."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _looks_like_path(id_or_path: str | Path) -> bool:
    """Hub ids are ``name`` or ``owner/name``; anything else (``./x``, ``/x``, ``a/b/c``) is a path."""
    if isinstance(id_or_path, Path):
        return True
    s = str(id_or_path)
    return s.startswith((".", "/", "~", "\\")) or s.count("/") > 1 or "\\" in s or os.path.exists(s)


def _offline() -> bool:
    """True if the environment forbids downloads (``HF_HUB_OFFLINE=1`` or ``TRANSFORMERS_OFFLINE=1``)."""
    flag = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return flag.strip().lower() in {"1", "true", "yes", "on"}


def _is_connection_problem(error: BaseException) -> bool:
    """True if ``error`` (or what caused it) says the Hub could not be reached or the cache lacks the files."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, (ConnectionError, LocalEntryNotFoundError)) or "couldn't connect" in str(error):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


def load_causal_lm(id_or_path: str | Path, *, device: str | torch.device | None = None,
                   dtype: torch.dtype | str | None = None):
    """Load any causal LM and its tokenizer from a local directory or a Hugging Face Hub id.

    Returns ``(model, tokenizer)``; ``tokenizer`` is ``None`` for a local directory saved without
    one. The model is put on ``device`` (default: ``labkit.runtime.device()``) in eval mode. A
    tokenizer without a pad token gets its EOS token as pad, so batches can be padded.

    With ``HF_HUB_OFFLINE=1`` nothing is downloaded: hub ids load only from the local HF cache.
    """
    kwargs = {} if dtype is None else {"dtype": dtype}
    if _looks_like_path(id_or_path):
        path = Path(id_or_path).expanduser()
        if not (path / "config.json").is_file():
            what = "does not exist" if not path.exists() else "has no config.json"
            raise FileNotFoundError(
                f"Cannot load a model from {path}: the directory {what}. Pass a directory written by "
                "model.save_pretrained(...) (or labkit.checkpoint.save_checkpoint), or a Hugging Face Hub id."
            )
        model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
        has_tokenizer = (path / "tokenizer_config.json").is_file() or (path / "tokenizer.json").is_file()
        tokenizer = AutoTokenizer.from_pretrained(str(path)) if has_tokenizer else None
    else:
        offline = _offline()
        try:
            AutoConfig.from_pretrained(id_or_path, local_files_only=offline)  # cheap: fails fast if unreachable
            model = AutoModelForCausalLM.from_pretrained(id_or_path, local_files_only=offline, **kwargs)
            tokenizer = AutoTokenizer.from_pretrained(id_or_path, local_files_only=offline)
        except Exception as error:
            if not _is_connection_problem(error):
                raise  # e.g. a misspelt id: the Hub's own message says so
            raise RuntimeError(
                f"No internet to download '{id_or_path}' (and it is not in the local Hugging Face cache). "
                f"Connect to the internet; or pre-download it with `huggingface-cli download {id_or_path}` "
                "and set HF_HUB_OFFLINE=1; or pass a local directory; or use the cpu/gpu presets, which "
                "need no download (LABKIT_PRESET=cpu)."
            ) from error
    if tokenizer is not None and tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(torch.device(device) if device is not None else runtime.device())
    model.eval()
    return model, tokenizer


@torch.no_grad()
def refresh_embeddings(model, token_ids: list[int], seed: int = 0) -> None:
    """Give ``token_ids`` fresh, distinct random embeddings (in place), at the scale of the others.

    Why: a token that never occurs in pretraining only ever gets the gradient "do not predict me",
    and with tied embeddings every such token is pushed the same way. After pretraining their
    vectors point in one direction (cosine ≈ 1), so the model cannot tell ``7`` from ``3`` or
    ``<|user|>`` from ``<|assistant|>``. Re-drawing them, as one does for tokens added to a
    vocabulary, lets fine-tuning learn them. Each new row gets the mean norm of the other rows.
    """
    weight = model.get_input_embeddings().weight
    ids = torch.as_tensor(sorted(set(token_ids)), dtype=torch.long, device=weight.device)
    if ids.numel() == 0:
        return
    others = torch.ones(weight.shape[0], dtype=torch.bool, device=weight.device)
    others[ids] = False
    norm = weight[others].norm(dim=-1).mean()
    generator = torch.Generator().manual_seed(seed)
    fresh = torch.randn(len(ids), weight.shape[1], generator=generator).to(weight)
    weight[ids] = fresh / fresh.norm(dim=-1, keepdim=True) * norm


def end_of_turn_token(tokenizer) -> str | None:
    """The special token the chat template closes an assistant turn with, or None if it writes none.

    labkit's template closes it with ``<|end|>``, ChatML's (SmolLM2's, Qwen's) with ``<|im_end|>``,
    Llama 3's with ``<|eot_id|>``: the first special token the template writes after the assistant's
    words. A hub tokenizer's end-of-sequence token need not be that one (a base model's is often
    ``<|endoftext|>``), so a reply must stop on this token too.
    """
    prompt = [{"role": "user", "content": "hello"}]
    try:
        start = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True)
        whole = tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": "yes"}], tokenize=True,
                                              return_dict=True)
    except Exception:  # no chat template, or one that needs other turns: no turn to close
        return None
    special = (set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)) - {tokenizer.unk_token_id}
    added = list(whole["input_ids"])[len(start["input_ids"]):]
    return next((tokenizer.convert_ids_to_tokens(i) for i in added if i in special), None)


def stop_token_ids(tokenizer, stop_words: tuple[str, ...] = ("<|end|>", "</s>")) -> list[int]:
    """Ids of the tokens a reply stops on: ``stop_words`` the tokenizer knows, its end-of-sequence token
    and the token its chat template closes an assistant turn with (:func:`end_of_turn_token`)."""
    vocab = tokenizer.get_vocab()
    return sorted({vocab[w] for w in (*stop_words, tokenizer.eos_token, end_of_turn_token(tokenizer)) if w in vocab})


@torch.no_grad()
def generate_replies(model, tokenizer, conversations: list[list[dict]], *, max_new_tokens: int = 24,
                     batch_size: int = 64, do_sample: bool = False, temperature: float = 1.0,
                     stop_words: tuple[str, ...] = ("<|end|>", "</s>")) -> list[str]:
    """The model's reply to each conversation (role/content messages ending with a user turn).

    Each conversation is rendered with the tokenizer's chat template plus the assistant prompt, the
    batch is padded on the left (so every row ends where generation starts), and generation stops at
    any of ``stop_words`` that the tokenizer knows. Greedy unless ``do_sample``. Returns the decoded
    replies without special tokens, stripped.
    """
    stop_ids = stop_token_ids(tokenizer, stop_words)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    replies: list[str] = []
    for start in range(0, len(conversations), batch_size):
        texts = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
                 for c in conversations[start:start + batch_size]]
        batch = tokenizer(texts, return_tensors="pt", padding=True, padding_side="left",
                          add_special_tokens=False).to(device)
        sampling = {"do_sample": True, "temperature": temperature, "top_k": 0} if do_sample else {"do_sample": False}
        out = model.generate(**batch, max_new_tokens=max_new_tokens, eos_token_id=stop_ids,
                             pad_token_id=tokenizer.pad_token_id, **sampling)
        new = out[:, batch["input_ids"].shape[1]:]
        replies += [r.strip() for r in tokenizer.batch_decode(new, skip_special_tokens=True)]
    model.train(was_training)
    return replies


@torch.no_grad()
def reward_scores(model, tokenizer, prompts: list[list[dict]], responses: list[list[dict]], batch_size: int = 128) -> torch.Tensor:
    """A reward model's score of each (prompt, response) conversation, as a 1-D float tensor.

    ``model`` is a sequence-classification model with one label (:mod:`labkit.train.reward`); the
    score is its output at the conversation's last token. A summed head (:mod:`labkit.heads`) scores
    the response's tokens only: the prompt's part, the same under every response to it, is taken off
    (it is the summed score of the prompt alone: causal attention), so scores compare across prompts
    as a last-token head's do, and a policy's critic does not have to learn each prompt's offset.
    """
    def score(texts: list[str]) -> torch.Tensor:
        device = next(model.parameters()).device
        out = []
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start:start + batch_size], return_tensors="pt", padding=True,
                              add_special_tokens=False).to(device)
            out.append(model(**batch).logits[:, 0].float().cpu())
        return torch.cat(out) if out else torch.zeros(0)

    scores = score([tokenizer.apply_chat_template(p + r, tokenize=False) for p, r in zip(prompts, responses)])
    if getattr(model.config, "reward_pooling", "last") == "sum" and len(prompts):
        asked = [tokenizer.apply_chat_template(p, tokenize=False) for p in prompts]
        unique = sorted(set(asked))
        offsets = dict(zip(unique, score(unique).tolist()))
        scores = scores - torch.tensor([offsets[a] for a in asked])
    return scores
