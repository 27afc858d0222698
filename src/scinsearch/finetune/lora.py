"""LoRA of the SigLIP vision tower (peft), on the train-split images, with the adapter's loss.

Data: the images of `choose_examples` (train split only, validation carved by case), decoded by the embed
pipeline's own workers (`pipeline.make_loader`: `DecodeImages`, and the pixel cache when given), normalised
by `Embedder.model_inputs`, so the model sees exactly what `scinsearch embed` would give it.

Run: prototypes start at the class means of the frozen vectors (one no-grad pass, which also gives the
frozen validation metrics); then epochs in a seeded order, a validation loss after each, the best epoch
kept, patience in epochs. Only the LoRA matrices (q/k/v/out projections of the vision tower) and the
prototypes train; the text tower and everything else stay frozen. Mixed precision (bf16) on CUDA.

Checkpoints (`<out>/checkpoint/state.pt`, written atomically every `checkpoint_every` steps, at the end
of each epoch and when `max_steps` stops the run) hold the LoRA weights, prototypes, optimiser, step,
position in the epoch, RNG state and the best state so far; `resume` continues from there and ends with
the same weights as an uninterrupted run. The result is a plain model folder (LoRA merged into the
weights, `save_pretrained`, the processor files, `finetune.json`) that `--model DIR` loads.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from scinsearch.dataset import Dataset
from scinsearch.errors import ScinSearchError
from scinsearch.finetune import loss as L
from scinsearch.finetune import record as R
from scinsearch.finetune.config import LoraConfig, improves, patience_spent
from scinsearch.finetune.data import TrainingSet, choose_examples, table_from_payloads
from scinsearch.finetune.lora_state import Checkpoint, fingerprint, load_checkpoint, save_checkpoint
from scinsearch.finetune.validation import validation_metrics
from scinsearch.pixel_cache import PixelCache
from scinsearch.settings import Settings

RECORD_FILE = "finetune.json"
TARGET_MODULES = r".*vision_model.*\.(q_proj|k_proj|v_proj|out_proj)"  # the vision tower's attention only


@dataclasses.dataclass
class Run:
    """What the training loop works on."""

    training: TrainingSet
    records: list  # ImageRecord per table row
    model: torch.nn.Module  # the peft-wrapped SiglipModel
    embedder: object  # Embedder around `model`: preprocessing, normalisation, no-grad passes
    head: L.PrototypeHead
    optimiser: torch.optim.Optimizer
    state: Checkpoint
    cache: PixelCache | None
    workers: int | None
    image_root: Path


def train_lora(
    dataset: Dataset,
    settings: Settings,
    out_dir: Path,
    config: LoraConfig = LoraConfig(),
    *,
    resume: bool = False,
    max_steps: int | None = None,
    checkpoint_every: int = 200,
    workers: int | None = None,
    log: Callable[[str], None] = lambda line: None,
) -> Path:
    """Fine-tune, checkpoint, and write the merged model folder to `out_dir`; returns it."""
    config.check()
    out_dir = Path(out_dir).expanduser()
    started = time.perf_counter()
    table = table_from_payloads([r.image_id for r in dataset.records], [r.payload for r in dataset.records])
    training = choose_examples(table, seed=config.seed, validation_fraction=config.validation_fraction)
    run = open_run(training, dataset, settings, out_dir, config, resume, workers, log)
    if run.state.step == 0 and not run.state.history:
        start_from_frozen(run, config, log)
    while run.state.epoch <= config.epochs and not run.state.stopped:
        if not train_epoch(run, config, out_dir, max_steps, checkpoint_every, log):
            break
        end_epoch(run, config, out_dir, log)
    return finish(run, settings, out_dir, config, started, log)


def open_run(
    training: TrainingSet,
    dataset: Dataset,
    settings: Settings,
    out_dir: Path,
    config: LoraConfig,
    resume: bool,
    workers: int | None,
    log,
) -> Run:
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

    from scinsearch.embedding import Embedder, build_preprocessor, load_pretrained, resolve_device

    marks = fingerprint(settings.model, config, training)
    checkpoint = load_checkpoint(out_dir, marks) if resume else None
    if checkpoint is None and (out_dir / "checkpoint").exists():
        raise ScinSearchError(f"{out_dir} holds a checkpoint: continue it with --resume, or choose another --out")
    device = resolve_device(settings.device)
    model, processor, source = load_pretrained(settings.model, torch.float32)
    torch.manual_seed(config.seed)  # the LoRA matrices' initialisation
    lora = LoraConfig(
        r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout, target_modules=TARGET_MODULES, bias="none"
    )
    with warnings.catch_warnings():  # peft 0.21 asks transformers 5 a deprecated question; nothing to act on
        warnings.simplefilter("ignore", FutureWarning)
        model = get_peft_model(model, lora)
    preprocessor = build_preprocessor(model.base_model.model, processor, source, fast=not settings.exact_preprocessing)
    embedder = Embedder.from_model(
        model, preprocessor, settings.model, device=str(device), precision="fp32", compile="off", processor=processor
    )
    dim = embedder.dim
    head = L.PrototypeHead(
        torch.zeros(len(training.conditions), dim), config.temperature or 1.0, config.temperature is None
    ).to(device)
    optimiser = torch.optim.AdamW(
        [
            {"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": config.weight_decay},
            {"params": head.parameters(), "weight_decay": 0.0, "lr": config.prototype_learning_rate},
        ],
        lr=config.learning_rate,
    )
    state = Checkpoint(marks=marks)
    if checkpoint is not None:
        set_peft_model_state_dict(model, checkpoint.lora)
        head.load_state_dict(checkpoint.head)
        optimiser.load_state_dict(checkpoint.optimiser)
        torch.set_rng_state(checkpoint.rng)
        state = checkpoint
        log(f"resuming at step {state.step} (epoch {state.epoch}, batch {state.batch})")
    log(
        f"LoRA rank {config.rank} on {embedder.describe()}: {len(training.fit)} training images, "
        f"{len(training.validation)} validation images, {len(training.conditions)} conditions"
    )
    cache = PixelCache(settings.cache_dir) if settings.cache_dir else None
    return Run(training, dataset.records, model, embedder, head, optimiser, state, cache, workers, dataset.image_root)


def start_from_frozen(run: Run, config: LoraConfig, log) -> None:
    """One no-grad pass: prototypes at the frozen class means, the frozen validation loss and metrics."""
    rows = np.concatenate([run.training.fit, run.training.validation])
    vectors, failed = embed_rows(run, rows, config.batch_size)
    run.state.failed = failed
    fit = vectors[: len(run.training.fit)]
    targets = torch.from_numpy(run.training.targets(run.training.fit))
    weights = torch.from_numpy(run.training.case_weights(run.training.fit))
    usable = torch.from_numpy(~np.isnan(fit).any(axis=1))
    fit_vectors = torch.from_numpy(np.nan_to_num(fit))
    means = L.class_means(fit_vectors, targets, weights * usable)
    start = config.temperature or L.calibrated_temperature(fit_vectors, targets, weights * usable, means)
    run.state.start_temperature = start
    with torch.no_grad():
        run.head.prototypes.copy_(means.to(run.head.prototypes.device))
        run.head.log_scale.fill_(-math.log(start))
    run.state.frozen_metrics = validation_metrics(run.training, np.nan_to_num(vectors))
    loss = held_out_loss(run, vectors[len(run.training.fit) :])
    run.state.best = {"loss": loss, "epoch": 0, "lora": lora_weights(run), "head": clone(run.head.state_dict())}
    run.state.history.append({"epoch": 0, "train_loss": None, "validation_loss": loss})
    log(f"frozen model: validation loss {loss:.4f}")


def train_epoch(run: Run, config: LoraConfig, out_dir: Path, max_steps: int | None, checkpoint_every: int, log) -> bool:
    """Train the rest of the current epoch; False when `max_steps` stopped the run (checkpoint saved)."""
    from scinsearch.pipeline import make_loader

    state, training = run.state, run.training
    order = training.fit[np.random.default_rng([config.seed, state.epoch]).permutation(len(training.fit))]
    targets = dict(zip(order.tolist(), training.targets(order)))
    weights = dict(zip(training.fit.tolist(), training.case_weights(training.fit)))
    todo = order[state.batch * config.batch_size :]
    loader = make_loader([run.records[r] for r in todo], run.embedder, run.workers, run.cache, config.batch_size)
    run.model.train()
    for chunk in loader:
        if chunk.arrays is not None:
            rows = todo[chunk.indices]
            loss = step(
                run,
                chunk.arrays,
                torch.from_numpy(np.stack([targets[r] for r in rows])),
                torch.tensor([weights[r] for r in rows]),
            )
            state.running.append(loss)
        state.batch += 1
        state.step += 1
        if max_steps is not None and state.step >= max_steps:
            save_checkpoint(out_dir, run_state(run))
            log(f"stopped at step {state.step} (--max-steps); continue with --resume")
            state.stopped = "max steps"
            return False
        if checkpoint_every and state.step % checkpoint_every == 0:
            save_checkpoint(out_dir, run_state(run))
    return True


def step(run: Run, arrays: dict, targets: torch.Tensor, weights: torch.Tensor) -> float:
    device = run.embedder.device
    inputs = run.embedder.model_inputs(arrays)
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        features = F.normalize(run.embedder.image_tower(**inputs).float(), dim=-1)  # pooled, as embed makes them
    loss = L.soft_cross_entropy(run.head(features), targets.to(device), weights.to(device))
    run.optimiser.zero_grad(set_to_none=True)
    loss.backward()
    run.optimiser.step()
    return loss.item()


def end_epoch(run: Run, config: LoraConfig, out_dir: Path, log) -> None:
    """Validation loss, keep the best epoch, early stopping, and a checkpoint at the epoch boundary."""
    state = run.state
    vectors, _ = embed_rows(run, run.training.validation, config.batch_size)
    loss = held_out_loss(run, vectors)
    train_loss = float(np.mean(state.running)) if state.running else None
    state.history.append({"epoch": state.epoch, "train_loss": train_loss, "validation_loss": loss})
    log(
        f"epoch {state.epoch}: train loss {train_loss if train_loss is None else round(train_loss, 4)}, "
        f"validation loss {loss:.4f}"
    )
    if improves(loss, state.best["loss"]):
        state.best = {
            "loss": loss,
            "epoch": state.epoch,
            "lora": lora_weights(run),
            "head": clone(run.head.state_dict()),
        }
    elif patience_spent(state.epoch, state.best["epoch"], config.patience):
        state.stopped = "early stopping"
    state.epoch, state.batch, state.running = state.epoch + 1, 0, []
    if state.epoch > config.epochs and not state.stopped:
        state.stopped = "epochs"
    save_checkpoint(out_dir, run_state(run))


def finish(run: Run, settings: Settings, out_dir: Path, config: LoraConfig, started: float, log) -> Path:
    """Best (or, when stopped by --max-steps, current) weights merged and written as a model folder."""
    from peft import set_peft_model_state_dict

    state = run.state
    if state.stopped != "max steps":
        set_peft_model_state_dict(run.model, state.best["lora"])
        run.head.load_state_dict(state.best["head"])
    rows = np.concatenate([run.training.fit, run.training.validation])
    vectors, _ = embed_rows(run, rows, config.batch_size)
    tuned_metrics = validation_metrics(run.training, np.nan_to_num(vectors))
    merged = run.model.merge_and_unload()
    merged.save_pretrained(out_dir)
    run.embedder.processor.save_pretrained(out_dir)
    training = run.training
    record = R.run_record(
        format="scinsearch-finetuned-model",
        method="lora",
        base_model=settings.model,
        dim=run.embedder.dim,
        config=config,
        training=training,
        loss=L.describe(run.head, state.start_temperature, learnt=config.temperature is None),
        run={
            "steps": state.step,
            "epochs_run": len(state.history) - 1,
            "best_epoch": state.best["epoch"],
            "stopped": state.stopped or "epochs",
            "history": state.history,
            "failed_images": len(state.failed),
            "seconds_this_run": round(time.perf_counter() - started, 1),
        },
        validation={"frozen": state.frozen_metrics, "finetuned": tuned_metrics},
        data={"images": str(run.image_root), **training.summary()},
        lora={"target_modules": TARGET_MODULES, "rank": config.rank, "alpha": config.alpha, "merged": True},
    )
    R.write_json(out_dir / RECORD_FILE, record)
    log(f"wrote {out_dir} (load it with --model {out_dir})")
    return out_dir


def embed_rows(run: Run, rows: np.ndarray, batch_size: int) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """No-grad vectors of some rows (NaN rows for images that failed to decode) and the failures."""
    from scinsearch.pipeline import Batcher, make_loader

    run.model.eval()
    records = [run.records[r] for r in rows]
    vectors = np.full((len(rows), run.embedder.dim), np.nan, dtype=np.float32)
    failed = []
    batcher = Batcher(batch_size, pin=run.embedder.device.type == "cuda")
    for chunk in make_loader(records, run.embedder, run.workers, run.cache, min(batch_size, 16)):
        failed += [(str(records[i].file), reason) for i, reason in chunk.failures]
        for indices, arrays in batcher.add(chunk):
            vectors[indices] = run.embedder.embed_batch(arrays)
    for indices, arrays in batcher.flush():
        vectors[indices] = run.embedder.embed_batch(arrays)
    return vectors, failed


@torch.no_grad()
def held_out_loss(run: Run, vectors: np.ndarray) -> float:
    rows = run.training.validation
    usable = torch.from_numpy(~np.isnan(vectors).any(axis=1))
    weights = torch.from_numpy(run.training.case_weights(rows)) * usable
    device = run.head.prototypes.device
    logits = run.head(torch.from_numpy(np.nan_to_num(vectors)).to(device))
    return float(
        L.soft_cross_entropy(logits, torch.from_numpy(run.training.targets(rows)).to(device), weights.to(device))
    )


def lora_weights(run: Run) -> dict:
    from peft import get_peft_model_state_dict

    return clone(get_peft_model_state_dict(run.model))


def clone(state: dict) -> dict:
    return {key: value.detach().cpu().clone() for key, value in state.items()}


def run_state(run: Run) -> Checkpoint:
    run.state.lora = lora_weights(run)
    run.state.head = clone(run.head.state_dict())
    run.state.optimiser = run.optimiser.state_dict()
    run.state.rng = torch.get_rng_state()
    return run.state
