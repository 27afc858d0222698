"""No signal, no change (issue 24): with random labels the adapter stays the identity (best epoch 0) on 3
seeds, a real planted signal still gains; and the adapter's id binds its training record to its weights, so
an edited adapter.json is refused by evaluate, apply, search and serve."""

from __future__ import annotations

import json

import numpy as np
import pytest

from scinsearch.cli import main
from scinsearch.errors import ScinSearchError
from scinsearch.finetune.adapter import train_adapter
from scinsearch.finetune.config import AdapterConfig
from scinsearch.store import open_store
from scinsearch.testing.planted import PlantedSpace, planted_points, planted_with_adapter
from scinsearch.vectors.adapter import Adapter, query_adapter, transform
from scinsearch.vectors.neighbours import table_from_points

CONFIG = AdapterConfig(rank=16, epochs=3)  # the id binding needs weights, not a good adapter


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_labels_keep_the_identity(seed):
    """Train labels shuffled across train cases (600 planted cases): before the fair start, seed 1 kept
    epoch 9 (the identity's head was fitted on the rows it was scored against, so calibrating it looked
    like progress)."""
    table = table_from_points(planted_points(PlantedSpace(seed=seed), 600, seed=seed + 1, shuffle_train_labels=True))
    trained = train_adapter(table, model="m", collection="c", config=AdapterConfig(rank=16, seed=seed))
    assert trained.record["training"]["best_epoch"] == 0
    assert np.allclose(transform(trained.module, table.vectors), table.vectors, atol=1e-6)
    assert float(trained.module.down.detach().abs().max()) == 0.0


def test_a_real_signal_still_gains_clearly():
    table = table_from_points(planted_points(PlantedSpace(seed=1), 600, seed=2))
    trained = train_adapter(table, model="m", collection="c", config=AdapterConfig(rank=16, seed=1, epochs=30))
    selection = trained.record["training"]["selection"]
    assert trained.record["training"]["best_epoch"] > 0 and selection["kept"] == "tuned"
    assert selection["improvement"] > 5 * selection["standard_error"]
    validation = trained.record["validation"]
    assert (
        validation["adapted"]["knn_majority"]["top1_accuracy"]
        > validation["frozen"]["knn_majority"]["top1_accuracy"] + 0.3
    )


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    return planted_with_adapter(
        tmp_path_factory.mktemp("bound"), planted_points(PlantedSpace(seed=3), 300, seed=4), CONFIG
    )


def edited_copy(adapter_dir, tmp_path, edit) -> str:
    """The adapter folder with its record edited (weights untouched)."""
    copy = tmp_path / "edited"
    copy.mkdir(parents=True)
    (copy / "adapter.safetensors").write_bytes((adapter_dir / "adapter.safetensors").read_bytes())
    record = json.loads((adapter_dir / "adapter.json").read_text())
    edit(record)
    (copy / "adapter.json").write_text(json.dumps(record))
    return str(copy)


def drop_cases(record):
    record["train_case_ids"] = record["train_case_ids"][10:]


def test_the_id_covers_the_record(saved, tmp_path):
    _, adapter_dir = saved
    adapter = Adapter.load(adapter_dir)
    assert adapter.id != adapter.record["weights"]["sha256"]
    edits = [
        drop_cases,
        lambda r: r["hyperparameters"].update(rank=8),
        lambda r: r.update(seed=5),
        lambda r: r["data"].update(validation_cases=1),
    ]
    for number, edit in enumerate(edits):
        folder = edited_copy(adapter_dir, tmp_path / str(number), edit)
        with pytest.raises(ScinSearchError, match="edited or damaged") as caught:
            Adapter.load(folder)
        assert "\n" not in str(caught.value)
    folder = edited_copy(adapter_dir, tmp_path / "id", lambda r: r.update(adapter_id=r["weights"]["sha256"]))
    with pytest.raises(ScinSearchError, match="edited or damaged"):  # the old id (the weights' hash) is refused
        Adapter.load(folder)


def test_an_edited_record_is_refused_by_every_command(saved, tmp_path, capsys):
    settings, adapter_dir = saved
    edited = edited_copy(adapter_dir, tmp_path, drop_cases)
    store = ["--qdrant-path", str(settings.qdrant_path)]
    adapted = str(tmp_path / "adapted")
    assert (
        main(
            [
                "finetune",
                "apply",
                *store,
                "--adapter",
                str(adapter_dir),
                "--collection",
                "planted",
                "--to-collection",
                "planted_adapted",
            ]
        )
        == 0
    )
    capsys.readouterr()
    image = tmp_path / "photo.png"
    from PIL import Image

    Image.new("RGB", (32, 32), (120, 80, 60)).save(image)
    for arguments in (
        ["evaluate", *store, "--collection", "planted", "--adapter", edited, "--out", adapted],
        ["finetune", "apply", *store, "--adapter", edited, "--collection", "planted", "--to-collection", "other"],
        ["search", *store, "--collection", "planted_adapted", "--adapter", edited, "--image", str(image)],
        ["serve", *store, "--collection", "planted_adapted", "--adapter", edited, "--port", "1"],
    ):
        code = main(arguments)
        err = capsys.readouterr().err
        assert code == 1 and "edited or damaged" in err and err.count("\n") == 1, (arguments[0], err)
    info = open_store(settings.replace(collection="planted_adapted"))
    try:
        with pytest.raises(ScinSearchError, match="edited or damaged"):
            query_adapter(edited, info.info(), "planted_adapted")
    finally:
        info.close()
