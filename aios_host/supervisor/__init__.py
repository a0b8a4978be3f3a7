"""Job supervisor: torch.distributed ranks as managed units (systemd transient services, or
cgroups of our own), gang fail-fast, restart with backoff, free rendezvous ports, heartbeats,
stragglers, logs. See ARCHITECTURE.md, "The supervisor"."""
