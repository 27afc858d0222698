"""Fine-tuning for SCIN, measured by the same leave-case-out evaluation and never touching the test split.

Two methods, one contract (docs/finetuning.md):

- `adapter` (default): a low-rank residual map learnt on the stored image vectors of the train split
  (no images, no re-embedding; minutes on a CPU). Applied by transforming the query vector at search
  time and the stored vectors into a new collection (`apply`), the original untouched.
- `lora`: LoRA of the vision tower (peft) on the train-split images through the embed pipeline's
  decoding, resumable checkpoints, written as a merged model folder that `--model DIR` loads.

Modules, one job each: `data` (which images may be trained on, validation carved by case), `loss` (the
prototype soft-target loss), `adapter` (train, save, load), `apply` (adapted collections and the query
side of search), `lora` (the vision-tower run), `record` (what a run records and the checks on it),
`validation` (the evaluation's metrics on the validation cases).
"""
