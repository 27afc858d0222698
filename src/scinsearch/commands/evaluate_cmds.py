"""`scinsearch evaluate`: measure how well similar-case search works on a collection, by skin type."""

from __future__ import annotations

from pathlib import Path

import click

from scinsearch.commands.options import (
    collections_options,
    folder_option,
    make_settings,
    model_options,
    model_was_given,
    option_group,
    store_options,
)

measurement_options = option_group(
    click.option(
        "--k", type=click.IntRange(min=1), default=10, show_default=True, help="Neighbouring cases per query."
    ),
    click.option(
        "--bootstrap",
        type=click.IntRange(min=0),
        default=1000,
        show_default=True,
        help="Case-level bootstrap resamples for the 95% intervals (0: no intervals, no verdicts).",
    ),
    click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap and random baseline."),
)
"""How `evaluate` and `compare` measure: neighbours per query, bootstrap resamples, seed."""


@click.command()
@store_options
@model_options
@folder_option(
    "--out", "out_dir", required=True, help="Folder for metrics.json, report.md and the PNG plots (created if missing)."
)
@click.option(
    "--leave-case-out",
    is_flag=True,
    help="Query every labelled image against all other cases (default: test split against train split).",
)
@measurement_options
@click.option(
    "--zero-shot",
    is_flag=True,
    help="Also score the condition names through the text tower (loads the collection's model; a --model of "
    "another vector space is refused).",
)
@folder_option(
    "--adapter",
    help="Also measure this `scinsearch finetune` adapter (vectors transformed in memory) and write frozen vs "
    "adapted side by side; test-split queries only.",
)
def evaluate(out_dir, leave_case_out, k, bootstrap, seed, zero_shot, adapter, **options):
    """Measure similar-case search: accuracy, recall@k and AUC with baselines and 95% intervals, by skin type.

    \b
    scinsearch evaluate --collection scin_dermatology --out reports/siglip-base/
    scinsearch evaluate --leave-case-out --out reports/siglip-base-lco/
    scinsearch evaluate --adapter models/scin-adapter --out reports/adapter/
    """
    from scinsearch.errors import ScinSearchError
    from scinsearch.evaluation import evaluate_collection

    if adapter is not None and leave_case_out:
        raise ScinSearchError(
            "--adapter compares on the test split only (leave-case-out would query the cases the adapter was "
            "trained on): drop --leave-case-out"
        )
    settings = make_settings(**options)
    zero_shot_model = settings.model if model_was_given() else None
    measure = dict(k=k, bootstrap=bootstrap, seed=seed, zero_shot=zero_shot, zero_shot_model=zero_shot_model)
    if adapter is not None:
        return evaluate_with_adapter(settings, adapter, out_dir, **measure)
    protocol = "leave-case-out" if leave_case_out else "split"
    result = evaluate_collection(settings, protocol=protocol, out_dir=out_dir, progress=True, **measure)
    echo_result(result.table_lines(), ", ".join(str(f) for f in result.files))


def evaluate_with_adapter(settings, adapter_dir: Path, out_dir: Path, **options) -> None:
    """Frozen vs adapted on the test split (the adapter was trained on train-split cases)."""
    from scinsearch.evaluation.compare import evaluate_adapter
    from scinsearch.vectors.adapter import Adapter

    comparison = evaluate_adapter(settings, Adapter.load(adapter_dir), out_dir=out_dir, progress=True, **options)
    written = f"{out_dir / 'report.md'}, {out_dir / 'metrics.json'} and the frozen/ and adapted/ reports"
    echo_result(comparison.table_lines(), written)


@click.command()
@collections_options
@folder_option(
    "--out", "out_dir", required=True, help="Folder for metrics.json, report.md, the plot and each collection's report."
)
@measurement_options
def compare(collections, out_dir, k, bootstrap, seed, **options):
    """Compare collections of the same images (other models, or frozen and `finetune apply`-ed) on the same
    test queries: every metric overall and by skin type, each against the first, Holm-adjusted.

    \b
    scinsearch compare --collection scin_siglip_base --collection scin_siglip2 --out reports/models/
    scinsearch compare --collection scin_dermatology --collection scin_dermatology_adapted --out reports/ft/
    """
    from scinsearch.evaluation.collections import compare_collections

    comparison = compare_collections(
        make_settings(**options),
        list(collections),
        k=k,
        bootstrap=bootstrap,
        seed=seed,
        out_dir=out_dir,
        progress=True,
    )
    echo_result(comparison.table_lines(), f"{out_dir / 'report.md'}, {out_dir / 'metrics.json'} and runs/<collection>/")


def echo_result(lines: list[str], written: str) -> None:
    """The short table on stdout, what was written on stderr."""
    for line in lines:
        click.echo(line)
    click.echo(f"wrote {written}", err=True)


COMMANDS = [evaluate, compare]
