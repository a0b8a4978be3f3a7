"""`aios-host energy status`: CPU frequency policies, RAPL and GPU energy, and who else owns the
CPU knobs, read-only. A part the host lacks is one line saying so ("cpufreq: none (...)")."""

from __future__ import annotations

import argparse

from aios_host.cli import base as cli_base
from aios_host.energy.status import EnergyStatus, gather_energy_status
from aios_host.kernel.root import SysRoot
from aios_host.output import print_json
from aios_host.table import render


def _v(value: object, fmt: str = "{}") -> str:
    return "-" if value is None else fmt.format(value)


def _per_1000(v: int | None) -> float | None:
    """mW -> W, mJ -> J."""
    return None if v is None else v / 1000


def _print_text(st: EnergyStatus) -> None:
    summary = st.summary_lines()
    print(summary[0])
    if st.policies:
        rows = [(p.name, _cpus(p.cpus), p.governor, p.min_freq_khz, p.max_freq_khz, _v(p.cur_freq_khz),
                 f"{p.cpuinfo_min_freq_khz}..{p.cpuinfo_max_freq_khz}", _v(p.epp),
                 "-" if p.boost is None else ("on" if p.boost.enabled else "off"))
                for p in st.policies]
        print(render(["policy", "cpus", "governor", "min_khz", "max_khz", "cur_khz", "cpuinfo_khz", "epp", "boost"],
                     rows))
    print(summary[1])
    if st.zones:
        rows = [(z.zone.zone, z.zone.name, _v(None if z.energy_uj is None else z.energy_uj / 1e6, "{:.3f}"),
                 _v(z.power_w, "{:.1f}")) for z in st.zones]
        print(render(["zone", "name", f"energy_J/{st.interval_s:g}s", "power_W"], rows))
    print(summary[2])
    if st.gpus:
        rows = []
        for g in st.gpus:
            s, p = g.sensors, g.knobs.power
            rows.append((
                g.info.index, g.info.name, _v(_per_1000(s.power_mw), "{:.1f}"), _v(_per_1000(g.energy_mj), "{:.1f}"),
                "-" if p is None else f"{p.limit_mw / 1000:g}",
                "-" if p is None or p.enforced_mw is None else f"{p.enforced_mw / 1000:g}",
                "-" if p is None else f"{p.min_mw / 1000:g}..{p.max_mw / 1000:g}",
                _v(s.sm_clock_mhz), _v(s.gpu_util_pct), _v(s.temperature_c),
                " ".join(s.clock_event_reasons) or "-",
                "; ".join(f"{k}: {why}" for k, why in g.knobs.absent.items()) or "-",
            ))
        print(render(["gpu", "name", "power_W", f"energy_J/{st.interval_s:g}s", "limit_W", "enforced_W", "range_W",
                      "sm_MHz", "util_%", "temp_C", "clock_events", "observe_only"], rows))
    for line in summary[3:]:
        print(line)


def _cpus(cpus: tuple[int, ...]) -> str:
    from aios_host.kernel.cgroup_format import format_cpu_list

    return format_cpu_list(cpus) if cpus else "-"


def cmd_status(args: argparse.Namespace) -> int:
    st = gather_energy_status(SysRoot(args.root), interval_s=args.interval)
    if args.json:
        print_json(st.to_dict())
    else:
        _print_text(st)
    return 0


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    e = sub.add_parser("energy", help="CPU frequency, RAPL and GPU power: settings and draw")
    esub = e.add_subparsers(dest="energy_command", required=True, metavar="ACTION")
    s = esub.add_parser("status", parents=[common],
                        help="settings, power and energy per CPU policy, RAPL zone and GPU (read-only); "
                             "--root applies to cpufreq and RAPL, NVML and systemd are always this host's")
    s.add_argument("--interval", type=cli_base.seconds_arg(0, 60), default=1.0,
                   help="window over which energy and average power are measured (default 1s; 0: none)")
    s.set_defaults(func=cmd_status)
