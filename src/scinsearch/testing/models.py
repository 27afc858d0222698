"""Tiny randomly initialised SigLIP, SigLIP 2 (fixed resolution) and SigLIP 2 NaFlex models with a real
processor and tokenizer, saved with `save_pretrained`, so the real loading code runs on them. Real
architectures with random weights (same arithmetic, same speed) come from
`scinsearch.models.random_vision_model`."""

from __future__ import annotations

import io
from pathlib import Path

from scinsearch.testing.photos import CONDITIONS
from scinsearch.testing.release import BODY_PARTS


def train_sentencepiece(path: Path, vocab_size: int = 60) -> None:
    """Train a tiny SentencePiece model in memory (T5 id layout: pad 0, </s> 1, <unk> 2, no BOS)."""
    import sentencepiece as spm

    sentences = [f"a photo of {c.lower()} on the {b.replace('_', ' ')}" for c in CONDITIONS for b in BODY_PARTS]
    sentences += ["itchy red ring on the arm", "dark raised bumpy patch", "a close up photo of skin"]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="unigram",
        hard_vocab_limit=False,
        character_coverage=1.0,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        pad_piece="<pad>",
        eos_piece="</s>",
        unk_piece="<unk>",
        normalization_rule_name="identity",
        minloglevel=2,
    )
    path.write_bytes(model.getvalue())


def save_random(model_class, config, processor, folder: Path, seed: int) -> Path:
    """Initialise `model_class(config)` from `seed` and save it with its processor, as a checkpoint is laid out."""
    import torch

    torch.manual_seed(seed)
    model_class(config).eval().save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


TINY_TOWER = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4)


def build_tiny_siglip(folder: Path, image_size: int = 32, seed: int = 0) -> Path:
    """A tiny random SigLIP (vision + text) with a real SiglipProcessor, saved with save_pretrained."""
    from transformers import SiglipConfig, SiglipModel, SiglipProcessor, SiglipTokenizer
    from transformers.models.siglip import SiglipImageProcessorPil

    folder.mkdir(parents=True, exist_ok=True)
    train_sentencepiece(folder / "spiece.model")
    tokenizer = SiglipTokenizer(
        vocab_file=str(folder / "spiece.model"), model_max_length=64, model_input_names=["input_ids"]
    )
    image_processor = SiglipImageProcessorPil(size={"height": image_size, "width": image_size})
    processor = SiglipProcessor(image_processor=image_processor, tokenizer=tokenizer)
    config = SiglipConfig(
        text_config=dict(
            TINY_TOWER,
            vocab_size=tokenizer.vocab_size,
            max_position_embeddings=64,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=None,
        ),
        vision_config=dict(TINY_TOWER, image_size=image_size, patch_size=8),
    )
    return save_random(SiglipModel, config, processor, folder, seed)


def tiny_gemma_vocab() -> dict[str, int]:
    """A character-level vocabulary in Gemma's id layout (pad 0, eos 1, bos 2, unk 3, mask 4): lower-case
    letters, digits, the word marker and some punctuation. Capitals are not in it (they become <unk>), so
    lower-casing changes the tokens, as it does for SigLIP 2's real tokenizer. (With no BPE merges,
    word-level entries would never be produced: every text would be a single <unk>.)"""
    import string

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<mask>": 4}
    for piece in "\u2581" + string.ascii_lowercase + string.digits + ",.-'":
        vocab.setdefault(piece, len(vocab))
    return vocab


def gemma_text_tower(vocab: dict[str, int]) -> dict:
    """The tiny text tower of both SigLIP 2 layouts, with Gemma's special token ids."""
    return dict(
        TINY_TOWER, vocab_size=len(vocab), max_position_embeddings=64, pad_token_id=0, eos_token_id=1, bos_token_id=2
    )


def build_tiny_siglip2_fixres(folder: Path, image_size: int = 32, seed: int = 0) -> Path:
    """A tiny random SigLIP 2 fixed-resolution model, laid out as google/siglip2-base-patch16-224 is: a
    SiglipModel with a SiglipProcessor whose tokenizer is Gemma's (not SigLIP's SentencePiece)."""
    from transformers import GemmaTokenizer, SiglipConfig, SiglipModel, SiglipProcessor
    from transformers.models.siglip import SiglipImageProcessorPil

    folder.mkdir(parents=True, exist_ok=True)
    vocab = tiny_gemma_vocab()
    tokenizer = GemmaTokenizer(vocab=vocab, merges=[], model_max_length=64, model_input_names=["input_ids"])
    image_processor = SiglipImageProcessorPil(size={"height": image_size, "width": image_size})
    processor = SiglipProcessor(image_processor=image_processor, tokenizer=tokenizer)
    config = SiglipConfig(
        text_config=gemma_text_tower(vocab),
        vision_config=dict(TINY_TOWER, image_size=image_size, patch_size=8),
    )
    return save_random(SiglipModel, config, processor, folder, seed)


def build_tiny_siglip2(folder: Path, max_num_patches: int = 16, seed: int = 0) -> Path:
    """A tiny random SigLIP 2 NaFlex model (aspect-preserving patches) with a real Siglip2Processor."""
    from transformers import Siglip2Config, Siglip2Model, Siglip2Processor
    from transformers.models.siglip2 import Siglip2ImageProcessorPil, Siglip2Tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = tiny_gemma_vocab()
    tokenizer = Siglip2Tokenizer(vocab=vocab, merges=[], model_max_length=64, model_input_names=["input_ids"])
    image_processor = Siglip2ImageProcessorPil(patch_size=8, max_num_patches=max_num_patches)
    processor = Siglip2Processor(image_processor=image_processor, tokenizer=tokenizer)
    config = Siglip2Config(
        text_config=gemma_text_tower(vocab),
        vision_config=dict(TINY_TOWER, patch_size=8, num_patches=max_num_patches),
    )
    return save_random(Siglip2Model, config, processor, folder, seed)
