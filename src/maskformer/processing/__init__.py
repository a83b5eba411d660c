"""Image processor (preprocess, training targets) and post-processing (semantic, instance, panoptic)."""
