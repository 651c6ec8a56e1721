"""edsam: the ED-SAM pipeline's logic, called by the Snakemake rules.

Each stage registers its commands with ``edsam.cli`` from a commands module of
its own (``edsam.<stage>.commands``, or ``edsam.<stage>_commands`` for a stage
that is a single module); rules stay thin and call ``python -m edsam <command>``.
Code only the demo needs is in ``edsam.demo``.
"""

__version__ = "0.1.0"
