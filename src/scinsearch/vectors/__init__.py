"""The vector layer that calibration, evaluation and fine-tuning share, below all three of them.

- `neighbours`: stored points -> arrays (`PointTable`), protocol selection, exclusion masks, exact kNN;
- `metrics`: pure metric arithmetic (top-k, hit, recall@k, weighted rank AUC, the case bootstrap);
- `adapter`: a trained adapter read back and applied to vectors (what search and evaluation use; no
  training code: that is `finetune`).

Importing this package loads nothing: import the module you need.
"""
