"""Worker preload for the embedded cluster (``dask_setup`` runs in every worker process,
also one its nanny restarts): Ctrl-C on a terminal goes to the whole process group, and
the client, not a worker, decides what it means — the client stops the run and keeps the
finished rows; a worker interrupted mid-dump would only make closing the cluster hang."""

import signal


def dask_setup(worker) -> None:
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:      # not the main thread of the worker process: nothing to do
        pass
