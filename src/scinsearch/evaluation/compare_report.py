"""Write a frozen-vs-adapted comparison: metrics.json and report.md side by side, plus each run's own full
report (`frozen/`, `adapted/`, the ordinary evaluation report with plots). Reads the metrics dictionary
only, so it can be rebuilt from an old metrics.json."""

from __future__ import annotations

from pathlib import Path

from scinsearch.evaluation.report import (
    BREAKDOWN_NAMES,
    METRIC_NAMES,
    fmt,
    number,
    write_json,
    write_report,
)
from scinsearch.helpers import markdown_table

VERDICT_TEXT = {
    "better": "**better**",
    "worse": "**worse**",
    "higher": "higher",
    "lower": "lower",
    "within the interval": "within the interval",
    "no interval": "no interval",
    "too few cases": "too few cases",
    "undefined": "–",
}


def write_comparison(comparison, out_dir: Path) -> list[Path]:
    files = []
    for run in ("frozen", "adapted"):
        files += write_report(getattr(comparison, run).metrics, out_dir / run)
    metrics_file = write_json(comparison.metrics, out_dir / "metrics.json")
    report = out_dir / "report.md"
    report.write_text(markdown(comparison.metrics), encoding="utf-8")
    return [metrics_file, report, *files]


def signed(entry: dict | None) -> str:
    if not entry or entry.get("value") is None:
        return "–"
    text = f"{entry['value']:+.3f}"
    if entry.get("ci"):  # the interval at the comparison's Holm level, the one its verdict is read from
        low, high = entry["ci"]
        text += f" [{low:+.3f}, {high:+.3f}]"
    return text


def family_lines(metrics: dict) -> list[str]:
    """How many comparisons each family holds: what the verdicts are corrected for."""
    families = metrics["families"]
    return [
        f"- Verdicts are corrected for the comparisons made (Holm, family-wise error {families['primary']['alpha']}"
        f" within each family): the **primary** family holds the {families['primary']['comparisons']} overall "
        f"comparisons, the **secondary** family the {families['secondary']['comparisons']} comparisons by group. "
        "A difference's interval is the one at its Holm level (wider than 95%): *better* / *worse* exactly when "
        "it excludes 0. Coverage is not a quality: its change is *higher* / *lower*."
    ]


def overall_rows(metrics: dict) -> list[list[str]]:
    frozen, adapted = metrics["runs"]["frozen"]["metrics"], metrics["runs"]["adapted"]["metrics"]
    rows = []
    for system, block in frozen.items():
        difference = metrics["difference"]["overall"].get(system, {})
        for metric, entry in block.items():
            change = difference.get(metric)
            baselines = entry.get("baselines") or {}
            rows.append(
                [
                    system,
                    METRIC_NAMES.get(metric, metric),
                    fmt(entry),
                    fmt(adapted.get(system, {}).get(metric)),
                    signed(change),
                    VERDICT_TEXT.get((change or {}).get("verdict"), "–"),
                    number(baselines.get("majority")),
                    number(baselines.get("random")),
                ]
            )
    return rows


def summary_lines(metrics: dict) -> list[str]:
    """The CLI's short table: top-1, hit@1 and macro AUC of each system, frozen vs adapted."""
    counts = metrics["runs"]["frozen"]["counts"]
    lines = [
        f"{metrics['model']} on {metrics['collection']} + adapter {metrics['adapter']['adapter_id'][:12]}: "
        f"test split ({counts['queries']} queries from {counts['query_cases']} cases) vs train split"
    ]
    keep = {"top1_accuracy", "hit_at_1", "macro_auc", "coverage"} | set(
        metrics["runs"]["frozen"]["metrics"]["retrieval"]
    )
    rows = [row[:6] for row in overall_rows(metrics) if any(row[1] == METRIC_NAMES.get(k, k) for k in keep)]
    header = ["system", "metric", "frozen", "adapted", "difference", "verdict"]
    rows = [[cell.replace("**", "") for cell in row] for row in rows]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    return lines


def markdown(metrics: dict) -> str:
    adapter, frozen = metrics["adapter"], metrics["runs"]["frozen"]
    counts, boot = frozen["counts"], metrics["bootstrap"]
    lines = [
        f"# Frozen vs adapted: `{metrics['model']}` on `{metrics['collection']}`",
        "",
        f"- Adapter `{adapter['adapter_id'][:16]}` from `{adapter['folder']}` ({adapter['method']}, seed "
        f"{adapter['seed']}), trained on {adapter['train_cases']} train-split cases, early-stopped on "
        f"{adapter['validation_cases']} other train-split cases; text queries: {adapter['text_queries']}.",
        f"- Protocol: test-split images ({counts['queries']} queries, {counts['query_cases']} cases) query the "
        f"train split ({counts['reference_points']} images of {counts['reference_cases']} cases), k = "
        f"{frozen['k']}; a neighbour from the query's own case is never counted. No test-split case is among "
        f"the adapter's training or validation cases (checked before measuring).",
        "- Both runs use the same queries and the same reference cases; the adapted run transforms every "
        "vector (queries and reference) through the adapter, in memory.",
        f"- Intervals: 95% percentile bootstrap over cases, {boot['resamples']} resamples, seed {boot['seed']}. "
        "Differences (adapted − frozen) use a **paired** bootstrap: the same resampled cases score both runs, "
        "each with its own denominators.",
        *family_lines(metrics),
        f"- scinsearch {metrics['scinsearch_version']}, {metrics['created']}.",
        "",
        "## Overall",
        "",
    ]
    lines += markdown_table(
        ["system", "metric", "frozen", "adapted", "difference", "verdict", "majority baseline", "random baseline"],
        overall_rows(metrics),
    ) + [""]
    lines += breakdown_section(metrics)
    lines += [
        "## Full reports",
        "",
        "Each run's own report, with per-condition AUC, plots and confusion matrices: "
        "[frozen/report.md](frozen/report.md), [adapted/report.md](adapted/report.md).",
        "",
        "## Reading these numbers",
        "",
        *READING,
    ]
    return "\n".join(lines) + "\n"


def breakdown_section(metrics: dict) -> list[str]:
    lines = ["## By skin type (top-1 accuracy)", ""]
    frozen, adapted = metrics["runs"]["frozen"]["breakdowns"], metrics["runs"]["adapted"]["breakdowns"]
    for field, groups in frozen.items():
        lines += [f"### {BREAKDOWN_NAMES.get(field, field)}", ""]
        rows = []
        for group, block in groups.items():
            for system in ("suggestions", "knn_majority"):
                before = block["metrics"].get(system, {}).get("top1_accuracy")
                after = adapted[field][group]["metrics"].get(system, {}).get("top1_accuracy")
                change = metrics["difference"]["breakdowns"][field][group].get(system, {}).get("top1_accuracy")
                rows.append(
                    [
                        group,
                        system,
                        str(block["queries"]),
                        str(block["cases"]),
                        fmt(before),
                        fmt(after),
                        signed(change),
                        VERDICT_TEXT.get((change or {}).get("verdict"), "–"),
                        number((before or {}).get("baselines", {}).get("majority")),
                    ]
                )
        lines += markdown_table(
            ["group", "system", "queries", "cases", "frozen", "adapted", "difference", "verdict", "majority baseline"],
            rows,
        ) + [""]
    return lines


READING = [
    "- **within the interval**: the adjusted interval of the paired difference contains 0; this data cannot "
    "tell the adapter from the frozen model on that metric. **better** / **worse**: the whole adjusted interval "
    'is above / below 0 (Holm rejects "no difference" within its family).',
    "- Small groups (SCIN has few V–VI cases) have wide intervals: read their differences through them. Groups "
    "of fewer than 10 cases get no verdict (*too few cases*): resampling a handful of cases gives intervals that "
    "look certain and are not.",
    "- The suggestion rule's thresholds were chosen for frozen SigLIP similarities; an adapter changes the "
    "similarity scale, so compare *coverage* as well as accuracy.",
    "- The adapter was selected on train-split validation cases only; these test-split numbers were not "
    "used to choose anything.",
]
