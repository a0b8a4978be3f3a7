/* sched.bpf.c - run-queue latency, preemptions and on-CPU time per cgroup.
 *
 * One probe because all three live on sched_switch, the hottest tracepoint there is: a second
 * program there would pay the dispatch and the lookups again.
 *
 * Run-queue latency is runqlat's: from the moment a task becomes runnable (sched_wakeup,
 * sched_wakeup_new, or being switched out while still runnable, i.e. preempted) to the moment it
 * is switched in. In-kernel log2 histogram in usec per cgroup. The idle task is never timed.
 *
 * Cost, per event (this is what a host pays on every context switch):
 * - wakeup: one store in `enq`, a direct-mapped array (no hash lookup, no insert);
 * - switch: one lookup in the per-cgroup counters of the task going out (on-CPU time, switches,
 *   preemptions and its histogram in one per-CPU value) and one array slot of the task coming
 *   in (and of a preempted task going out, to stamp it).
 * `enq` has ENQ_SLOTS slots indexed by a hash of the task key; each holds the key it was stamped
 * for, so a slot taken by another task is never read as ours. Two tasks both waiting for a CPU
 * in the same slot at the same moment lose the older stamp: that wait goes unmeasured and is
 * counted as a drop (DROP_TASK_MAP). With far fewer runnable tasks than slots this is rare, and
 * it is the price of not paying a hash lookup on every wakeup and every switch.
 * Attribution without a per-task cgroup: a wakeup runs in the waker's context and a switch-in in
 * the previous task's, so the wait measured at a switch-in is parked in this CPU's state and
 * charged at the next switch-out on this CPU, which is that same task's (it is current then, so
 * bpf_get_current_cgroup_id() is its own cgroup).
 *
 * Maps: per-CPU maps for counters (no atomics, no cache-line bouncing). Nothing is sent to
 * userspace from here.
 */
#include "aios.h"

#ifndef TASK_REPORT_MAX
#define TASK_REPORT_MAX 0x100   /* tracefs prev_state of a preempted task ("R+"), 4.14+ */
#endif
/* RUNQ_WAKEUP_ONLY: time only wakeups (what perf sched timehist calls "sch delay"), not tasks
 * put back on the run queue by preemption. The default times both, as runqlat does. */
#ifdef RUNQ_WAKEUP_ONLY
#define TIME_PREEMPTED 0
#else
#define TIME_PREEMPTED 1
#endif

#ifndef TASK_REPORT_DEAD
#define TASK_REPORT_DEAD 0x30   /* tracefs prev_state bits "X" (EXIT_DEAD) | "Z" (EXIT_ZOMBIE) */
#endif

struct cpu_state {
    u64 in_ns;                  /* when the task now on this CPU was switched in */
    u64 task;                   /* that task's key, when its wait is parked below */
    u64 wait_ns;                /* the run-queue wait that ended at its switch-in */
};

/* Task key: the pid in tracepoint-format programs (the record has it), the task_struct pointer in
 * raw ones (no dereference). 0 is never a task we time (the idle task has pid 0, never woken). */
struct enq_slot {
    u64 task;                   /* whose stamp this is */
    u64 enq_ns;                 /* when it became runnable; 0 once it is switched in */
};
#define ENQ_SLOTS MAX_TASKS     /* a power of two */
BPF_ARRAY(enq, struct enq_slot, ENQ_SLOTS);

static __always_inline u32 enq_index(u64 task)
{
    /* Fibonacci hashing: task_struct pointers are slab objects a few KiB apart, pids are dense;
     * the top bits of the product spread both over the slots. */
    return (u32)((task * 0x9E3779B97F4A7C15ULL) >> 32) & (ENQ_SLOTS - 1);
}
/* Allocated per cgroup on first use: a pre-allocated per-CPU map of MAX_CGROUPS histograms would
 * hold MAX_CGROUPS x CPUs x 280 bytes whether or not those cgroups exist. */
BPF_F_TABLE("percpu_hash", u64, struct sched_stats, sched_stats, MAX_CGROUPS, BPF_F_NO_PREALLOC);
BPF_PERCPU_ARRAY(cpu_state, struct cpu_state, 1);
AIOS_DROPS_DECL;

static __always_inline void count_drop(int kind)
{
    u64 *d = drops.lookup(&kind);
    if (d)
        (*d)++;
}

static __always_inline void stamp(u64 task, u64 now)
{
    u32 i = enq_index(task);
    struct enq_slot *e = enq.lookup(&i);
    if (!e)
        return;
    if (e->task != task) {
        if (!now)
            return;             /* nothing of ours to void */
        if (e->enq_ns)
            count_drop(DROP_TASK_MAP);  /* another task's wait, not measured now */
        e->task = task;
    }
    e->enq_ns = now;
}

static __always_inline int on_wakeup(u64 task)
{
    if (task != 0)
        stamp(task, bpf_ktime_get_ns());
    return 0;
}

static __always_inline int on_switch(u64 prev, u64 next, int runnable, int dead)
{
    u64 now = bpf_ktime_get_ns();
    int zero = 0;
    struct cpu_state *cs = cpu_state.lookup(&zero);
    if (!cs)
        return 0;

    if (prev != 0) {
        u64 cgroup_id = bpf_get_current_cgroup_id();
        struct sched_stats *s = sched_stats.lookup(&cgroup_id);
        if (!s) {
            struct sched_stats init = {};
            sched_stats.update(&cgroup_id, &init);
            s = sched_stats.lookup(&cgroup_id);
        }
        if (s) {
            if (cs->in_ns)
                s->oncpu_ns += now - cs->in_ns;
            s->switches++;
            if (runnable)
                s->preempt++;
            if (cs->task == prev) {
                u64 slot = hist_slot(cs->wait_ns / 1000);
                if (slot < HIST_SLOTS)  /* always: for the verifier */
                    s->runq[slot]++;
            }
        } else {
            count_drop(DROP_STATS_MAP);
        }
        cs->task = 0;
        if (dead)
            stamp(prev, 0);     /* its last switch-out: forget it (its key may be reused) */
        else if (runnable)
            /* Timed from now if it is still runnable (else from its next wakeup). Stamping it
             * also voids a wakeup that came while it was running (perf sched does the same). */
            stamp(prev, TIME_PREEMPTED ? now : 0);
    }
    cs->in_ns = now;

    if (next == 0)
        return 0;
    u32 i = enq_index(next);
    struct enq_slot *e = enq.lookup(&i);
    if (!e || e->task != next || e->enq_ns == 0)
        return 0;
    cs->task = next;
    cs->wait_ns = now - e->enq_ns;
    e->enq_ns = 0;
    return 0;
}

#ifdef AIOS_RAW_TP
/* Raw tracepoints: ctx->args[] are the tracepoint's TP_PROTO, which the loader checks against the
 * running kernel's BTF (btf_trace_<name>):
 *   sched_wakeup, sched_wakeup_new: (struct task_struct *p)
 *   sched_switch (5.18+): (bool preempt, struct task_struct *prev, struct task_struct *next,
 *                          unsigned int prev_state)   prev_state is prev->__state, raw.
 * Nothing is dereferenced: a task is keyed by its task_struct pointer value, so these programs are
 * right whether or not the kernel headers describe this kernel. The idle task is never timed: at
 * switch-out it is current with pid 0; it is never woken, so it is never in `enq` to switch in.
 * A dead task's entry is deleted at its last switch-out, before its task_struct can be reused. */
#define RAW_TASK_RUNNING 0x0000
#define RAW_TASK_DEAD 0x0080    /* include/linux/sched.h, unchanged since 4.14 */

RAW_TRACEPOINT_PROBE(sched_wakeup)
{
    return on_wakeup(ctx->args[0]);
}

RAW_TRACEPOINT_PROBE(sched_wakeup_new)
{
    return on_wakeup(ctx->args[0]);
}

RAW_TRACEPOINT_PROBE(sched_switch)
{
    unsigned int prev_state = (unsigned int)ctx->args[3];
    u64 prev = bpf_get_current_pid_tgid() == 0 ? 0 : ctx->args[1];
    return on_switch(prev, ctx->args[2], (ctx->args[0] & 0xff) || prev_state == RAW_TASK_RUNNING,
                     (prev_state & RAW_TASK_DEAD) != 0);
}
#else
TRACEPOINT_PROBE(sched, sched_wakeup)
{
    on_wakeup(args->pid);
    return TP_PASS;
}

TRACEPOINT_PROBE(sched, sched_wakeup_new)
{
    on_wakeup(args->pid);
    return TP_PASS;
}

/* prev_state here is the reported state: 0 for a task that stayed TASK_RUNNING ("R") and
 * TASK_REPORT_MAX for a preempted one ("R+"); both were left on the run queue. */
TRACEPOINT_PROBE(sched, sched_switch)
{
    long state = args->prev_state;
    on_switch(args->prev_pid, args->next_pid, (state & (TASK_REPORT_MAX - 1)) == 0,
              (state & TASK_REPORT_DEAD) != 0);
    return TP_PASS;
}
#endif
