"""Training stage: open_clip_train with the paper's variants (see entry.py, run.py)."""
