"""Test and benchmark scaffolding: offline stand-ins for what cannot be downloaded in CI.

Nothing here is needed for real data; the product never imports it.

- `write_release` writes a small data set in the official SCIN layout, with the release's traps
  (Python-literal cells, commas inside names, `{}` labels, shared and missing images, broken files).
- `build_tiny_siglip`, `build_tiny_siglip2_fixres` and `build_tiny_siglip2` save tiny randomly initialised
  SigLIP, SigLIP 2 (fixed resolution) and SigLIP 2 NaFlex models with a real processor and tokenizer
  (`save_pretrained`), so the real loading code runs on them.
- `scin_sized_png` makes a photo-like PNG the size of a SCIN image, for benchmarks.
- `SabotagedPreprocessor` kills or hangs the process that decodes chosen files, as a decoder that
  segfaults, runs out of memory or loops would, to test that an embed run survives it.
Real architectures with random weights (same arithmetic, same speed) come from
`scinsearch.models.random_vision_model`. The test suite (tests/conftest.py) and benchmarks/ use these.
"""

from __future__ import annotations

import csv
import dataclasses
import faulthandler
import io
import os
import random
import signal
import time
from pathlib import Path

import numpy as np
from PIL import Image

from scinsearch.embedding import Preprocessor

CONDITIONS = [
    "Eczema",
    "Allergic Contact Dermatitis",
    "Urticaria",
    "Insect Bite",
    "Psoriasis",
    "Tinea",
    "Acute dermatitis, NOS",
    "Abrasion, scrape, or scab",
]
CONDITION_COLOURS = {
    name: ((37 * i) % 256, (91 * i + 40) % 256, (151 * i + 80) % 256) for i, name in enumerate(CONDITIONS)
}
BODY_PARTS = ["head_or_neck", "arm", "palm", "leg", "torso_front", "foot_sole"]
TEXTURES = ["raised_or_bumpy", "flat", "rough_or_flaky", "fluid_filled"]
SYMPTOMS = ["itching", "burning", "pain", "bleeding"]
AGES = ["AGE_18_TO_29", "AGE_30_TO_39", "AGE_40_TO_49", "AGE_UNKNOWN"]
SEXES = ["FEMALE", "MALE", "OTHER_OR_UNSPECIFIED"]
SELF_FST = ["FST1", "FST2", "FST3", "FST4", "FST5", "FST6", "NONE_IDENTIFIED", ""]
GRADABILITY = [
    "DEFAULT_YES_IMAGE_QUALITY_SUFFICIENT",
    "NO_IMAGE_QUALITY_INSUFFICIENT",
    "YES_IMAGE_QUALITY_SUFFICIENT_NO_DISCERNIBLE_PATHOLOGY",
]
SHOTS = ["CLOSE_UP", "AT_AN_ANGLE", "AT_DISTANCE"]

CASE_COLUMNS = (
    ["case_id", "source", "release", "year", "age_group", "sex_at_birth", "fitzpatrick_skin_type"]
    + [f"race_ethnicity_{r}" for r in ("asian", "black_or_african_american", "white")]
    + [f"textures_{t}" for t in TEXTURES]
    + [f"body_parts_{b}" for b in BODY_PARTS]
    + [f"condition_symptoms_{s}" for s in SYMPTOMS]
    + [
        "other_symptoms_fever",
        "related_category",
        "condition_duration",
        "image_1_path",
        "image_2_path",
        "image_3_path",
        "image_1_shot_type",
        "image_2_shot_type",
        "image_3_shot_type",
        "combined_race",
        "race_ethnicity_two_or_more_after_mitigation",
    ]
)
LABEL_COLUMNS = (
    ["case_id"]
    + [f"dermatologist_gradable_for_skin_condition_{n}" for n in (1, 2, 3)]
    + [
        "dermatologist_skin_condition_on_label_name",
        "dermatologist_skin_condition_confidence",
        "weighted_skin_condition_label",
    ]
    + [f"dermatologist_gradable_for_fitzpatrick_skin_type_{n}" for n in (1, 2, 3)]
    + [f"dermatologist_fitzpatrick_skin_type_label_{n}" for n in (1, 2, 3)]
    + [
        "gradable_for_monk_skin_tone_india",
        "gradable_for_monk_skin_tone_us",
        "monk_skin_tone_label_india",
        "monk_skin_tone_label_us",
    ]
)
MISSING_IMAGE = "dataset/images/-2243186711511406658.png"


@dataclasses.dataclass(frozen=True)
class SabotagedPreprocessor(Preprocessor):
    """A preprocessor whose decoding of the files named by stem kills its process with `signal_number`
    (`crash_on`), never returns (`hang_on`) or takes `PAUSE_SECONDS` and then succeeds (`pause_on`: a
    fine file a test can catch in flight). Test-only: the product never builds one."""

    PAUSE_SECONDS = 2.0
    crash_on: frozenset = frozenset()
    hang_on: frozenset = frozenset()
    pause_on: frozenset = frozenset()
    signal_number: int = signal.SIGKILL

    @classmethod
    def around(cls, preprocessor: Preprocessor, **sabotage) -> SabotagedPreprocessor:
        return cls(**{f.name: getattr(preprocessor, f.name) for f in dataclasses.fields(Preprocessor)}, **sabotage)

    def load(self, source):
        stem = Path(source).stem
        if stem in self.crash_on:
            faulthandler.disable()  # pytest's traceback dump would only clutter the test output
            os.kill(os.getpid(), self.signal_number)
            time.sleep(60)  # a signal that does not end the process at once
        if stem in self.hang_on:
            time.sleep(3600)
        if stem in self.pause_on:
            time.sleep(self.PAUSE_SECONDS)
        return super().load(source)


def condition_image(condition: str | None, size: tuple[int, int], rng: random.Random) -> Image.Image:
    """A photo-like picture whose colour is set by the condition, so similar cases look similar."""
    base = np.array(CONDITION_COLOURS.get(condition, (128, 128, 128)), dtype=np.float32)
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    shade = (0.75 + 0.25 * np.sin(xx / (17 + rng.random() * 9)) * np.cos(yy / (23 + rng.random() * 9)))[..., None]
    noise = np.random.default_rng(rng.randrange(2**32)).normal(0, 12, (height, width, 3))
    pixels = np.clip(base * shade + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def case_rows(case_id: str, number: int, rng: random.Random, images: list[str]) -> tuple[dict, dict]:
    """One row of scin_cases.csv and one of scin_labels.csv, in the release's literal formats."""
    labelled = number % 5 != 4  # every fifth case unlabelled: `{}` and `[]`
    main = CONDITIONS[number % len(CONDITIONS)]
    other = CONDITIONS[(number + 3) % len(CONDITIONS)]
    weighted = {main: 0.67, other: 0.33} if labelled and number % 3 else ({main: 1.0} if labelled else {})
    names = [main, other, main] if labelled else []
    case = {column: "" for column in CASE_COLUMNS}
    case.update(
        {
            "case_id": case_id,
            "source": "SCIN",
            "release": "1.0.0",
            "year": "2023",
            "age_group": AGES[number % len(AGES)],
            "sex_at_birth": SEXES[number % len(SEXES)],
            "fitzpatrick_skin_type": SELF_FST[number % len(SELF_FST)],
            "condition_duration": "ONE_TO_FOUR_WEEKS" if number % 2 else "",
            "related_category": "RASH",
            f"body_parts_{BODY_PARTS[number % len(BODY_PARTS)]}": "YES",
            "body_parts_arm": "YES",
            f"textures_{TEXTURES[number % len(TEXTURES)]}": "YES",
            f"condition_symptoms_{SYMPTOMS[number % len(SYMPTOMS)]}": "YES",
            "race_ethnicity_white" if number % 2 else "race_ethnicity_asian": "YES",
        }
    )
    for n, path in enumerate(images, start=1):
        case[f"image_{n}_path"] = path
        case[f"image_{n}_shot_type"] = SHOTS[(number + n) % 3]
    label = {column: "" for column in LABEL_COLUMNS}
    derm_fst = f"FST{number % 6 + 1}"
    label.update(
        {
            "case_id": case_id,
            "dermatologist_gradable_for_skin_condition_1": GRADABILITY[0 if labelled else number % 3],
            "dermatologist_skin_condition_on_label_name": repr(names),
            "dermatologist_skin_condition_confidence": repr([4, 3, 4] if labelled else []),
            "weighted_skin_condition_label": repr(weighted),
            "dermatologist_gradable_for_fitzpatrick_skin_type_1": "YES",
            "dermatologist_fitzpatrick_skin_type_label_1": derm_fst,
            "gradable_for_monk_skin_tone_india": "True",
            "gradable_for_monk_skin_tone_us": "True",
            "monk_skin_tone_label_india": f"{number % 10 + 1}.0",
            "monk_skin_tone_label_us": "" if number % 7 == 6 else f"{(number * 3) % 10 + 1}.0",
        }
    )
    return case, label


def write_release(
    root: Path, cases: int = 12, seed: int = 0, image_size: tuple[int, int] = (48, 64), broken_files: bool = True
) -> Path:
    """Write a SCIN-shaped release under `root/dataset/` and return `root`.

    With `broken_files` (needs at least 12 cases), it holds the release's traps: an image shared by two
    cases, the one missing image of the real release, a truncated PNG, an empty file, a text file named
    .png, and images in RGBA, P, LA, I;16, CMYK (a JPEG body) and with an EXIF rotation."""
    rng = random.Random(seed)
    images_dir = root / "dataset" / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    case_table, label_table = [], []
    for number in range(cases):
        case_id = str(rng.randrange(-(2**63), 2**63))
        paths = [f"dataset/images/{rng.randrange(-(2**63), 2**63)}.png" for _ in range(1 + number % 3)]
        case, label = case_rows(case_id, number, rng, paths)
        condition = max(eval_weights(label), key=eval_weights(label).get, default=None)
        for path in paths:
            condition_image(condition, image_size, rng).save(root / path)
        case_table.append(case)
        label_table.append(label)
    if broken_files and cases >= 12:
        add_traps(root, case_table, rng, image_size)
    write_table(root / "dataset" / "scin_cases.csv", CASE_COLUMNS, case_table)
    write_table(root / "dataset" / "scin_labels.csv", LABEL_COLUMNS, label_table)
    return root


def eval_weights(label: dict) -> dict:
    import ast

    return ast.literal_eval(label["weighted_skin_condition_label"])


def add_traps(root: Path, case_table: list[dict], rng: random.Random, size: tuple[int, int]) -> None:
    """Mutate the written cases so they carry the real release's traps and some broken files."""
    case_table[1]["image_2_path"] = case_table[0]["image_1_path"]  # one image, two cases
    case_table[2]["image_1_path"] = MISSING_IMAGE  # referenced, not in the release
    broken = {
        "truncated": lambda p: p.write_bytes(png_bytes(size)[:60]),
        "empty": lambda p: p.write_bytes(b""),
        "not_an_image": lambda p: p.write_text("this is not a picture"),
    }
    modes = {"rgba": "RGBA", "palette": "P", "grey_alpha": "LA", "sixteen_bit": "I;16"}
    targets = [c for c in case_table[3:] if c["image_2_path"]]
    for case, (_name, writer) in zip(targets, broken.items()):
        writer(root / case["image_2_path"])
    odd = [c for c in case_table[3:] if c["image_1_path"]]
    for case, (_name, mode) in zip(odd, modes.items()):
        picture = condition_image(CONDITIONS[0], size, rng)
        if mode == "I;16":
            grey = np.asarray(picture.convert("L"), dtype=np.uint16) * 257
            picture = Image.fromarray(grey)  # uint16 array -> mode I;16
        else:
            picture = picture.convert(mode)
        picture.save(root / case["image_1_path"])
    cmyk_case, rotated_case = odd[len(modes)], odd[len(modes) + 1]
    condition_image(CONDITIONS[1], size, rng).convert("CMYK").save(root / cmyk_case["image_1_path"], format="JPEG")
    rotated = condition_image(CONDITIONS[2], size, rng)
    exif = rotated.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise when displayed
    rotated.save(root / rotated_case["image_1_path"], exif=exif)


def png_bytes(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    condition_image(CONDITIONS[0], size, random.Random(1)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_table(path: Path, columns: list[str], rows: list[dict]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def scin_sized_png(seed: int = 0, size: tuple[int, int] = (810, 1080)) -> bytes:
    """A photo-like PNG the size of a SCIN image (about 810x1080, ~1 MB), for benchmarks."""
    buffer = io.BytesIO()
    condition_image(CONDITIONS[seed % len(CONDITIONS)], size, random.Random(seed)).save(buffer, format="PNG")
    return buffer.getvalue()


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


TINY_TOWER = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4)


def build_tiny_siglip(folder: Path, image_size: int = 32, seed: int = 0) -> Path:
    """A tiny random SigLIP (vision + text) with a real SiglipProcessor, saved with save_pretrained."""
    import torch
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
    torch.manual_seed(seed)
    model = SiglipModel(config).eval()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


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


def build_tiny_siglip2_fixres(folder: Path, image_size: int = 32, seed: int = 0) -> Path:
    """A tiny random SigLIP 2 fixed-resolution model, laid out as google/siglip2-base-patch16-224 is: a
    SiglipModel with a SiglipProcessor whose tokenizer is Gemma's (not SigLIP's SentencePiece)."""
    import torch
    from transformers import GemmaTokenizer, SiglipConfig, SiglipModel, SiglipProcessor
    from transformers.models.siglip import SiglipImageProcessorPil

    folder.mkdir(parents=True, exist_ok=True)
    vocab = tiny_gemma_vocab()
    tokenizer = GemmaTokenizer(vocab=vocab, merges=[], model_max_length=64, model_input_names=["input_ids"])
    image_processor = SiglipImageProcessorPil(size={"height": image_size, "width": image_size})
    processor = SiglipProcessor(image_processor=image_processor, tokenizer=tokenizer)
    config = SiglipConfig(
        text_config=dict(
            TINY_TOWER,
            vocab_size=len(vocab),
            max_position_embeddings=64,
            pad_token_id=0,
            eos_token_id=1,
            bos_token_id=2,
        ),
        vision_config=dict(TINY_TOWER, image_size=image_size, patch_size=8),
    )
    torch.manual_seed(seed)
    model = SiglipModel(config).eval()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def build_tiny_siglip2(folder: Path, max_num_patches: int = 16, seed: int = 0) -> Path:
    """A tiny random SigLIP 2 NaFlex model (aspect-preserving patches) with a real Siglip2Processor."""
    import torch
    from transformers import Siglip2Config, Siglip2Model, Siglip2Processor
    from transformers.models.siglip2 import Siglip2ImageProcessorPil, Siglip2Tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = tiny_gemma_vocab()
    tokenizer = Siglip2Tokenizer(vocab=vocab, merges=[], model_max_length=64, model_input_names=["input_ids"])
    image_processor = Siglip2ImageProcessorPil(patch_size=8, max_num_patches=max_num_patches)
    processor = Siglip2Processor(image_processor=image_processor, tokenizer=tokenizer)
    config = Siglip2Config(
        text_config=dict(
            TINY_TOWER,
            vocab_size=len(vocab),
            max_position_embeddings=64,
            pad_token_id=0,
            eos_token_id=1,
            bos_token_id=2,
        ),
        vision_config=dict(TINY_TOWER, patch_size=8, num_patches=max_num_patches),
    )
    torch.manual_seed(seed)
    model = Siglip2Model(config).eval()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
