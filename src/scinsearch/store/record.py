"""The keys of a collection's record (`CollectionInfo.extra`) that other stages write: one home for them.

`embed` records where the images were read from, `finetune apply` which adapter made an adapted
collection and from which collection, `calibrate` its calibration document. Readers use the
`CollectionInfo` accessors (`image_root`, `adapter_id`, ...) rather than these strings.
"""

IMAGE_ROOT = "image_root"  # the folder `embed` read the images from (the service shows them from there)
ADAPTER_ID = "adapter_id"  # an adapted collection: the SHA-256 of the adapter's weights (`finetune apply`)
ADAPTER_DIR = "adapter_dir"  # ... the adapter's folder when it was applied
ADAPTED_FROM = "adapted_from"  # ... the collection of frozen vectors it was made from
CALIBRATION = "scinsearch_calibration"  # the calibration document (`calibration.record`)
