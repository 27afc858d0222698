"""Fine-tuning for SCIN, measured by the same leave-case-out evaluation and never touching the test split.

Two methods, one contract (docs/finetuning.md):

- `adapter` (default): a low-rank residual map learnt on the stored image vectors of the train split
  (no images, no re-embedding; minutes on a CPU). Applied by transforming the query vector at search
  time and the stored vectors into a new collection (`apply`), the original untouched.
- `lora`: LoRA of the vision tower (peft) on the train-split images through the embed pipeline's
  decoding, resumable checkpoints, written as a merged model folder that `--model DIR` loads.

Training code only: search never imports this package. Modules, one job each: `config` (one config for
both methods, their defaults, the early-stopping rule), `data` (which images may be trained on, validation
carved by case), `loss` (the prototype soft-target loss), `adapter` (train, save), `apply` (adapted
collections), `lora` (the vision-tower run), `record` (the run record both methods write), `validation`
(the evaluation's metrics on the validation cases). Loading an adapter and applying it to queries is
`scinsearch.vectors.adapter`.
"""
