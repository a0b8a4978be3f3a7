"""Energy: deciding (auto_search, a pure state machine) and reporting (status) what the energy
knobs of kernel/cpufreq.py, kernel/rapl.py and kernel/gpu.py are set to. Writing them is the
caller's: the decision code never touches the host."""
