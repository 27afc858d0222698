"""The calibration part of report.md and its plot (`suggestion_tradeoff.png`), from metrics.json's
`calibration` block (`evaluation.calibrated`)."""

from __future__ import annotations

from pathlib import Path

from scinsearch.calibration.thresholds import TABLE_LEVELS
from scinsearch.helpers import markdown_table

PLOT = "suggestion_tradeoff.png"


def pct(entry) -> str:
    """A {value, ci95} entry or a plain fraction as a percentage, with its interval when there is one."""
    if isinstance(entry, dict):
        if entry.get("value") is None:
            return "–"
        text = f"{entry['value']:.1%}"
        return text + (f" [{entry['ci95'][0]:.1%}, {entry['ci95'][1]:.1%}]" if entry.get("ci95") else "")
    return "–" if entry is None else f"{entry:.1%}"


def calibration_section(metrics: dict) -> list[str]:
    block = metrics.get("calibration")
    if not block:
        return []
    used = metrics.get("suggestion_thresholds") or {}
    lines = ["## Calibration: thresholds, gradability, nothing alike", ""]
    if block["calibrated"]:
        lines.append(
            f"The collection was calibrated by `scinsearch calibrate` ({block['created']}) on its train split;"
        )
        lines.append("the suggestions above use its thresholds, and this section checks it on held-out data.")
    else:
        lines.append("The collection is **not calibrated**: the suggestions above use the default thresholds. Run")
        lines.append("`scinsearch calibrate` to derive them, the gradability probe and the nothing-alike cut.")
    lines += ["", f"Suggestion thresholds in force above: **{used.get('source', 'default')}**.", ""]
    lines += thresholds_part(block["suggestion_thresholds"]) + probe_part(block) + nothing_alike_part(block)
    return lines


def thresholds_part(comparison: dict) -> list[str]:
    lines = [
        "### Suggestion thresholds: frozen defaults vs calibrated",
        "",
        f"On this evaluation's {comparison['queries']} queries, from the {comparison['k']} most similar cases "
        "(every suggestion is drawn from that many). *Precision*: the suggestion's top condition is among the "
        "query's dermatologist labels; *coverage*: the share of queries that get a suggestion at all.",
        "",
    ]
    rows = []
    for name, entry in (("frozen defaults", comparison["frozen"]), ("calibrated", comparison["calibrated"])):
        if entry is None:
            rows.append([name, "–", "–", "–", "–", "–", "not calibrated"])
            continue
        t = entry["thresholds"]
        note = f"target {entry['target_precision']:.0%}" if entry.get("target_precision") else ""
        if entry.get("suggestions_off"):
            rows.append([name, "–", "–", "–", pct(entry["coverage"]), "–", f"{note}, not reached: suggestions off"])
            continue
        if entry.get("train"):
            note += f"; train: {pct(entry['train']['coverage'])} coverage, {pct(entry['train']['precision'])} right"
        rows.append(
            [
                name,
                f"{t['min_similarity']:.3f}",
                f"{t['min_agreement']:.2f}",
                str(t["min_support"]),
                pct(entry["coverage"]),
                pct(entry["precision"]),
                note,
            ]
        )
    header = ["thresholds", "min similarity", "min agreement", "min support", "coverage", "precision", "chosen for"]
    lines += markdown_table(header, rows) + ["", f"![coverage against precision]({PLOT})", ""]
    lines += [
        "The trade-off: the best precision any thresholds reach while still suggesting for at least a given share "
        "of the queries (measured on these queries, so it is the best case, not a promise):",
        "",
    ]
    curve = [r for r in comparison["frontier"] if r["coverage_at_least"] in TABLE_LEVELS]
    rows = [
        [
            f"{r['coverage_at_least']:.0%}",
            pct(r["precision"]),
            pct(r["coverage"]),
            *(
                [f"{r['min_similarity']:.3f}", f"{r['min_agreement']:.2f}", str(r["min_support"])]
                if r["precision"] is not None
                else ["–"] * 3
            ),
        ]
        for r in curve
    ]
    header = ["coverage at least", "best precision", "at coverage", "min similarity", "min agreement", "min support"]
    return lines + markdown_table(header, rows) + [""]


def probe_part(block: dict) -> list[str]:
    probe = block.get("gradability_probe")
    lines = ["### Gradability probe", ""]
    if probe is None:
        return lines + ["No probe: the collection is not calibrated.", ""]
    if not probe.get("trained"):
        return lines + [f"No probe: {probe.get('note')}", ""]
    if probe.get("auc") is None:
        return lines + [f"Not measurable: {probe.get('note')}", ""]
    lines += [
        f'Predicts the dermatologists\' "image quality sufficient" from the stored vector (trained on '
        f"{probe['training']['images']} train images). On the test split's {probe['images']} images of "
        f"{probe['cases']} cases ({probe['not_gradable']} not gradable):",
        "",
        f"- ROC AUC **{probe['auc']['value']:.3f}**"
        + (f" [{probe['auc']['ci95'][0]:.3f}, {probe['auc']['ci95'][1]:.3f}]" if probe["auc"]["ci95"] else "")
        + " (95% case-bootstrap interval); 0.5 is chance;",
        f"- Brier score {probe['brier']:.3f}; mean predicted probability {probe['mean_probability']:.1%} against "
        f"{probe['gradable_share']:.1%} gradable;",
        f"- the warning (probability below {probe['warning_threshold']:.0%}) fires on {pct(probe['warned_share'])} "
        f"of the test images; {pct(probe['warned_not_gradable_share'])} of those are not gradable, and it "
        f"catches {pct(probe['not_gradable_warned_share'])} of the not-gradable ones.",
        "",
    ]
    return lines


def nothing_alike_part(block: dict) -> list[str]:
    cut = block.get("nothing_alike")
    lines = ["### Nothing alike", ""]
    if cut is None:
        return lines + ["No cut: the collection is not calibrated.", ""]
    return lines + [
        f'A photo whose best match is below similarity **{cut["cut"]:.4f}** is answered "no sufficiently '
        f"similar case\" (the {cut['percentile']:g}th percentile of {cut['images']} train images' similarity to "
        f"their most similar other case). Test images below it, against the train split: "
        f"{pct(cut.get('flagged'))} of {cut['test_images']} (about {cut['percentile']:g}% expected).",
        "",
    ]


def plot_tradeoff(metrics: dict, path: Path) -> Path | None:
    """Coverage against precision: the best-case curve, the frozen defaults and the calibrated thresholds."""
    block = (metrics.get("calibration") or {}).get("suggestion_thresholds")
    if not block:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = [r for r in block["frontier"] if r["precision"] is not None]
    figure, axis = plt.subplots(figsize=(6.4, 4.6))
    axis.plot([r["coverage"] for r in curve], [r["precision"] for r in curve], "-", color="#777", label="best case")
    for name, marker, colour in (("frozen", "s", "#d62728"), ("calibrated", "o", "#1f77b4")):
        entry = block.get(name)
        if entry and entry["precision"]["value"] is not None:
            low, high = entry["precision"]["ci95"] or (entry["precision"]["value"],) * 2
            value = entry["precision"]["value"]
            axis.errorbar(
                entry["coverage"]["value"],
                value,
                yerr=[[value - low], [high - value]],
                fmt=marker,
                color=colour,
                capsize=4,
                label=f"{'frozen defaults' if name == 'frozen' else 'calibrated'}",
            )
    target = (block.get("calibrated") or {}).get("target_precision")
    if target:
        axis.axhline(target, color="#1f77b4", linestyle=":", linewidth=1, label=f"target {target:.0%}")
    axis.set_xlim(0, 1.02)
    axis.set_ylim(0, 1.02)
    axis.set_xlabel("coverage (share of queries given a suggestion)")
    axis.set_ylabel("precision (top condition among the labels)")
    axis.set_title(f"{metrics['model']}: suggestions, k={block['k']}, {block['queries']} queries", fontsize=9)
    axis.legend(fontsize=8, loc="lower left")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
