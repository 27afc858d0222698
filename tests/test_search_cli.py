"""`scinsearch search` end to end on an embedded (Edge) store: table, JSON, filters, errors and exit codes."""

from __future__ import annotations

import json

import pytest

from conftest import fill_store
from scinsearch.cli import main
from scinsearch.results import DISCLAIMER, SCHEMA
from scinsearch.settings import Settings
from scinsearch.store import CollectionInfo, open_store


@pytest.fixture(scope="module")
def edge_store(tmp_path_factory, clean_index):
    """An Edge store holding the clean release as the embed pipeline made it (conftest's `clean_index`),
    closed again so the CLI can open it; and its points."""
    folder = tmp_path_factory.mktemp("cli-qdrant")
    store = open_store(Settings(qdrant_path=folder, collection="cli"))
    fill_store(store, clean_index)
    points = list(store.scroll())
    store.close()
    other = open_store(Settings(qdrant_path=folder, collection="other-model"))
    other.create(CollectionInfo("google/siglip-so400m-patch14-384", 1152))
    other.close()
    return folder, points


@pytest.fixture
def search(edge_store, tiny_siglip_dir, capsys):
    """Run `scinsearch search ARGS` against the test store: (exit code, stdout, stderr)."""
    folder, _ = edge_store

    def run(*arguments: str, collection: str = "cli", model: str | None = str(tiny_siglip_dir)):
        code = main(
            [
                "search",
                *arguments,
                "--qdrant-path",
                str(folder),
                "--collection",
                collection,
                *(["--model", model] if model else []),
                "--device",
                "cpu",
                "--precision",
                "fp32",
            ]
        )
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def test_image_search_prints_a_table_with_the_disclaimer(search, edge_store, clean_release):
    point = edge_store[1][0]
    code, out, _ = search("--image", str(clean_release / point.payload["image_path"]), "--top-k", "3")
    assert code == 0
    assert DISCLAIMER in out
    assert "score" in out and "condition (dermatologist labels)" in out
    assert f"image {point.payload['image_id']}: {point.payload['image_path']}" in out
    assert "1.000" in out
    code, as_json, _ = search("--image", str(clean_release / point.payload["image_path"]), "--top-k", "3", "--json")
    suggestions = json.loads(as_json)["suggestions"]  # the same query: the table must say what the JSON says
    if suggestions["confident"]:
        assert f"Conditions suggested by the similar cases' labels: {suggestions['reason']}" in out
        assert all(item["condition"] in out for item in suggestions["conditions"])
    else:
        assert f"Suggestion: {suggestions['reason']}." in out and "Conditions suggested" not in out


def test_json_output_follows_the_schema(search, edge_store, clean_release):
    point = edge_store[1][0]
    code, out, _ = search("--image", str(clean_release / point.payload["image_path"]), "--json")
    assert code == 0
    result = json.loads(out)
    assert result["schema"] == SCHEMA and result["query"]["kind"] == "image"
    assert len(result["results"]) == 5 and result["results"][0]["image_id"] == point.payload["image_id"]
    assert len({r["case_id"] for r in result["results"]}) == 5, "one result per case"
    assert {"confident", "reason", "conditions"} <= set(result["suggestions"])
    assert result["disclaimer"] == DISCLAIMER and "zero_shot" not in result


def test_text_search_with_fitzpatrick_filter(search):
    code, out, _ = search(
        "--text", "itchy red ring on the arm", "--fitzpatrick", "FST5,FST6", "--top-k", "10", "--json"
    )
    assert code == 0
    result = json.loads(out)
    assert result["query"] == {**result["query"], "kind": "text", "text": "itchy red ring on the arm"}
    assert result["query"]["filters"] == {"fitzpatrick": ["FST5", "FST6"]}
    assert result["results"] and all(r["fitzpatrick_skin_type"] in ("FST5", "FST6") for r in result["results"])


def test_like_excludes_the_same_case_unless_asked(search, edge_store):
    points = edge_store[1]
    source = next(p for p in points if sum(q.payload["case_id"] == p.payload["case_id"] for q in points) >= 2)
    code, out, _ = search("--like", source.payload["image_id"], "--exclude-same-case", "--top-k", "20", "--json")
    results = json.loads(out)["results"]
    assert code == 0 and len(results) == 20
    assert all(source.payload["case_id"] not in r["case_ids"] for r in results)
    code, out, _ = search(
        "--like", source.payload["image_id"], "--include-same-case", "--all-images", "--top-k", "20", "--json"
    )
    results = json.loads(out)["results"]
    assert any(source.payload["case_id"] in r["case_ids"] for r in results)
    assert all(r["image_id"] != source.payload["image_id"] for r in results)


def matches_the_filters(payload: dict) -> bool:
    """The command-line filters below, applied by hand to a stored payload."""
    return (
        payload["monk_skin_tone_label_us"] is not None
        and 4 <= payload["monk_skin_tone_label_us"] <= 8
        and payload["sex_at_birth"] == "FEMALE"
        and payload["gradable"]
        and payload["age_group"] in ("AGE_30_TO_39", "AGE_18_TO_29")
        and "arm" in payload["body_parts"]
        and bool(
            {"Psoriasis", "Tinea", "Acute dermatitis, NOS", "Abrasion, scrape, or scab"} & set(payload["conditions"])
        )
    )


def test_filters_from_the_command_line_return_exactly_the_matching_images(search, edge_store):
    expected = {p.payload["image_id"] for p in edge_store[1] if matches_the_filters(p.payload)}
    assert len(expected) >= 2, "the synthetic release no longer has images for this test's filters"
    code, out, _ = search(
        "--text",
        "red patch",
        "--monk-min",
        "4",
        "--monk-max",
        "8",
        "--sex",
        "female",
        "--age-group",
        "30-39,AGE_18_TO_29",
        "--body-part",
        "arm",
        "--gradable-only",
        "--split",
        "train,val,test",
        "--condition",
        "Psoriasis",
        "--condition",
        "Tinea",
        "--condition",
        "Acute dermatitis, NOS",
        "--condition",
        "Abrasion, scrape, or scab",
        "--top-k",
        "50",
        "--all-images",
        "--json",
    )
    assert code == 0
    assert {r["image_id"] for r in json.loads(out)["results"]} == expected


def test_min_score_keeps_exactly_the_results_above_it(search, edge_store):
    image_id = edge_store[1][3].payload["image_id"]
    code, out, _ = search("--like", image_id, "--all-images", "--top-k", "10", "--json")
    results = json.loads(out)["results"]
    scores = [r["score"] for r in results]
    assert code == 0 and len(scores) == 10 and scores == sorted(scores, reverse=True) and scores[2] > scores[3]
    threshold = (scores[2] + scores[3]) / 2
    code, out, _ = search("--like", image_id, "--all-images", "--top-k", "10", "--min-score", str(threshold), "--json")
    kept = json.loads(out)["results"]
    assert code == 0 and [r["image_id"] for r in kept] == [r["image_id"] for r in results[:3]]


def test_zero_shot_is_shown_apart_and_labelled(search, edge_store):
    code, out, _ = search("--like", edge_store[1][0].payload["image_id"], "--zero-shot")
    assert code == 0
    assert "SigLIP zero-shot scores of the condition names (not from the neighbours, not calibrated)" in out
    code, out, _ = search("--like", edge_store[1][0].payload["image_id"], "--zero-shot", "--json")
    assert "zero-shot" in json.loads(out)["zero_shot"]["method"]


@pytest.mark.parametrize(
    "arguments, message",
    [
        ((), "give exactly one of --image PATH, --text TEXT or --like IMAGE_ID"),
        (("--text", "rash", "--like", "123"), "(got --text, --like)"),
        (("--text", "   "), "empty text"),
        (("--text", "\u200b\u200d\x7f"), "empty text"),
        (("--like", "no-such-image"), "unknown image id 'no-such-image'"),
        (("--image", "__missing__.jpg"), "cannot use the query image __missing__.jpg: file not found"),
        (("--text", "rash", "--fitzpatrick", "FST9"), "unknown Fitzpatrick skin type 'FST9': use one of FST1"),
        (("--text", "rash", "--sex", "unknown"), "unknown sex at birth"),
        (
            ("--text", "rash", "--condition", "Eczemma"),
            "no stored case has the condition 'Eczemma'; did you mean 'Eczema'",
        ),
        (("--text", "rash", "--monk-min", "12"), "not a Monk skin tone"),
        (("--text", "rash", "--zero-shot"), "--zero-shot scores an image"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_1(search, arguments, message):
    code, out, err = search(*arguments)
    assert code == 1 and out == ""
    assert err.startswith("Error: ") and message in err and len(err.strip().splitlines()) == 1


def test_undecodable_photo_is_one_line_and_exit_code_1(search, tmp_path):
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    code, _, err = search("--image", str(photo))
    assert code == 1 and len(err.strip().splitlines()) == 1 and "cannot use the query image" in err


def test_a_collection_of_another_model_is_refused(search, edge_store):
    code, _, err = search("--text", "rash", collection="other-model")
    assert code == 1 and "google/siglip-so400m-patch14-384" in err and len(err.strip().splitlines()) == 1
    code, _, err = search("--text", "rash", collection="never-made")
    assert code == 1 and "does not exist in the embedded store" in err and str(edge_store[0]) in err


def test_without_model_the_collection_s_own_is_used(search, edge_store, monkeypatch):
    """The record names the model: --model is not needed; a different one given is still refused."""
    monkeypatch.delenv("SCINSEARCH_MODEL", raising=False)
    code, out, err = search("--text", "rash", "--json", model=None)
    assert code == 0, err
    assert len(json.loads(out)["results"]) > 0
    code, _, err = search("--text", "rash", model="google/siglip-base-patch16-224")
    assert code == 1 and "use --model" in err


def test_out_of_range_options_are_usage_errors(search):
    code, _, err = search("--text", "rash", "--top-k", "0")
    assert code == 2 and "top-k" in err


def condition_column(table: list[str]) -> list[str]:
    """Each result's condition cell, its wrapped pieces joined, read by the header's column positions."""
    header = table[0]
    start, end = header.index("condition"), header.index("FST s/d")
    cells: list[str] = []
    for line in table[2:]:
        if line[:3].strip().isdigit():
            cells.append(line[start:end].strip())
        elif line[:start].strip() == "" and line[start:end].strip():
            cells[-1] += " " + line[start:end].strip()
    return cells


@pytest.mark.parametrize("columns", [80, 200])
def test_the_table_fits_the_terminal_and_keeps_every_condition(search, edge_store, monkeypatch, columns):
    monkeypatch.setenv("COLUMNS", str(columns))
    image_id = edge_store[1][0].payload["image_id"]
    code, out, _ = search("--like", image_id, "--top-k", "10")
    _, as_json, _ = search("--like", image_id, "--top-k", "10", "--json")
    lines = out.splitlines()
    table = lines[lines.index(next(line for line in lines if line.startswith("#  "))) :]
    table = table[: table.index("")]
    assert code == 0 and all(len(line) <= columns for line in table), max(map(len, table))
    expected = [
        ", ".join(f"{name} {weight:.0%}" for name, weight in r["weighted_labels"].items()) or "(no label)"
        for r in json.loads(as_json)["results"]
    ]
    assert condition_column(table) == expected
    assert ("case id" in table[0]) == (columns >= 200)  # the wide terminal shows more columns


def test_a_long_condition_wraps_in_its_column_at_80_columns():
    from scinsearch.commands.search_cmds import format_neighbours
    from scinsearch.results import Neighbour

    labels = {"Erythema multiforme with mucosal involvement, NOS": 0.5, "Stevens-Johnson syndrome": 0.5}
    metadata = {"fitzpatrick_skin_type": "FST3", "age_group": "AGE_30_TO_39", "gradable": True, "body_parts": ["ARM"]}
    neighbour = Neighbour(0.91, "17", "42", ["42"], "dataset/images/17.png", None, labels, metadata)
    table = format_neighbours([neighbour], width=80)
    assert all(len(line) <= 80 for line in table) and len(table) > 4  # the condition took more than one line
    assert condition_column(table) == [
        "Erythema multiforme with mucosal involvement, NOS 50%, Stevens-Johnson syndrome 50%"
    ]
    assert "     body parts: ARM; case id: 42" in table
