"""Report stage: the paper tables beside the published numbers."""
