"""Write a comparison of collections: metrics.json and report.md (every metric overall and by skin type for
each collection, each collection's difference against the first with its adjusted interval, verdict and case
counts), a plot of the top-1 differences by skin type, and each collection's own evaluation report (with its
plots) in `runs/<collection>/`. Reads the metrics dictionary only."""

from __future__ import annotations

from pathlib import Path

from scinsearch.evaluation.compare_report import VERDICT_TEXT, family_lines, signed
from scinsearch.evaluation.report import BREAKDOWN_NAMES, METRIC_NAMES, fmt, write_json, write_report
from scinsearch.helpers import markdown_table

PLOT = "top1_difference_by_skin_type.png"
PLOTTED = ("knn_majority", "top1_accuracy")


def write_collection_comparison(comparison, out_dir: Path) -> list[Path]:
    files = []
    for name, result in comparison.results.items():
        files += write_report(result.metrics, out_dir / "runs" / name)
    metrics_file = write_json(comparison.metrics, out_dir / "metrics.json")
    plot = plot_differences(comparison.metrics, out_dir / PLOT)
    report = out_dir / "report.md"
    report.write_text(markdown(comparison.metrics), encoding="utf-8")
    return [metrics_file, report, plot, *files]


def names(metrics: dict) -> list[str]:
    return [c["collection"] for c in metrics["collections"]]


def metric_keys(block: dict) -> list[tuple[str, str]]:
    return [(system, metric) for system, metrics in block.items() for metric in metrics]


def row_cells(metrics: dict, values_of, differences_of, system: str, metric: str) -> list[str]:
    """Each collection's value, then each later one's difference against the first and its verdict."""
    collections = names(metrics)
    cells = [fmt(values_of(name).get(system, {}).get(metric)) for name in collections]
    for name in collections[1:]:
        change = differences_of(name).get(system, {}).get(metric)
        cells += [signed(change), VERDICT_TEXT.get((change or {}).get("verdict"), "–")]
    return cells


def header(metrics: dict, leading: list[str]) -> list[str]:
    collections = names(metrics)
    first = collections[0]
    cells = [*leading, *(f"`{n}`" for n in collections)]
    for name in collections[1:]:
        cells += [f"`{name}` − `{first}`", "verdict"]
    return cells


def overall_rows(metrics: dict) -> list[list[str]]:
    first = metrics["runs"][names(metrics)[0]]["metrics"]
    return [
        [
            system,
            METRIC_NAMES.get(metric, metric),
            *row_cells(
                metrics,
                lambda n: metrics["runs"][n]["metrics"],
                lambda n: metrics["differences"][n]["overall"],
                system,
                metric,
            ),
        ]
        for system, metric in metric_keys(first)
    ]


def group_rows(metrics: dict, field: str, group: str) -> list[list[str]]:
    block = metrics["runs"][names(metrics)[0]]["breakdowns"][field][group]
    rows = []
    for system, metric in metric_keys(block["metrics"]):
        cells = row_cells(
            metrics,
            lambda n: metrics["runs"][n]["breakdowns"][field].get(group, {}).get("metrics", {}),
            lambda n: metrics["differences"][n]["breakdowns"][field].get(group, {}),
            system,
            metric,
        )
        rows.append(
            [group, str(block["queries"]), str(block["cases"]), system, METRIC_NAMES.get(metric, metric), *cells]
        )
    return rows


def summary_lines(metrics: dict) -> list[str]:
    """The CLI's short table: overall top-1, hit@1, macro AUC, coverage and recall, with the differences."""
    counts = metrics["runs"][names(metrics)[0]]["counts"]
    lines = [
        f"{len(names(metrics))} collections on the same {counts['queries']} test queries "
        f"({counts['query_cases']} cases); differences against {names(metrics)[0]!r}, Holm-adjusted over "
        f"{metrics['families']['primary']['comparisons']} overall comparisons"
    ]
    keep = {"top1_accuracy", "hit_at_1", "macro_auc", "coverage", "recall@1"}
    rows = [r for r, (_, metric) in zip(overall_rows(metrics), overall_keys(metrics)) if metric in keep]
    rows = [[cell.replace("**", "").replace("`", "") for cell in row] for row in rows]
    head = [c.replace("`", "") for c in header(metrics, ["system", "metric"])]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [head, *rows]]
    return lines


def overall_keys(metrics: dict) -> list[tuple[str, str]]:
    return metric_keys(metrics["runs"][names(metrics)[0]]["metrics"])


def markdown(metrics: dict) -> str:
    collections = names(metrics)
    first = metrics["runs"][collections[0]]
    counts, boot = first["counts"], metrics["bootstrap"]
    lines = [
        "# Collections compared on the same test queries",
        "",
        *(f"- `{c['collection']}`: `{c['model']}`, {c['dim']}-d vectors" for c in metrics["collections"]),
        f"- Protocol: the same {counts['queries']} test-split images ({counts['query_cases']} cases) query the "
        f"train split of each collection, k = {metrics['k']}; images are matched by image id.",
        f"- Differences are each collection minus `{collections[0]}`, on the same resampled cases ({boot['resamples']} "
        f"case-bootstrap resamples, seed {boot['seed']}), each collection with its own denominators.",
        *family_lines(metrics),
        "- Values: 95% case-bootstrap intervals; groups of fewer than 10 cases: Wilson intervals, *too few cases*.",
        f"- scinsearch {metrics['scinsearch_version']}, {metrics['created']}.",
        "",
        "## Overall",
        "",
        *markdown_table(header(metrics, ["system", "metric"]), overall_rows(metrics)),
        "",
        f"![top-1 difference by skin type]({PLOT})",
        "",
    ]
    for field, groups in first["breakdowns"].items():
        lines += [f"## By {BREAKDOWN_NAMES.get(field, field)}", ""]
        rows = [row for group in groups for row in group_rows(metrics, field, group)]
        lines += markdown_table(header(metrics, ["group", "queries", "cases", "system", "metric"]), rows) + [""]
    lines += [
        "## Full reports",
        "",
        *(f"- [`{name}`](runs/{name}/report.md)" for name in collections),
    ]
    return "\n".join(lines) + "\n"


def plot_differences(metrics: dict, path: Path) -> Path:
    """kNN top-1 difference against the first collection per skin-type group, with adjusted intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fields = list(metrics["runs"][names(metrics)[0]]["breakdowns"])
    figure, axes = plt.subplots(1, len(fields), figsize=(5 * len(fields), 3.6), squeeze=False)
    system, metric = PLOTTED
    for axis, field in zip(axes[0], fields):
        for offset, name in enumerate(names(metrics)[1:]):
            groups = metrics["differences"][name]["breakdowns"][field]
            for position, block in enumerate(groups.values()):
                entry = block.get(system, {}).get(metric) or {}
                if entry.get("value") is None:
                    continue
                low, high = entry.get("ci") or (entry["value"], entry["value"])
                x = position + 0.15 * offset
                axis.errorbar(
                    x,
                    entry["value"],
                    yerr=[[entry["value"] - low], [high - entry["value"]]],
                    fmt="o",
                    color=f"C{offset}",
                    label=name if position == 0 else None,
                    capsize=3,
                )
            axis.set_xticks(range(len(groups)), list(groups), rotation=45, ha="right", fontsize=8)
        axis.axhline(0, color="grey", linewidth=0.8)
        axis.set_title(BREAKDOWN_NAMES.get(field, field), fontsize=9)
    axes[0][0].set_ylabel(f"{METRIC_NAMES[metric]} difference ({system})")
    axes[0][0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
