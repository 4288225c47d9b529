"""Joint subword tokenizer: HF ``tokenizers`` BPE (or Unigram) wrapped as a ``PreTrainedTokenizerFast``.

A ``Metaspace`` pre-tokenizer and decoder make detokenisation return the raw text exactly (no
stray spaces), which the tests check. The tokenizer never appends ``</s>`` itself: the data
pipeline adds it to targets, and trl appends its own EOS.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

PAD, UNK, EOS = "<pad>", "<unk>", "</s>"
LANGUAGES = ("en", "de", "fr", "cs")


def lang_tag(lang: str) -> str:
    """The target-language tag that separates source from target, e.g. ``<2de>``."""
    return f"<2{lang}>"


SPECIAL_TOKENS = [PAD, UNK, EOS] + [lang_tag(lang) for lang in LANGUAGES]


def train_tokenizer(texts: Iterable[str], vocab_size: int = 8000, kind: str = "bpe",
                    min_frequency: int = 2) -> PreTrainedTokenizerFast:
    """Train a joint subword model on ``texts`` (both languages) and wrap it for transformers."""
    if kind == "bpe":
        model = models.BPE(unk_token=UNK)
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS,
                                      show_progress=False)
    elif kind == "unigram":
        model = models.Unigram()
        trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, unk_token=UNK,
                                          show_progress=False)
    else:
        raise ValueError(f"tokenizer kind must be 'bpe' or 'unigram', got {kind!r}")
    tok = Tokenizer(model)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, unk_token=UNK, eos_token=EOS,
                                   additional_special_tokens=[lang_tag(lang) for lang in LANGUAGES])


def lang_token_ids(tokenizer: PreTrainedTokenizerFast) -> list[int]:
    return [tokenizer.convert_tokens_to_ids(lang_tag(lang)) for lang in LANGUAGES]


def encode_batch(tokenizer: PreTrainedTokenizerFast, texts: list[str]) -> list[list[int]]:
    """Subword ids of each text, without special tokens (fast path of ``tokenizers``)."""
    backend = tokenizer.backend_tokenizer
    # transformers' __call__ (with padding or truncation: the HF adapter, trl's trainers) leaves its
    # padding and truncation switched on in the shared backend; it sets them again on every call of
    # its own, so clearing them here keeps these ids exact without disturbing it.
    if backend.padding is not None:
        backend.no_padding()
    if backend.truncation is not None:
        backend.no_truncation()
    return [e.ids for e in backend.encode_batch(texts, add_special_tokens=False)]


def decode_batch(tokenizer: PreTrainedTokenizerFast, ids: list[list[int]]) -> list[str]:
    """Detokenised text of each id list; special tokens (tags, </s>, padding) are dropped."""
    return tokenizer.batch_decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
