"""One config for both fine-tuning methods: the CLI's defaults are the configs', early stopping is one rule."""

from __future__ import annotations

import dataclasses

import pytest

from scinsearch.cli import main
from scinsearch.commands import finetune_cmds
from scinsearch.errors import ScinSearchError
from scinsearch.finetune.adapter import train_adapter
from scinsearch.finetune.config import AdapterConfig, FinetuneConfig, LoraConfig, improves, patience_spent
from scinsearch.testing.planted import PlantedSpace, planted_points
from scinsearch.vectors.neighbours import table_from_points


@pytest.fixture
def captured(monkeypatch):
    """The config each method's command receives, without training anything."""
    seen = {}
    monkeypatch.setattr(finetune_cmds, "train_adapter_command", lambda _s, _o, config, _l: seen.update(a=config))
    monkeypatch.setattr(finetune_cmds, "train_lora_command", lambda _s, _o, config, _d, **_: seen.update(l=config))
    return seen


def test_cli_defaults_are_the_configs(captured, tmp_path):
    assert main(["finetune", "--collection", "c", "--out", str(tmp_path / "a")]) == 0
    assert main(["finetune", "--method", "lora", "--out", str(tmp_path / "b")]) == 0
    assert captured == {"a": AdapterConfig(), "l": LoraConfig()}
    assert (LoraConfig().rank, LoraConfig().epochs) != (AdapterConfig().rank, AdapterConfig().epochs)


def test_cli_options_override_one_field_and_keep_the_rest(captured, tmp_path):
    arguments = ["--rank", "3", "--epochs", "7", "--seed", "5", "--temperature", "0.5"]
    assert main(["finetune", "--method", "lora", *arguments, "--out", str(tmp_path / "b")]) == 0
    assert captured["l"] == dataclasses.replace(LoraConfig(), rank=3, epochs=7, seed=5, temperature=0.5)


def test_cli_help_names_the_configs_defaults():
    option = {p.name: p for p in finetune_cmds.finetune.params}
    assert f"adapter {AdapterConfig.rank}, LoRA {LoraConfig.rank}" in option["rank"].help
    assert option["seed"].default == FinetuneConfig.seed
    assert option["validation_fraction"].default == FinetuneConfig.validation_fraction


@pytest.mark.parametrize(
    "config",
    [AdapterConfig(rank=0), LoraConfig(patience=0), LoraConfig(dropout=1.0), AdapterConfig(learning_rate=0)],
)
def test_bad_settings_are_refused_by_the_shared_check(config):
    with pytest.raises(ScinSearchError):
        config.check()


def test_early_stopping_rule():
    assert improves(0.5, 0.6) and not improves(0.6, 0.6) and not improves(0.6 - 1e-7, 0.6)
    assert patience_spent(5, 3, 2) and not patience_spent(4, 3, 2)


def test_adapter_stops_after_patience_epochs_without_a_better_loss():
    table = table_from_points(planted_points(PlantedSpace(), 120, seed=3))
    config = AdapterConfig(rank=4, epochs=60, patience=1, learning_rate=0.05)
    run = train_adapter(table, model="m", collection="c", config=config).record["training"]
    assert run["stopped"] == "early stopping" and run["epochs_run"] == run["best_epoch"] + config.patience
