"""Small shared pieces, one copy each: constants, atomic file writing, hub resolution, COCO
encodings."""
