"""edsam: the ED-SAM pipeline's logic, called by the Snakemake rules.

Each stage is a module with a small command-line entry point in ``edsam.cli``;
rules stay thin and call ``python -m edsam <command>``.
"""

__version__ = "0.1.0"
