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
 *
 * With -DTASK_RUN_DELAY_OFF (raw programs; the offset of task_struct.sched_info.run_delay from
 * the running kernel's BTF) the wait is not timed here at all: the scheduler already sums every
 * wait of a task on a run queue into sched_info.run_delay (CONFIG_SCHED_INFO: from enqueue,
 * wakeup or preemption alike, to sched_info_arrive at its switch-in, across migrations), so at a
 * task's switch-out, where it is current, run_delay minus its value at the task's previous
 * switch-out is the one wait that preceded this run. That value lives in task-local storage
 * (freed with the task), so only sched_switch is attached: no wakeup programs, no shared
 * per-task hash. A task seen for the first time gives no sample (its last wait began before us).
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
#ifndef TASK_RUN_DELAY_OFF
BPF_TABLE("hash", u64, struct task_state, tasks, MAX_TASKS);
#endif
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

/* The cgroup's per-CPU counters, created on first use. */
static __always_inline struct sched_stats *stats_of(u64 cgroup_id)
{
    struct sched_stats *s = sched_stats.lookup(&cgroup_id);
    if (s)
        return s;
    struct sched_stats init = {};
    sched_stats.update(&cgroup_id, &init);
    s = sched_stats.lookup(&cgroup_id);
    if (!s)
        count_drop(DROP_STATS_MAP);
    return s;
}

static __always_inline void hist_add(u64 cgroup_id, u64 usec)
{
    struct hist_key key = {.cgroup_id = cgroup_id, .slot = hist_slot(usec)};
    u64 *count = runq_hist.lookup(&key);
    if (count) {
        (*count)++;
    } else {
        u64 one = 1;
        if (runq_hist.update(&key, &one) != 0)
            count_drop(DROP_STATS_MAP);
    }
}

#ifndef TASK_RUN_DELAY_OFF
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
        struct sched_stats *s = stats_of(cgroup_id);
        if (s) {
            if (*in_ns)
                s->oncpu_ns += now - *in_ns;
            s->switches++;
            if (runnable)
                s->preempt++;
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
    hist_add(t->cgroup_id, usec);
    return 0;
}
#endif /* !TASK_RUN_DELAY_OFF */

#ifdef AIOS_RAW_TP
/* Raw tracepoints: ctx->args[] are the tracepoint's TP_PROTO, which the loader checks against the
 * running kernel's BTF (btf_trace_<name>):
 *   sched_wakeup, sched_wakeup_new: (struct task_struct *p)
 *   sched_switch (5.18+): (bool preempt, struct task_struct *prev, struct task_struct *next,
 *                          unsigned int prev_state)   prev_state is prev->__state, raw.
 * Nothing is dereferenced through the headers: a task is keyed by its task_struct pointer value,
 * or (TASK_RUN_DELAY_OFF) read at an offset from the kernel's BTF, so these programs are right
 * whether or not the kernel headers describe this kernel. The idle task is never timed: at
 * switch-out it is current with pid 0; it is never woken, so it is never in `tasks` to switch in.
 * A dead task's entry is deleted at its last switch-out, before its task_struct can be reused. */
#define RAW_TASK_RUNNING 0x0000
#define RAW_TASK_DEAD 0x0080    /* include/linux/sched.h, unchanged since 4.14 */

static __always_inline int raw_runnable(struct bpf_raw_tracepoint_args *ctx)
{
    return (ctx->args[0] & 0xff) || (unsigned int)ctx->args[3] == RAW_TASK_RUNNING;
}

#ifdef TASK_RUN_DELAY_OFF
struct task_runq {
    u64 run_delay;      /* its sched_info.run_delay at its last switch-out */
    u32 seen;           /* run_delay above was read */
    u32 preempted;      /* it left the CPU runnable: its next wait is a preemption's */
};
BPF_TASK_STORAGE(task_runq, struct task_runq);

RAW_TRACEPOINT_PROBE(sched_switch)
{
    u64 now = bpf_ktime_get_ns();
    int zero = 0;
    u64 *in_ns = cpu_in_ns.lookup(&zero);
    if (!in_ns)
        return 0;
    u64 since = *in_ns;
    *in_ns = now;
    if (bpf_get_current_pid_tgid() == 0)
        return 0;               /* the idle task */
    int runnable = raw_runnable(ctx);
    u64 cgroup_id = bpf_get_current_cgroup_id();
    struct sched_stats *s = stats_of(cgroup_id);
    if (s) {
        if (since)
            s->oncpu_ns += now - since;
        s->switches++;
        if (runnable)
            s->preempt++;
    }
    struct task_struct *task = bpf_get_current_task_btf();
    struct task_runq *t = task_runq.task_storage_get(task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
    if (!t) {
        count_drop(DROP_TASK_MAP);
        return 0;
    }
    u64 run_delay = 0;
    bpf_probe_read_kernel(&run_delay, sizeof(run_delay), (void *)task + TASK_RUN_DELAY_OFF);
    if (t->seen && (TIME_PREEMPTED || !t->preempted))
        hist_add(cgroup_id, (run_delay - t->run_delay) / 1000);
    t->run_delay = run_delay;
    t->seen = 1;
    t->preempted = runnable;
    return 0;
}
#else
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
    u64 prev = bpf_get_current_pid_tgid() == 0 ? 0 : ctx->args[1];
    return on_switch(prev, ctx->args[2], raw_runnable(ctx),
                     ((unsigned int)ctx->args[3] & RAW_TASK_DEAD) != 0);
}
#endif /* TASK_RUN_DELAY_OFF */
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
