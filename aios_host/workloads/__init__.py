"""Workloads that ship with aios-host: the AllReduce benchmark (torch / ring / parameter server),
an example DDP training job, and gangcheck, a small collective loop for checking launchers."""
