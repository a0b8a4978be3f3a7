/* faults.bpf.c - user page faults per cgroup (exceptions:page_fault_user, x86).
 *
 * The fault is taken by the faulting task itself, so bpf_get_current_cgroup_id() is its cgroup.
 * One per-CPU counter per cgroup; nothing else on this path (it can fire millions of times a
 * second for a process touching fresh memory).
 */
#include "aios.h"

BPF_TABLE("percpu_hash", u64, u64, fault_count, MAX_CGROUPS);
AIOS_DROPS_DECL;

static __always_inline int on_fault(void)
{
    u64 cgroup_id = bpf_get_current_cgroup_id();
    u64 *count = fault_count.lookup(&cgroup_id);
    if (count) {
        (*count)++;
        return 0;
    }
    u64 one = 1;
    if (fault_count.update(&cgroup_id, &one) != 0) {
        int kind = DROP_STATS_MAP;
        u64 *d = drops.lookup(&kind);
        if (d)
            (*d)++;
    }
    return 0;
}

#ifdef AIOS_RAW_TP
RAW_TRACEPOINT_PROBE(page_fault_user)
{
    return on_fault();
}
#else
TRACEPOINT_PROBE(exceptions, page_fault_user)
{
    on_fault();
    return TP_PASS;
}
#endif
