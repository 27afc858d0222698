"""LoRA of the vision tower on the tiny SigLIP (CPU): it trains on train-split images only, stops at
--max-steps with a checkpoint, --resume ends with exactly the weights of an uninterrupted run, and the
result is a model folder the ordinary `Embedder` loads, whose vectors differ from the base model's."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from scinsearch.cli import main
from scinsearch.dataset import read_release
from scinsearch.embedding import Embedder

TRAIN = [
    "--method",
    "lora",
    "--device",
    "cpu",
    "--precision",
    "fp32",
    "--epochs",
    "2",
    "--batch-size",
    "8",
    "--learning-rate",
    "0.01",
    "--workers",
    "0",
    "--quiet",
]


def finetune(capsys, *arguments: str) -> tuple[int, str]:
    code = main(["finetune", *TRAIN, *arguments])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_siglip_dir, clean_release):
    """An uninterrupted run, and a run stopped after 3 steps and resumed; both through the CLI."""
    folder = tmp_path_factory.mktemp("lora")
    common = ["--scin-dir", str(clean_release), "--model", str(tiny_siglip_dir)]
    codes = [
        main(["finetune", *TRAIN, *common, "--out", str(folder / "full")]),
        main(["finetune", *TRAIN, *common, "--out", str(folder / "resumed"), "--max-steps", "3"]),
    ]
    stopped = torch.load(folder / "resumed" / "checkpoint" / "state.pt", weights_only=True)
    codes.append(main(["finetune", *TRAIN, *common, "--out", str(folder / "resumed"), "--resume"]))
    return folder, codes, stopped, common


def test_lora_resumes_to_the_same_weights_as_an_uninterrupted_run(runs, tiny_siglip_dir):
    folder, codes, stopped, _ = runs
    assert codes == [0, 0, 0]
    assert stopped["step"] == 3 and stopped["epoch"] == 1 and stopped["batch"] == 3 and stopped["optimiser"]["state"]
    full, resumed = (
        load_file(str(folder / "full" / "model.safetensors")),
        load_file(str(folder / "resumed" / "model.safetensors")),
    )
    base = load_file(str(tiny_siglip_dir / "model.safetensors"))
    assert full.keys() == resumed.keys() == base.keys()
    assert all(torch.equal(full[k], resumed[k]) for k in full)
    changed = [k for k in full if not torch.equal(full[k], base[k])]
    assert changed and all(
        "vision_model" in k and k.rsplit(".", 2)[-2] in ("q_proj", "k_proj", "v_proj", "out_proj") for k in changed
    )  # only the vision tower's attention, merged; text tower untouched
    record = json.loads((folder / "resumed" / "finetune.json").read_text())
    assert (
        record["training"]["steps"] == json.loads((folder / "full" / "finetune.json").read_text())["training"]["steps"]
    )


def test_the_model_folder_loads_like_any_checkpoint_and_embeds_differently(runs, tiny_siglip_dir, clean_release):
    folder, _, _, _ = runs
    tuned = Embedder(str(folder / "full"), device="cpu", precision="fp32")
    base = Embedder(str(tiny_siglip_dir), device="cpu", precision="fp32")
    files = [r.file for r in read_release(clean_release).records[:4]]
    before, after = base.embed_images(files), tuned.embed_images(files)
    assert after.shape == before.shape and np.allclose(np.linalg.norm(after, axis=1), 1, atol=1e-5)
    assert np.abs(after - before).max() > 1e-3
    assert np.allclose(tuned.embed_texts(["eczema"]), base.embed_texts(["eczema"]), atol=1e-6)


def test_lora_records_train_split_cases_only(runs, clean_release):
    folder, _, _, _ = runs
    record = json.loads((folder / "full" / "finetune.json").read_text())
    splits = {r.payload["case_id"]: r.payload["split"] for r in read_release(clean_release).records}
    used = record["train_case_ids"] + record["validation_case_ids"]
    assert used and {splits[c] for c in used} == {"train"}
    assert set(record["train_case_ids"]).isdisjoint(record["validation_case_ids"])
    assert record["method"] == "lora" and record["lora"]["merged"] and record["versions"]["peft"]
    assert record["validation"]["frozen"] and record["validation"]["finetuned"]
    assert record["training"]["history"][0]["epoch"] == 0 and record["training"]["stopped"] in (
        "epochs",
        "early stopping",
    )


def test_lora_refusals_are_one_line(runs, tmp_path, capsys):
    folder, _, _, common = runs
    for arguments, message in [
        ([*common, "--out", str(folder / "full")], "holds a checkpoint: continue it with --resume"),
        ([*common, "--out", str(folder / "full"), "--resume", "--rank", "4"], "made with another model"),
        ([*common, "--out", str(tmp_path / "new"), "--resume"], "no checkpoint"),
        (["--model", common[-1], "--out", str(tmp_path / "x")], "no data given"),
    ]:
        code, output = finetune(capsys, *arguments)
        assert code == 1 and message in output and output.count("\n") == 1, (arguments, output)
