"""Dataset readers (ADE20K-style semantic folders, COCO panoptic), augmentations and batching."""
