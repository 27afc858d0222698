"""`scinsearch embed/info/check/models` and the two seed scripts: exit codes and one-line errors."""

from __future__ import annotations

import re
import runpy
import sys
from pathlib import Path

import pytest

from scinsearch.cli import main
from scinsearch.dataset import read_release

ROOT = Path(__file__).resolve().parents[1]


def run(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_embed_release_then_resume_then_info(capsys, tmp_path, clean_release, tiny_siglip_dir, embed_args):
    args = embed_args(clean_release, tmp_path / "q", "--limit", "10")
    code, out, err = run(capsys, *args)
    assert code == 0, err
    assert "embedded 10, already present 0, failed 0" in out and "on cpu in" in err
    code, out, _ = run(capsys, *args[:-1], "20")
    assert code == 0 and "embedded 10, already present 10" in out
    code, out, _ = run(capsys, "info", "--qdrant-path", tmp_path / "q")
    assert code == 0 and "points: 20" in out and str(tiny_siglip_dir) in out


def test_embed_server_code_path_in_memory(capsys, clean_release, embed_args):
    code, out, err = run(capsys, *embed_args(clean_release, ":memory:", "--limit", "4"))
    assert code == 0, err
    assert "embedded 4" in out and "qdrant-client :memory:" in out


def test_batch_size_and_workers_reach_the_run_through_settings(monkeypatch, capsys, clean_release, tiny_siglip_dir):
    """`--batch-size` and SCINSEARCH_WORKERS become `Settings`, which the run reads; no flag: the device default."""
    from scinsearch import pipeline

    real_run, seen = pipeline.run_embed, []

    def recording_run(*args, **kwargs):
        seen.append((kwargs["batch_size"], kwargs["workers"]))
        return real_run(*args, **kwargs)

    monkeypatch.setattr(pipeline, "run_embed", recording_run)
    monkeypatch.setenv("SCINSEARCH_WORKERS", "0")
    common = [
        "embed",
        "--scin-dir",
        clean_release,
        "--model",
        tiny_siglip_dir,
        "--qdrant-url",
        ":memory:",
        "--device",
        "cpu",
        "--quiet",
        "--limit",
        "3",
    ]
    assert run(capsys, *common, "--batch-size", "2")[0] == 0
    assert run(capsys, *common)[0] == 0
    assert seen == [(2, 0), (pipeline.default_batch_size("cpu"), 0)]


def test_siglip2_naflex_model_embeds(capsys, tmp_path, clean_release, tiny_siglip2_dir):
    code, out, err = run(
        capsys,
        "embed",
        "--scin-dir",
        clean_release,
        "--model",
        tiny_siglip2_dir,
        "--qdrant-path",
        tmp_path / "q",
        "--workers",
        "0",
        "--quiet",
        "--limit",
        "5",
    )
    assert code == 0, err
    assert "embedded 5" in out


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--scin-dir", "/nonexistent/scin"], "/nonexistent/scin does not exist: `scinsearch download --to"),
        (["--scin-dir", "{model}"], "no scin_cases.csv"),
        (["--metadata", "/nonexistent/meta.csv", "--images-dir", "/tmp"], "file not found"),
        (["--metadata", "{csv}", "--images-dir", "/nonexistent/images"], "images folder not found"),
        (["--scin-dir", "{release}", "--model", "/nonexistent/model"], "cannot load model"),
        (["--scin-dir", "{release}", "--model", "./siglip-base-patch16-22"], "did you mean google/siglip-base-patch16"),
        (["--scin-dir", "{release}", "--model", "/nonexistent/model"], "`scinsearch models` lists the known ones"),
        (["--scin-dir", "{release}", "--model", "{model}", "--device", "cuda:7"], "CUDA is not available"),
        (
            ["--scin-dir", "{release}", "--model", "{model}", "--device", "tpu"],
            "unknown device 'tpu': use auto, cpu, cuda or cuda:N",
        ),
        ([], "no data given"),
    ],
)
def test_bad_input_is_one_line_and_non_zero(capsys, tmp_path, clean_release, tiny_siglip_dir, extra, message):
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("image_id,image_path\n1,a.png\n")
    fill = {"{csv}": str(bad_csv), "{release}": str(clean_release), "{model}": str(tiny_siglip_dir)}
    extra = [fill.get(value, value) for value in extra]
    code, out, err = run(capsys, "embed", "--qdrant-path", tmp_path / "q", "--quiet", *extra)
    errors = [line for line in err.splitlines() if line.startswith("Error: ")]
    assert code == 1 and len(errors) == 1 and message in errors[0] and "Traceback" not in err


def test_bad_csv_content(capsys, tmp_path):
    path = tmp_path / "garbage.csv"
    path.write_bytes(b"\xff\xfe\x00binary\x00garbage")
    code, _, err = run(capsys, "embed", "--metadata", path, "--images-dir", tmp_path, "--qdrant-path", tmp_path / "q")
    assert code == 1 and err.startswith("Error: ") and "Traceback" not in err


def test_info_without_collection(capsys, tmp_path):
    code, _, err = run(capsys, "info", "--qdrant-path", tmp_path / "empty")
    assert code == 1 and "run `scinsearch embed` first" in err


def test_models_lists_the_registry(capsys):
    code, out, _ = run(capsys, "models")
    assert code == 0 and "google/siglip-base-patch16-224" in out and "so400m" in out


def run_script(monkeypatch, capsys, name: str, *arguments) -> tuple[int, str, str]:
    """Run a seed script as `python scripts/NAME ARGS` would, in this process (runpy: the script's own
    `__main__` block, argv and exit code; a traceback would surface as the exception itself): (code, out, err)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("QDRANT_URL", raising=False)
    monkeypatch.setattr(sys, "argv", [name, *map(str, arguments)])
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(ROOT / "scripts" / name), run_name="__main__")
    captured = capsys.readouterr()
    return exit_.value.code, captured.out, captured.err


def test_seed_embed_script_keeps_its_command_line(
    monkeypatch, capsys, tmp_path, scin_release, tiny_siglip_dir, write_flat_csv
):
    """The old command line embeds what it names, where it names, with the model it names."""
    from scinsearch.dataset import read_flat_csv
    from scinsearch.settings import Settings
    from scinsearch.store import open_store

    flat = write_flat_csv(scin_release, tmp_path / "real_labeled_metadata.csv")
    images_dir = scin_release / "dataset" / "images"
    code, out, err = run_script(
        monkeypatch,
        capsys,
        "embed_scin_siglip.py",
        "--metadata",
        flat,
        "--images-dir",
        images_dir,
        "--collection",
        "scin_dermatology",
        "--batch-size",
        "4",
        "--limit",
        "8",
        "--model",
        tiny_siglip_dir,
        "--qdrant-path",
        tmp_path / "q",
        "--quiet",
    )
    counts = re.search(r"^embedded (\d+), already present 0, failed (\d+) \(of 8 images\)$", out, re.M)
    assert counts, out + err
    embedded, failed_count = int(counts[1]), int(counts[2])
    failed = re.findall(r"^  (?:failed|known gap of the release \(not an error\)): (\S+): ", out, re.M)
    assert embedded + failed_count == 8 and len(failed) == failed_count and embedded >= 4
    assert code == (0 if "complete: every image is stored" in out else 1)
    assert code == 1 and "truncated" in out  # the synthetic release's broken file: exit 1
    store = open_store(Settings(qdrant_path=tmp_path / "q", collection="scin_dermatology"))
    try:
        assert (store.info().model, store.info().dim) == (str(tiny_siglip_dir), 32)
        first_eight = read_flat_csv(flat, images_dir).records[:8]
        assert {p.payload["image_id"] for p in store.scroll()} == {
            r.image_id for r in first_eight if str(r.file) not in failed
        }
    finally:
        store.close()


def test_seed_embed_script_batch_size_reaches_the_model(
    monkeypatch, capsys, tmp_path, clean_release, tiny_siglip_dir, write_flat_csv
):
    """--batch-size 3 of the old command line: every model call gets 3 images (the last one the rest)."""
    from scinsearch.embedding import Embedder

    flat = write_flat_csv(clean_release, tmp_path / "real_labeled_metadata.csv", rows=8)
    batches: list[int] = []
    real_embed_batch = Embedder.embed_batch
    monkeypatch.setattr(
        Embedder,
        "embed_batch",
        lambda self, batch: batches.append(len(batch["pixels"])) or real_embed_batch(self, batch),
    )
    arguments = ["--metadata", flat, "--images-dir", clean_release / "dataset" / "images", "--batch-size", "3"]
    arguments += ["--model", tiny_siglip_dir, "--qdrant-path", tmp_path / "q", "--workers", "0", "--quiet"]
    code, _, err = run_script(monkeypatch, capsys, "embed_scin_siglip.py", *arguments)
    assert code == 0 and batches == [3, 3, 2], err


def test_embedding_with_another_model_is_refused_in_one_line_and_keeps_the_collection(
    capsys, tmp_path, clean_release, tiny_siglip_dir, tiny_siglip2_fixres_dir, embed_args
):
    def embed(model):
        return run(capsys, *embed_args(clean_release, tmp_path / "q", "--collection", "c", "--limit", "3", model=model))

    assert embed(tiny_siglip_dir)[0] == 0
    code, out, err = embed(tiny_siglip2_fixres_dir)
    errors = [line for line in err.splitlines() if line.strip() and not line.startswith(("data:", "model:", "Loading"))]
    assert code == 1 and out == "" and len(errors) == 1 and "Traceback" not in err
    assert errors[0] == (
        f"Error: collection 'c' holds 32-d vectors of {str(tiny_siglip_dir)!r}; embedding with "
        f"{str(tiny_siglip2_fixres_dir)!r} (32-d) would mix models: use another --collection, "
        f"or --recreate to start it over"
    )
    code, out, _ = run(capsys, "info", "--qdrant-path", tmp_path / "q", "--collection", "c")
    assert code == 0 and "points: 3" in out and f"model: {tiny_siglip_dir} (32-d)" in out


def test_seed_check_script_passes_on_ten_images(
    monkeypatch, capsys, tmp_path, clean_release, tiny_siglip_dir, write_flat_csv
):
    flat = write_flat_csv(clean_release, tmp_path / "real_labeled_metadata.csv", rows=15)
    images = clean_release / "dataset" / "images"
    code, out, err = run_script(
        monkeypatch,
        capsys,
        "test_siglip_embedding.py",
        "--metadata",
        flat,
        "--images-dir",
        images,
        "--model",
        tiny_siglip_dir,
    )
    assert code == 0, err
    assert "check passed: 10 images embedded" in out


def test_seed_check_script_fails_cleanly_without_data(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))  # the defaults, ~/data/scin/..., name nothing there
    code, _, err = run_script(monkeypatch, capsys, "test_siglip_embedding.py")
    assert code == 1
    assert "real_labeled_metadata.csv" in err and "Traceback" not in err


def test_seed_scripts_apply_the_original_defaults(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    import embed_scin_siglip
    from _wrapper import with_defaults

    argv = with_defaults(["--limit", "5"], embed_scin_siglip.SEED_DEFAULTS)
    pairs = dict(zip(argv[::2], argv[1::2]))
    assert pairs["--batch-size"] == "32" and pairs["--collection"] == "scin_dermatology"
    assert pairs["--model"] == "google/siglip-base-patch16-224"
    assert pairs["--metadata"].endswith("data/scin/real_labeled_metadata.csv")
    assert pairs["--images-dir"].endswith("data/scin/images")
    chosen = with_defaults(["--scin-dir", "/d", "--batch-size", "8"], embed_scin_siglip.SEED_DEFAULTS)
    assert "--metadata" not in chosen and chosen.count("--batch-size") == 1


# ------------------------------------------------------------------ exit codes (issue 10, item 9)


def test_embed_exits_1_when_an_image_is_not_stored_and_prints_the_summary(capsys, tmp_path, scin_release, embed_args):
    code, out, err = run(capsys, *embed_args(scin_release, tmp_path / "q", "--compile", "off"))
    assert code == 1, err
    assert "failed: " in out and "incomplete:" in out and "empty file" in out  # the summary, with each reason
    assert err.strip().splitlines()[-1].startswith("Error: embed incomplete:") and "Traceback" not in err
    code, out, err = run(capsys, *embed_args(scin_release, tmp_path / "q", "--compile", "off"))  # nothing new: still 1
    assert code == 1 and "embedded 0" in out


def test_embed_exits_1_when_every_image_failed(capsys, tmp_path, embed_args):
    from scinsearch import testing

    release = testing.write_release(tmp_path / "scin", cases=4, broken_files=False)
    for image in (release / "dataset" / "images").iterdir():
        image.write_bytes(b"not a picture")
    code, out, err = run(capsys, *embed_args(release, tmp_path / "q", "--compile", "off"))
    assert code == 1 and "embedded 0, already present 0, failed" in out and "Error: embed incomplete" in err


def test_embed_exits_0_when_only_the_releases_known_gap_is_missing(capsys, tmp_path, scin_release, embed_args):
    from scinsearch import testing

    records = read_release(scin_release).records
    limit = next(n for n, r in enumerate(records, start=1) if r.payload["image_path"] == testing.MISSING_IMAGE) + 1
    code, out, err = run(capsys, *embed_args(scin_release, tmp_path / "q", "--compile", "off", "--limit", limit))
    assert code == 0, out + err
    assert "known gap of the release (not an error)" in out and "-2243186711511406658.png" in out
    assert "complete: every image is stored" in out and "failed: " not in out


def test_decode_timeout_default_in_the_help_is_the_one_the_run_uses():
    from scinsearch.commands.embed_cmds import embed
    from scinsearch.decoding import DECODE_TIMEOUT

    option = next(p for p in embed.params if p.name == "decode_timeout")
    assert f"default {DECODE_TIMEOUT:g};" in option.help
