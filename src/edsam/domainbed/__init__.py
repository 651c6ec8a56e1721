"""DomainBed-protocol evaluation and VL2V-ADiP distillation of trained CLIPs (spec section 8)."""
