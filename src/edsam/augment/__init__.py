"""ED-SAM augmentation: DDIM inversion, the transport transformation, sampling back (spec sections 2-3)."""
