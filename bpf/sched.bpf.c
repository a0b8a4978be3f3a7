/* sched.bpf.c - run-queue latency, preemptions and on-CPU time per cgroup.
 *
 * One probe because all three live on sched_switch, the hottest tracepoint there is: a second
 * program there would pay the dispatch and the per-task lookup again.
 *
 * Run-queue latency is runqlat's: from the moment a task becomes runnable (sched_wakeup,
 * sched_wakeup_new, or being switched out while still runnable, i.e. preempted) to the moment it
 * is switched in. In-kernel log2 histogram in usec per (cgroup, slot). The idle task (pid 0) is
 * never timed.
 *
 * Attribution: a wakeup runs in the waker's context and the switch-in in the previous task's, so
 * the cgroup of the task being timed is remembered in `tasks` whenever that task switches out
 * (where current == prev, so bpf_get_current_cgroup_id() is its own), and read at its switch-in.
 * A task forked while we run inherits its parent's cgroup at sched_wakeup_new (which runs in the
 * parent). A task we have not seen switch out yet is charged to cgroup id 0 ("unknown").
 *
 * Maps: per-CPU maps for counters (no atomics, no cache-line bouncing); `tasks` is written in
 * place. Nothing is sent to userspace from here.
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

struct task_state {
    u64 enq_ns;                 /* when it became runnable; 0 while it runs or sleeps */
    u64 cgroup_id;              /* its cgroup, as of its last switch-out */
};

/* Task key: the pid in tracepoint-format programs (the record has it), the task_struct pointer in
 * raw ones (no dereference). 0 is never a task we time (the idle task has pid 0). */
BPF_TABLE("hash", u64, struct task_state, tasks, MAX_TASKS);
BPF_TABLE("percpu_hash", u64, struct sched_stats, sched_stats, MAX_CGROUPS);
BPF_TABLE("percpu_hash", struct hist_key, u64, runq_hist, MAX_HIST);
BPF_PERCPU_ARRAY(cpu_in_ns, u64, 1);    /* when the task now on this CPU was switched in */
AIOS_DROPS_DECL;

static __always_inline void count_drop(int kind)
{
    u64 *d = drops.lookup(&kind);
    if (d)
        (*d)++;
}

static __always_inline int on_wakeup(u64 pid, u64 cgroup_id)
{
    if (pid == 0)
        return 0;
    u64 now = bpf_ktime_get_ns();
    struct task_state *t = tasks.lookup(&pid);
    if (t) {
        t->enq_ns = now;
        if (cgroup_id)
            t->cgroup_id = cgroup_id;
        return 0;
    }
    struct task_state fresh = {.enq_ns = now, .cgroup_id = cgroup_id};
    if (tasks.update(&pid, &fresh) != 0)
        count_drop(DROP_TASK_MAP);
    return 0;
}

static __always_inline int on_switch(u64 prev, u64 next, int runnable, int dead)
{
    u64 now = bpf_ktime_get_ns();
    int zero = 0;
    u64 *in_ns = cpu_in_ns.lookup(&zero);
    if (!in_ns)
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
            if (*in_ns)
                s->oncpu_ns += now - *in_ns;
            s->switches++;
            if (runnable)
                s->preempt++;
        } else {
            count_drop(DROP_STATS_MAP);
        }
        if (dead) {
            /* its last switch-out: forget it (its pid may be reused) */
            tasks.delete(&prev);
        } else {
            /* A switched-out task is timed from now if it is still runnable, else from its next
             * wakeup; a wakeup that came while it was running is void (perf sched does the same). */
            struct task_state *t = tasks.lookup(&prev);
            if (t) {
                t->cgroup_id = cgroup_id;
                t->enq_ns = runnable && TIME_PREEMPTED ? now : 0;
            } else {
                struct task_state fresh = {.enq_ns = runnable && TIME_PREEMPTED ? now : 0, .cgroup_id = cgroup_id};
                if (tasks.update(&prev, &fresh) != 0)
                    count_drop(DROP_TASK_MAP);
            }
        }
    }
    *in_ns = now;

    if (next == 0)
        return 0;
    struct task_state *t = tasks.lookup(&next);
    if (!t || t->enq_ns == 0)
        return 0;
    u64 usec = (now - t->enq_ns) / 1000;
    t->enq_ns = 0;
    struct hist_key key = {.cgroup_id = t->cgroup_id, .slot = hist_slot(usec)};
    u64 *count = runq_hist.lookup(&key);
    if (count) {
        (*count)++;
    } else {
        u64 one = 1;
        if (runq_hist.update(&key, &one) != 0)
            count_drop(DROP_STATS_MAP);
    }
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
 * switch-out it is current with pid 0; it is never woken, so it is never in `tasks` to switch in.
 * A dead task's entry is deleted at its last switch-out, before its task_struct can be reused. */
#define RAW_TASK_RUNNING 0x0000
#define RAW_TASK_DEAD 0x0080    /* include/linux/sched.h, unchanged since 4.14 */

RAW_TRACEPOINT_PROBE(sched_wakeup)
{
    return on_wakeup(ctx->args[0], 0);
}

RAW_TRACEPOINT_PROBE(sched_wakeup_new)
{
    return on_wakeup(ctx->args[0], bpf_get_current_cgroup_id());
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
    on_wakeup(args->pid, 0);
    return TP_PASS;
}

TRACEPOINT_PROBE(sched, sched_wakeup_new)
{
    on_wakeup(args->pid, bpf_get_current_cgroup_id());
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
