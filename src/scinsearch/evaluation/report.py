"""Write what an evaluation measured: metrics.json (for machines and merging), report.md (for people)
and PNG plots (matplotlib, Agg backend: no display needed). Everything here reads the metrics
dictionary only, so a report can be rebuilt from an old metrics.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from scinsearch.errors import ScinSearchError
from scinsearch.evaluation.report_calibration import PLOT as TRADEOFF_PLOT
from scinsearch.evaluation.report_calibration import calibration_section, plot_tradeoff
from scinsearch.helpers import json_safe, markdown_table

METRIC_NAMES = {
    "top1_accuracy": "top-1 accuracy",
    "top3_accuracy": "top-3 accuracy",
    "hit_at_1": "hit@1 (any label)",
    "hit_at_3": "hit@3 (any label)",
    "macro_auc": "macro AUC (top-10)",
    "coverage": "confident (coverage)",
    "top1_accuracy_when_confident": "top-1 when confident",
}
BREAKDOWN_NAMES = {
    "self_reported_fitzpatrick": "Self-reported Fitzpatrick type",
    "dermatologist_skin_type_group": "Dermatologist skin-type group (eFST)",
    "monk_tone_group_us": "Monk skin tone group (US graders)",
}
PROTOCOL_TEXT = {
    "split": "test-split images query the train split (the split is by case)",
    "leave-case-out": "every image queries all other cases",
}
PLOT_PREDICTORS = ("suggestions", "knn_majority")


def write_report(metrics: dict, out_dir: Path) -> list[Path]:
    """metrics.json, report.md, accuracy_by_skin_type.png and one confusion matrix per neighbour predictor."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ScinSearchError(f"cannot create the output folder {out_dir}: {exc.strerror or exc}") from None
    files = [write_json(metrics, out_dir / "metrics.json")]
    files.append(plot_breakdowns(metrics, out_dir / "accuracy_by_skin_type.png"))
    for name in metrics["confusion"]["matrices"]:
        files.append(plot_confusion(metrics, name, out_dir / f"confusion_{name}.png"))
    tradeoff = plot_tradeoff(metrics, out_dir / TRADEOFF_PLOT)
    if tradeoff is not None:
        files.append(tradeoff)
    report = out_dir / "report.md"
    report.write_text(markdown(metrics, [f.name for f in files if f.suffix == ".png"]), encoding="utf-8")
    return [files[0], report, *files[1:]]


def write_json(metrics: dict, path: Path) -> Path:
    path.write_text(json.dumps(json_safe(metrics), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path


def fmt(entry: dict | None, with_ci: bool = True) -> str:
    if not entry or entry.get("value") is None:
        return "–"
    text = f"{entry['value']:.3f}"
    if with_ci and entry.get("ci95"):
        low, high = entry["ci95"]
        text += f" [{low:.3f}, {high:.3f}]"
    if entry.get("note"):
        text += f" ({entry['note']})"
    return text


def number(value) -> str:
    return "–" if value is None else f"{value:.3f}"


def systems_of(metrics: dict) -> list[str]:
    return [name for name in metrics["metrics"] if name != "retrieval"]


def metric_rows(metrics: dict, systems: list[str]) -> list[tuple[str, list[dict | None], dict]]:
    """(metric, entry per system, baselines) for every prediction metric of any system."""
    names = [n for n in METRIC_NAMES if any(n in metrics["metrics"][s] for s in systems)]
    rows = []
    for name in names:
        entries = [metrics["metrics"][s].get(name) for s in systems]
        baselines = next((e["baselines"] for e in entries if e and e.get("baselines")), {})
        rows.append((name, entries, baselines))
    return rows


def summary_table(metrics: dict) -> list[str]:
    """The short table the CLI prints: values with 95% intervals, and both baselines."""
    systems = systems_of(metrics)
    counts = metrics["counts"]
    lines = [
        f"{metrics['model']} on {metrics['collection']}: {metrics['protocol']}, k={metrics['k']}, "
        f"{counts['queries']} queries from {counts['query_cases']} cases, "
        f"{counts['reference_points']} reference images"
    ]
    used = metrics.get("suggestion_thresholds") or {}
    if used:
        lines.append(
            f"suggestion thresholds ({used.get('source', 'default')}): min_similarity {used['min_similarity']:.3f}, "
            f"min_agreement {used['min_agreement']:.2f}, min_support {used['min_support']}"
        )
    header = ["metric", *systems, "majority", "random"]
    body = [
        [METRIC_NAMES[n], *[fmt(e) for e in entries], number(b.get("majority")), number(b.get("random"))]
        for n, entries, b in metric_rows(metrics, systems)
    ]
    for name, entry in metrics["metrics"]["retrieval"].items():
        b = entry["baselines"]
        body.append([name, fmt(entry), *[""] * (len(systems) - 1), number(b.get("majority")), number(b.get("random"))])
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    for row in [header, *body]:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return lines


def markdown(metrics: dict, plots: list[str]) -> str:
    systems = systems_of(metrics)
    counts = metrics["counts"]
    boot = metrics["bootstrap"]
    lines = [
        f"# Retrieval quality: `{metrics['model']}` on `{metrics['collection']}`",
        "",
        f"- Protocol: **{metrics['protocol']}**: {PROTOCOL_TEXT.get(metrics['protocol'], '')}; a neighbour "
        f"from the query's own case, or the same image under another case, is never counted.",
        f"- k = {metrics['k']} neighbours"
        + (", one per case (its most similar image)" if metrics["neighbours_per_case"] else ", images")
        + ".",
        f"- Queries: {counts['queries']} labelled images of gradable cases ({counts['query_cases']} cases); "
        f"reference: {counts['reference_points']} labelled images of {counts['reference_cases']} cases, "
        f"{counts['reference_conditions']} conditions.",
        f"- Intervals: 95% percentile bootstrap over cases, {boot['resamples']} resamples, seed {boot['seed']}.",
        f"- scinsearch {metrics['scinsearch_version']}, {metrics['created']}.",
        "",
    ]
    if not metrics.get("exclude_own_case", True):
        lines += [
            "> **LEAKY RUN**: views of the query's own case were allowed as neighbours. These numbers are "
            "inflated and must not be reported.",
            "",
        ]
    lines += ["## Overall", ""]
    rows = [
        [METRIC_NAMES[n], *[fmt(e) for e in entries], number(b.get("majority")), number(b.get("random"))]
        for n, entries, b in metric_rows(metrics, systems)
    ]
    lines += markdown_table(["metric", *systems, "majority baseline", "random baseline"], rows) + [""]
    lines += ["### Retrieval: a neighbour with the query's condition among the first k", ""]
    rows = [
        [name, fmt(e), number(e["baselines"].get("majority")), number(e["baselines"].get("random"))]
        for name, e in metrics["metrics"]["retrieval"].items()
    ]
    lines += markdown_table(["metric", "search", "majority baseline", "random baseline"], rows) + [""]
    lines += per_class_section(metrics) + breakdown_section(metrics, systems, plots)
    lines += ["## Confusion of the top conditions", ""] + [f"![{p}]({p})" for p in plots if p.startswith("confusion")]
    lines += [""] + calibration_section(metrics)
    lines += ["", "## Reading these numbers", "", *READING_NOTES]
    return "\n".join(lines) + "\n"


def per_class_section(metrics: dict) -> list[str]:
    conditions = metrics["auc_conditions"]
    per_class = metrics["per_class_auc"]
    if not conditions:
        return []
    names = list(per_class)
    rows = [[c, *[number(json_safe(per_class[n][i])) for n in names]] for i, c in enumerate(conditions)]
    return [
        "### One-vs-rest AUC per condition (positive: any dermatologist label)",
        "",
        *markdown_table(["condition", *names], rows),
        "",
    ]


def breakdown_section(metrics: dict, systems: list[str], plots: list[str]) -> list[str]:
    lines = ["## By skin type", ""]
    if "accuracy_by_skin_type.png" in plots:
        lines += ["![top-1 accuracy by skin-type group](accuracy_by_skin_type.png)", ""]
    for field, groups in metrics["breakdowns"].items():
        lines += [f"### {BREAKDOWN_NAMES.get(field, field)}", ""]
        recall_name = list(metrics["metrics"]["retrieval"])[-1]
        header = [
            "group",
            "queries",
            "cases",
            *[f"{s} top-1" for s in systems],
            "suggestions top-3",
            "suggestions macro AUC",
            recall_name,
            "majority top-1",
        ]
        rows = []
        for group, block in groups.items():
            got = block["metrics"]
            recall = list(got["retrieval"].values())[-1]
            rows.append(
                [
                    group,
                    str(block["queries"]),
                    str(block["cases"]),
                    *[fmt(got[s].get("top1_accuracy")) for s in systems],
                    fmt(got["suggestions"].get("top3_accuracy")),
                    fmt(got["suggestions"].get("macro_auc")),
                    fmt(recall),
                    number(got["suggestions"]["top1_accuracy"]["baselines"].get("majority")),
                ]
            )
        lines += markdown_table(header, rows) + [""]
    return lines


READING_NOTES = [
    "- **top-1 / top-3 accuracy**: the query's highest-weighted dermatologist label is the first / among the "
    "first three predicted conditions.",
    "- **hit@n**: any of the first n predictions is among *any* of the query's dermatologist labels (SCIN labels "
    "are soft: the top weight has a median of about 0.55).",
    "- **recall@k**: at least one of the first k neighbouring cases has the query's highest-weighted label.",
    "- **macro AUC**: mean one-vs-rest ROC AUC over the ten conditions most often among the queries' labels; "
    "positive = the condition is among the query's labels. Constant scores give 0.5.",
    "- **suggestions** is the search API's rule (similarity-weighted label vote); its ranking is scored even "
    "when the API would abstain; *coverage* is how often it would not abstain.",
    "- **majority baseline**: always the reference pool's most frequent conditions. **random baseline**: "
    "k random admissible cases, plain majority vote (fixed seed).",
    "- Differences between skin-type groups mix model behaviour with each group's condition mix: compare each "
    "group's accuracy with its own majority baseline, and mind the interval widths of small groups.",
    "- Models trained on SCIN (e.g. MedSigLIP) are not held-out here, whatever the protocol.",
]


def plot_breakdowns(metrics: dict, path: Path) -> Path:
    """Top-1 accuracy per skin-type group with 95% intervals, one panel per grouping; the majority
    baseline of each group is drawn as a black tick."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fields = list(metrics["breakdowns"])
    figure, axes = plt.subplots(1, max(len(fields), 1), figsize=(5.5 * max(len(fields), 1), 4.2), squeeze=False)
    predictors = [s for s in PLOT_PREDICTORS if s in metrics["metrics"]]
    width = 0.8 / max(len(predictors), 1)
    for axis, field in zip(axes[0], fields):
        groups = list(metrics["breakdowns"][field])
        x = np.arange(len(groups))
        for i, name in enumerate(predictors):
            entries = [metrics["breakdowns"][field][g]["metrics"][name]["top1_accuracy"] for g in groups]
            values = np.array([e["value"] if e["value"] is not None else np.nan for e in entries])
            low = np.array([v - e["ci95"][0] if e["ci95"] else 0 for v, e in zip(values, entries)])
            high = np.array([e["ci95"][1] - v if e["ci95"] else 0 for v, e in zip(values, entries)])
            axis.bar(
                x + (i - (len(predictors) - 1) / 2) * width,
                values,
                width,
                label=name,
                yerr=np.vstack([np.nan_to_num(low), np.nan_to_num(high)]),
                capsize=3,
            )
        majority = (
            [
                metrics["breakdowns"][field][g]["metrics"][predictors[0]]["top1_accuracy"]["baselines"].get("majority")
                for g in groups
            ]
            if predictors
            else []
        )
        axis.scatter(
            x,
            [np.nan if v is None else v for v in majority],
            marker="_",
            s=400,
            color="black",
            label="majority baseline",
            zorder=3,
        )
        axis.set_xticks(x, [f"{g}\nn={metrics['breakdowns'][field][g]['queries']}" for g in groups], fontsize=8)
        axis.set_ylim(0, 1.05)
        axis.set_title(BREAKDOWN_NAMES.get(field, field), fontsize=10)
        axis.set_ylabel("top-1 accuracy")
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    figure.suptitle(
        f"{metrics['model']} ({metrics['protocol']}, k={metrics['k']}): top-1 accuracy, 95% case-bootstrap intervals",
        fontsize=10,
    )
    figure.tight_layout(rect=(0, 0.06, 1, 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_confusion(metrics: dict, predictor: str, path: Path) -> Path:
    """Row-normalised confusion of top-1 predictions for the most frequent true conditions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = metrics["confusion"]
    counts = np.array(data["matrices"][predictor], dtype=float).reshape(len(data["conditions"]), len(data["columns"]))
    rows = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    size = 2.5 + 0.55 * len(data["columns"])
    figure, axis = plt.subplots(figsize=(size + 1.5, size))
    image = axis.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    axis.set_xticks(range(len(data["columns"])), data["columns"], rotation=60, ha="right", fontsize=8)
    axis.set_yticks(
        range(len(data["conditions"])),
        [f"{c} (n={int(n)})" for c, n in zip(data["conditions"], rows[:, 0])],
        fontsize=8,
    )
    for (i, j), share in np.ndenumerate(shares):
        if counts[i, j]:
            axis.text(
                j, i, f"{share:.2f}", ha="center", va="center", fontsize=7, color="white" if share > 0.5 else "black"
            )
    axis.set_xlabel(f"top-1 prediction ({predictor})")
    axis.set_ylabel("highest-weighted dermatologist label")
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04)
    axis.set_title(f"{metrics['model']}: {predictor}, {metrics['protocol']}", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
