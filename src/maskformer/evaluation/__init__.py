"""Metrics that accumulate over batches and processes: semantic, panoptic and instance."""
