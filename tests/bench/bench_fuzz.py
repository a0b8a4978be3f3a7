"""The hostile-input fuzzers' throughput: cases per second, and how many distinct cases a run tries.

Runs the policy fuzzer (tests/unit/fuzz/test_fuzz_policy.py: hostile and schema-drawn policies
through check / diff / explain / apply on a fake cgroup v2 host, in-process) for --examples cases
each, counting the cases it really ran (hypothesis stops early when it has nothing new) and how
many of them were distinct documents. Reference, side by side in the same run: the same kind of
case done the way a shell fuzzer would, one `aios-host policy check` process per generated file
(check, diff and apply --dry-run for each of --ref-cases files, as the fuzzer does for
an accepted one), so the ratio says what running in-process buys (it is what lets CI afford
hundreds of cases). Run: .venv/bin/python tests/bench/bench_fuzz.py [--examples N] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=1000)
    ap.add_argument("--ref-cases", type=int, default=20)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    os.environ["AIOS_FUZZ_EXAMPLES"] = str(args.examples)  # read when the fuzz module is imported
    from hypothesis import strategies as st  # noqa: F401  (hypothesis must be importable)

    import tests.unit.fuzz.test_fuzz_policy as fz
    from tests.unit.fixtures import fake_v2_host

    fz.event = lambda *_: None  # no hypothesis statistics outside pytest
    seen: set[str] = set()
    ran = [0]
    real_check = fz._check_policy

    def counting(doc, kernel_root, tmp_path):  # type: ignore[no-untyped-def]
        ran[0] += 1
        seen.add(hashlib.sha256(fz.document(doc).encode()).hexdigest())
        real_check(doc, kernel_root, tmp_path)

    fz._check_policy = counting
    out: dict[str, object] = {"examples_asked": args.examples}
    with tempfile.TemporaryDirectory() as tmp:
        root = fake_v2_host(Path(tmp) / "root", cpus=fz.CPUS)
        tests = {"hostile": fz.test_hostile_policies_are_refused_in_one_line_or_planned_within_kernel_ranges,
                 "schema": fz.test_schema_generated_policies_are_refused_in_one_line_or_planned_within_kernel_ranges}
        for name, test in tests.items():
            ran[0] = 0
            seen.clear()
            t0 = time.perf_counter()
            test(kernel_root=root, tmp_path=Path(tmp))
            dt = time.perf_counter() - t0
            out[name] = {"cases": ran[0], "distinct": len(seen), "seconds": round(dt, 2),
                         "cases_per_s": round(ran[0] / dt, 1)}
        # reference: one process per case, on the same kind of file
        pol = Path(tmp) / "ref.toml"
        pol.write_text('[[class]]\nname = "a"\nmemory.max = "1G"\n')  # accepted: all three commands run
        t0 = time.perf_counter()
        for _ in range(args.ref_cases):
            for cmd in (["check"], ["diff", "--json", "--sample-ms", "0"], ["apply", "--dry-run", "--json",
                                                                            "--sample-ms", "0"]):
                subprocess.run([sys.executable, "-m", "aios_host", "policy", *cmd, "--root", str(root), str(pol)],
                               capture_output=True, check=False)
        dt = time.perf_counter() - t0
        out["reference_subprocess"] = {"cases": args.ref_cases, "seconds": round(dt, 2),
                                       "cases_per_s": round(args.ref_cases / dt, 2)}
    ref = out["reference_subprocess"]["cases_per_s"]  # type: ignore[index]
    for name in ("hostile", "schema"):
        out[name]["x_reference"] = round(out[name]["cases_per_s"] / ref, 1)  # type: ignore[index]
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for name in ("hostile", "schema"):
            r = out[name]  # type: ignore[index]
            print(f"{name:8s} {r['cases']:5d} cases ({r['distinct']} distinct) in {r['seconds']:6.1f} s = "
                  f"{r['cases_per_s']:6.1f}/s, x{r['x_reference']} the reference")
        print(f"reference: check + diff + apply --dry-run processes per case: {ref}/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
