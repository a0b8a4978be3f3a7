/* oom.bpf.c - OOM kills as events, charged to the victim's own cgroup.
 *
 * oom:mark_victim fires in the task whose allocation invoked the OOM killer (or in a memcg's
 * charging task), not in the victim. So mark_victim only remembers the victim's pid, the
 * triggering cgroup and the memory the tracepoint reports; the event is sent when the victim
 * exits (sched_process_exit runs in the victim itself, so its cgroup is current's) and the kill
 * is counted there in `oom_kills`. Tracepoint-format programs in every mode: mark_victim's
 * fields and raw prototype changed in 6.8 (pid only before; memory and uid since), and the
 * loader passes -DOOM_HAS_MEMORY when the running kernel's format has them.
 */
#include "aios.h"

struct oom_pending {
    u64 mark_ns;
    u64 trigger_cgroup_id;
    u64 total_vm_kb;
    u64 anon_rss_kb;
    u64 file_rss_kb;
    u64 shmem_rss_kb;
    s32 oom_score_adj;
    u32 has_memory;
};

BPF_HASH(victims, u32, struct oom_pending, 1024);
BPF_TABLE("percpu_hash", u64, u64, oom_kills, MAX_CGROUPS);
AIOS_EVENTS_DECL;
AIOS_DROPS_DECL;

static __always_inline void count_drop(int kind)
{
    u64 *d = drops.lookup(&kind);
    if (d)
        (*d)++;
}

static __always_inline void send_event(void *ctx, void *ev, u32 size)
{
    int err;
#ifdef AIOS_PERF_OUTPUT
    err = events.perf_submit(ctx, ev, size);
#else
    err = events.ringbuf_output(ev, size, 0);
#endif
    if (err)
        count_drop(DROP_EVENT);
}

TRACEPOINT_PROBE(oom, mark_victim)
{
    u32 pid = args->pid;
    struct oom_pending p = {};
    p.mark_ns = bpf_ktime_get_ns();
    p.trigger_cgroup_id = bpf_get_current_cgroup_id();
#ifdef OOM_HAS_MEMORY
    p.total_vm_kb = args->total_vm;
    p.anon_rss_kb = args->anon_rss;
    p.file_rss_kb = args->file_rss;
    p.shmem_rss_kb = args->shmem_rss;
    p.oom_score_adj = args->oom_score_adj;
    p.has_memory = 1;
#endif
    if (victims.update(&pid, &p) != 0)
        count_drop(DROP_TASK_MAP);
    return TP_PASS;
}

TRACEPOINT_PROBE(sched, sched_process_exit)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct oom_pending *p = victims.lookup(&tid);
    if (!p)
        return TP_PASS;
    u64 cgroup_id = bpf_get_current_cgroup_id();
    struct oom_event ev = {};
    fill_hdr(&ev.h, EVENT_OOM, cgroup_id);
    ev.trigger_cgroup_id = p->trigger_cgroup_id;
    ev.mark_ns = p->mark_ns;
    ev.total_vm_kb = p->total_vm_kb;
    ev.anon_rss_kb = p->anon_rss_kb;
    ev.file_rss_kb = p->file_rss_kb;
    ev.shmem_rss_kb = p->shmem_rss_kb;
    ev.oom_score_adj = p->oom_score_adj;
    ev.has_memory = p->has_memory;
    victims.delete(&tid);

    u64 *kills = oom_kills.lookup(&cgroup_id);
    if (kills) {
        (*kills)++;
    } else {
        u64 one = 1;
        if (oom_kills.update(&cgroup_id, &one) != 0)
            count_drop(DROP_STATS_MAP);
    }
    send_event(args, &ev, sizeof(ev));
    return TP_PASS;
}
