"""`aios-host top`: a top-style view of the host, its policy classes and cgroups, jobs and decisions.

Layers, each importable without the one above it:
- model:     plain dataclasses (TopModel, Row, ...) built from either source, and the pure functions
             that order, sort and filter rows; no I/O.
- cells:     what a person sees of a model: cell texts with units, colour levels, header and panel
             lines as (text, style) segments; no I/O, no textual.
- document:  the --json document (schema aios-host-top/1, top.schema.json) and the plain/ANSI tables
             of batch mode (--once, -n).
- sources:   the I/O: the daemon's API, a local read-only cgroupfs + PSI snapshot, NVML, journald.
- app:       the Textual application; the only module that imports textual (the [tui] extra).
"""
