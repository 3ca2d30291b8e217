"""A byte-level BPE tokenizer trained offline on the rendered training texts.

Byte-level BPE maps every string to tokens and back unchanged, so the stop string and any intent name
(including names the tokenizer never saw, such as the drifted world's) round-trip by construction.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

PAD_TOKEN = "<|pad|>"
EOS_TOKEN = "<|eos|>"


def train_tokenizer(texts: Iterable[str], vocab_size: int, *, min_frequency: int = 2,
                    model_max_length: int = 128) -> PreTrainedTokenizerFast:
    """Train byte-level BPE (GPT-2 pre-tokenization) and wrap it for transformers.

    ``model_max_length`` is what serving truncates prompts to; training uses the same limit.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[PAD_TOKEN, EOS_TOKEN],
        # All 256 byte symbols, so no input is ever out of vocabulary.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD_TOKEN,
        eos_token=EOS_TOKEN,
        model_max_length=model_max_length,
        # Decoding must give back the exact bytes generated; the parser, not the tokenizer, trims.
        clean_up_tokenization_spaces=False,
    )
