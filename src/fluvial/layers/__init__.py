"""The layers of the Lambda and Kappa architectures, as policies over the engine's runners.

* :mod:`.handover`: where a batch run ends and the speed layer starts (one decision);
* :mod:`.pipelines`: the pipelines a server runs and their architecture;
* :mod:`.speed`: the speed layer of a server (a stream runner per pipeline);
* :mod:`.batch`: the batch layer of a server (scheduled runs in child processes);
* :mod:`.kappa`: reprocessing by replay into a new version, switch and rollback.
"""
