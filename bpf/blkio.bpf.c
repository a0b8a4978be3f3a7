/* blkio.bpf.c - block I/O latency per cgroup: block_rq_issue -> block_rq_complete, log2 usec.
 *
 * The completion runs in interrupt context, so the cgroup is taken at issue (current then is the
 * task that dispatched the request: the submitter for synchronous I/O without an I/O scheduler
 * queue, possibly a kworker otherwise) and remembered with the issue time under the request's
 * (dev, sector), which block_rq_complete reports too. Tracepoint-format programs in every mode:
 * the raw arguments are struct request pointers whose layout is exactly what we do not trust.
 */
#include "aios.h"

struct blk_key {
    u32 dev;
    u32 _pad;
    u64 sector;
};

struct blk_start {
    u64 issue_ns;
    u64 cgroup_id;
};

BPF_TABLE("hash", struct blk_key, struct blk_start, blk_inflight, MAX_INFLIGHT);
BPF_TABLE("percpu_hash", struct hist_key, u64, blk_hist, MAX_HIST);
AIOS_DROPS_DECL;

static __always_inline void count_drop(int kind)
{
    u64 *d = drops.lookup(&kind);
    if (d)
        (*d)++;
}

TRACEPOINT_PROBE(block, block_rq_issue)
{
    if (args->nr_sector == 0)
        return TP_PASS;       /* flushes and other requests without data: no (dev, sector) identity */
    struct blk_key key = {.dev = args->dev, .sector = args->sector};
    struct blk_start start = {.issue_ns = bpf_ktime_get_ns(),
                              .cgroup_id = bpf_get_current_cgroup_id()};
    if (blk_inflight.update(&key, &start) != 0)
        count_drop(DROP_TASK_MAP);
    return TP_PASS;
}

TRACEPOINT_PROBE(block, block_rq_complete)
{
    struct blk_key key = {.dev = args->dev, .sector = args->sector};
    struct blk_start *start = blk_inflight.lookup(&key);
    if (!start)
        return TP_PASS;
    u64 usec = (bpf_ktime_get_ns() - start->issue_ns) / 1000;
    struct hist_key hk = {.cgroup_id = start->cgroup_id, .slot = hist_slot(usec)};
    blk_inflight.delete(&key);
    u64 *count = blk_hist.lookup(&hk);
    if (count) {
        (*count)++;
    } else {
        u64 one = 1;
        if (blk_hist.update(&hk, &one) != 0)
            count_drop(DROP_STATS_MAP);
    }
    return TP_PASS;
}
