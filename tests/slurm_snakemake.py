"""``python -m snakemake`` for the local-cluster test, with the slurm plugin polling every
``--seconds-between-status-checks`` seconds.

The plugin adds 10 s to its wait after every status check that finds no job finished (up to 180 s),
which suits jobs of hours; the local cluster's jobs take seconds, and that backoff made even a trivial
one cost ~38 s (~18 s with it off; the test's run 354 s -> 253 s). Only the polling cadence changes:
jobs, their resources and their status handling are the plugin's own.
"""

import snakemake_executor_plugin_slurm as slurm
from snakemake.cli import main


def _configured_interval(executor):
    return executor.workflow.remote_execution_settings.seconds_between_status_checks


slurm.Executor.next_seconds_between_status_checks = property(_configured_interval, lambda executor, value: None)

if __name__ == "__main__":
    main()
