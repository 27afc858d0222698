"""`scinsearch finetune` (train an adapter or a LoRA model) and `scinsearch finetune apply` (an adapted
collection). Thin: options become settings and configs, the work is in `scinsearch.finetune`."""

from __future__ import annotations

from pathlib import Path

import click
from click.core import ParameterSource

from scinsearch.commands.options import (
    data_options,
    folder_option,
    make_settings,
    model_options,
    path_option,
    quiet_option,
    store_options,
)
from scinsearch.errors import ScinSearchError
from scinsearch.finetune.config import CONFIGS, AdapterConfig, FinetuneConfig, LoraConfig

METHODS = tuple(CONFIGS)
PER_METHOD = ("rank", "epochs", "patience", "batch_size", "learning_rate")  # defaults differ by method


def defaults(name: str) -> str:
    """The two methods' defaults of an option, for its help (read from the configs, never repeated)."""
    return f"adapter {getattr(AdapterConfig, name):g}, LoRA {getattr(LoraConfig, name):g}"


LORA_ONLY = ("scin_dir", "metadata", "images_dir", "resume", "max_steps", "checkpoint_every", "workers", "cache_dir")


@click.group(invoke_without_command=True)
@store_options
@model_options
@data_options
@folder_option(
    "--out", "out_dir", help="Output folder: the adapter (adapter.safetensors + adapter.json) or the LoRA model folder."
)
@click.option(
    "--method",
    type=click.Choice(METHODS),
    default="adapter",
    show_default=True,
    help="adapter: a small map on the stored vectors (CPU, minutes). lora: LoRA of the vision tower "
    "on the images (a GPU job; needs --scin-dir or --metadata/--images-dir).",
)
@click.option(
    "--seed", type=int, default=FinetuneConfig.seed, show_default=True, help="Seed of every random choice of the run."
)
@click.option(
    "--validation-fraction",
    type=click.FloatRange(0.01, 0.9),
    default=FinetuneConfig.validation_fraction,
    show_default=True,
    help="Share of the train-split cases held out (by case) for early stopping.",
)
@click.option("--rank", type=click.IntRange(min=1), default=None, help=f"Rank ({defaults('rank')}).")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help=f"Most epochs ({defaults('epochs')}).")
@click.option(
    "--patience",
    type=click.IntRange(min=1),
    default=None,
    help=f"Stop after this many epochs without a better validation loss ({defaults('patience')}).",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help=f"Batch size ({defaults('batch_size')}).")
@click.option(
    "--learning-rate",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help=f"AdamW learning rate ({defaults('learning_rate')}).",
)
@click.option(
    "--temperature",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Fix the temperature of the prototype loss (default: learnt, starting from the best fit to the frozen "
    "vectors).",
)
@click.option("--resume", is_flag=True, help="LoRA: continue the checkpoint in --out.")
@click.option(
    "--max-steps",
    type=click.IntRange(min=1),
    default=None,
    help="LoRA: stop after this many optimiser steps in all (a checkpoint is saved; --resume continues).",
)
@click.option(
    "--checkpoint-every",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="LoRA: save a checkpoint every N steps (and at every epoch end).",
)
@click.option("--workers", type=click.IntRange(min=0), default=None, help="LoRA: image decoding processes.")
@path_option(
    "--cache-dir",
    envvar="SCINSEARCH_CACHE_DIR",
    help="LoRA: the pixel cache of `embed --cache-dir` (decoded images are reused).",
)
@click.option("--quiet", is_flag=True, help="Less progress output.")
@click.pass_context
def finetune(
    ctx,
    out_dir,
    method,
    seed,
    validation_fraction,
    rank,
    epochs,
    patience,
    batch_size,
    learning_rate,
    temperature,
    resume,
    max_steps,
    checkpoint_every,
    workers,
    quiet,
    scin_dir,
    metadata,
    images_dir,
    **options,
):
    """Fine-tune for SCIN on the train split only; measure it with `scinsearch evaluate --adapter`.

    \b
    scinsearch finetune --collection scin_dermatology --out models/scin-adapter
    scinsearch finetune --method lora --scin-dir ~/data/scin --out models/siglip-scin
    scinsearch finetune apply --adapter models/scin-adapter --collection scin_dermatology \\
        --to-collection scin_dermatology_adapted
    """
    if ctx.invoked_subcommand is not None:
        given = [p.name for p in ctx.command.params if ctx.get_parameter_source(p.name) == ParameterSource.COMMANDLINE]
        if given:
            raise ScinSearchError(
                f"options before `{ctx.invoked_subcommand}` belong to training, not to it: "
                f"put {', '.join('--' + g.replace('_', '-') for g in given)} after "
                f"`{ctx.invoked_subcommand}`"
            )
        return
    if out_dir is None:
        raise ScinSearchError("--out is required: the folder to write the adapter or model to")
    given = dict(zip(PER_METHOD, (rank, epochs, patience, batch_size, learning_rate)))
    config = CONFIGS[method](
        **{name: value for name, value in given.items() if value is not None},
        seed=seed,
        validation_fraction=validation_fraction,
        temperature=temperature,
    )
    config.check()
    log = (lambda line: None) if quiet else (lambda line: click.echo(line, err=True))
    if method == "adapter":
        stray = [name for name in LORA_ONLY if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE]
        if stray:
            raise ScinSearchError(
                f"{', '.join('--' + s.replace('_', '-') for s in stray)} only apply to "
                f"--method lora (the adapter trains on the stored vectors)"
            )
        train_adapter_command(make_settings(**options), out_dir, config, log)
    else:
        settings = make_settings(workers=workers, **options)
        train_lora_command(
            settings,
            out_dir,
            config,
            (scin_dir, metadata, images_dir),
            resume=resume,
            max_steps=max_steps,
            checkpoint_every=checkpoint_every,
            workers=workers,
            log=log,
        )


def train_adapter_command(settings, out_dir: Path, config: AdapterConfig, log) -> None:
    from scinsearch.finetune.adapter import save_adapter, train_adapter
    from scinsearch.vectors.adapter import require_frozen
    from scinsearch.vectors.neighbours import read_collection

    info, table = read_collection(settings, progress=True, check=lambda info: require_frozen(info, settings.collection))
    trained = train_adapter(
        table,
        model=info.model,
        collection=settings.collection,
        config=config,
        store=settings.store_description(),
        log=log,
    )
    folder = save_adapter(trained, out_dir)
    report_validation(trained.record, "adapted")
    click.echo(
        f"wrote {folder} (adapter {trained.record['adapter_id'][:12]}); measure it with: scinsearch evaluate "
        f"--collection {settings.collection} --adapter {folder} --out reports/adapter/"
    )


def train_lora_command(settings, out_dir: Path, config: LoraConfig, data: tuple, **options) -> None:
    from scinsearch.dataset import load_dataset
    from scinsearch.finetune.lora import train_lora
    from scinsearch.vectors.adapter import read_json

    dataset = load_dataset(*data)
    folder = train_lora(dataset, settings, out_dir, config, **options)
    report_validation(read_json(folder / "finetune.json", "fine-tuned model"), "finetuned")
    click.echo(f"wrote {folder}; embed with it: scinsearch embed --model {folder} --collection <new collection> ...")


def report_validation(record: dict, tuned: str) -> None:
    """The validation numbers the run recorded (train-split cases only), frozen vs tuned."""
    validation = record.get("validation") or {}
    before = (validation.get("frozen") or {}).get("knn_majority", {}).get("top1_accuracy")
    after = (validation.get(tuned) or {}).get("knn_majority", {}).get("top1_accuracy")
    if before is not None and after is not None:
        click.echo(f"validation (held-out train cases) kNN top-1: frozen {before:.3f}, {tuned} {after:.3f}")


@finetune.command(name="apply")
@folder_option("--adapter", "adapter_dir", required=True, help="The adapter folder `scinsearch finetune` wrote.")
@click.option("--to-collection", required=True, help="The new collection for the adapted vectors.")
@click.option("--recreate", is_flag=True, help="Replace --to-collection if it exists with other content.")
@quiet_option
@store_options
def apply(adapter_dir, to_collection, recreate, quiet, **options):
    """Write a collection's vectors, transformed by an adapter, to a new collection (the original is untouched).

    \b
    scinsearch finetune apply --adapter models/scin-adapter --collection scin_dermatology \\
        --to-collection scin_dermatology_adapted
    scinsearch serve --collection scin_dermatology_adapted --adapter models/scin-adapter
    """
    from scinsearch.finetune.apply import apply_adapter
    from scinsearch.vectors.adapter import Adapter

    summary = apply_adapter(
        make_settings(**options), Adapter.load(adapter_dir), to_collection, recreate=recreate, progress=not quiet
    )
    for line in summary.lines():
        click.echo(line.replace("<the adapter folder>", str(adapter_dir)))


COMMANDS = [finetune]
