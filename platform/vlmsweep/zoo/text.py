"""The world's text as plain strings, and the zoo's byte-level BPE tokenizer trained on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from vlmsweep import IMAGE_MARKER
from vlmsweep.data.shards import iter_samples
from vlmsweep.models.llm import LLM_FAMILIES, get_llm_family

TEXT_SPLITS = ("captions_short", "captions_detailed", "instruct")


def render(sample: dict) -> str:
    """One sample as plain text: its turns joined by newlines.

    The <image> marker is dropped: in a VLM it becomes image features, never text the LM
    reads, so pretraining on it would only teach the LM a token it never sees as text.
    """
    turns = [t["text"].replace(IMAGE_MARKER, "").strip() for t in sample["conversations"]]
    return "\n".join(t for t in turns if t)


def world_texts(world_dir: str | Path) -> Iterator[str]:
    """Captions (short and detailed), questions, answers and text-only dialogues."""
    for split in TEXT_SPLITS:
        for sample in iter_samples(Path(world_dir) / split):
            yield render(sample)


def all_special_tokens() -> list[str]:
    """Every special token of every LLM family, in a fixed order.

    One vocabulary serves all families, so the ids of ordinary text are the same in every
    zoo LM; each family's saved tokenizer then just names its own bos/eos among these.
    """
    out = ["<unk>", "<pad>"]
    for fam in LLM_FAMILIES.values():
        for tok in (fam.bos, fam.eos, *fam.extra_special):
            if tok and tok not in out:
                out.append(tok)
    return out


def train_tokenizer(texts: list[str], vocab_size: int) -> Tokenizer:
    core = Tokenizer(models.BPE(unk_token="<unk>"))
    # GPT-2 style byte-level BPE: any text encodes (no real <unk>), and offsets still map
    # tokens to characters, which label spans rely on
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  special_tokens=all_special_tokens(),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(texts, trainer=trainer)
    return core


def family_tokenizer(core: Tokenizer, family_name: str) -> PreTrainedTokenizerFast:
    """The shared BPE wrapped with `family_name`'s bos/eos/extra tokens (as llm.byte_tokenizer does).

    No automatic BOS: chat templates write the family's bos/eos as text themselves.
    """
    fam = get_llm_family(family_name)
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(core.to_str()), unk_token="<unk>",
                                   pad_token="<pad>", bos_token=fam.bos, eos_token=fam.eos,
                                   additional_special_tokens=list(fam.extra_special))
