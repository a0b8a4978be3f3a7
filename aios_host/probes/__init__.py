"""eBPF sensors: bpf/*.bpf.c loaded with bcc (loader.py), read as cumulative counters per cgroup
(sample.py) and events (structs.py), with their own cost measured (stats.py).

bcc is imported only when probes are loaded, so everything else works on hosts without it.
"""
