/* reclaim.bpf.c - time stalled in direct reclaim and in memcg reclaim, per cgroup.
 *
 * vmscan:mm_vmscan_direct_reclaim_begin/_end bracket the page allocator's direct reclaim, and
 * vmscan:mm_vmscan_memcg_reclaim_begin/_end a charge that had to reclaim from its memory cgroup
 * (memory.high/max). Both run in the allocating task, so the stall belongs to current's cgroup.
 * Begin and end are paired per thread; the two kinds are kept apart in the key.
 */
#include "aios.h"

#define KIND_DIRECT 0
#define KIND_MEMCG 1

BPF_TABLE("hash", u64, u64, reclaim_start, MAX_TASKS);
BPF_TABLE("percpu_hash", u64, struct reclaim_stats, reclaim_stats, MAX_CGROUPS);
AIOS_DROPS_DECL;

static __always_inline void count_drop(int kind)
{
    u64 *d = drops.lookup(&kind);
    if (d)
        (*d)++;
}

static __always_inline u64 start_key(int kind)
{
    return (bpf_get_current_pid_tgid() & 0xffffffffULL) << 1 | kind;
}

static __always_inline int on_begin(int kind)
{
    u64 key = start_key(kind);
    u64 now = bpf_ktime_get_ns();
    if (reclaim_start.update(&key, &now) != 0)
        count_drop(DROP_TASK_MAP);
    return 0;
}

static __always_inline int on_end(int kind)
{
    u64 key = start_key(kind);
    u64 *start = reclaim_start.lookup(&key);
    if (!start)
        return 0;       /* began before we attached */
    u64 delta = bpf_ktime_get_ns() - *start;
    reclaim_start.delete(&key);
    u64 cgroup_id = bpf_get_current_cgroup_id();
    struct reclaim_stats *s = reclaim_stats.lookup(&cgroup_id);
    if (!s) {
        struct reclaim_stats init = {};
        reclaim_stats.update(&cgroup_id, &init);
        s = reclaim_stats.lookup(&cgroup_id);
        if (!s) {
            count_drop(DROP_STATS_MAP);
            return 0;
        }
    }
    if (kind == KIND_DIRECT) {
        s->direct_ns += delta;
        s->direct_count++;
    } else {
        s->memcg_ns += delta;
        s->memcg_count++;
    }
    return 0;
}

#ifdef AIOS_RAW_TP
RAW_TRACEPOINT_PROBE(mm_vmscan_direct_reclaim_begin) { return on_begin(KIND_DIRECT); }
RAW_TRACEPOINT_PROBE(mm_vmscan_direct_reclaim_end) { return on_end(KIND_DIRECT); }
RAW_TRACEPOINT_PROBE(mm_vmscan_memcg_reclaim_begin) { return on_begin(KIND_MEMCG); }
RAW_TRACEPOINT_PROBE(mm_vmscan_memcg_reclaim_end) { return on_end(KIND_MEMCG); }
#else
TRACEPOINT_PROBE(vmscan, mm_vmscan_direct_reclaim_begin) { on_begin(KIND_DIRECT); return TP_PASS; }
TRACEPOINT_PROBE(vmscan, mm_vmscan_direct_reclaim_end) { on_end(KIND_DIRECT); return TP_PASS; }
TRACEPOINT_PROBE(vmscan, mm_vmscan_memcg_reclaim_begin) { on_begin(KIND_MEMCG); return TP_PASS; }
TRACEPOINT_PROBE(vmscan, mm_vmscan_memcg_reclaim_end) { on_end(KIND_MEMCG); return TP_PASS; }
#endif
