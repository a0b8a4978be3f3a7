"""The policy engine: schema (TOML -> Policy), demand (snapshot -> Problem), solver (Problem ->
Allocation), mapping (Allocation -> desired cgroup values), plan (diff) and explain."""
