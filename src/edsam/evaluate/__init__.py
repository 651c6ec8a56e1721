"""Evaluation stage: zero-shot and linear probe (clip_benchmark), fine-tuning, one JSON per job."""
