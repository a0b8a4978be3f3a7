/* proc.bpf.c - process exec and exit, with the exit code or the killing signal (for the
 * supervisor). Events, one per exec and one per process exit.
 *
 * The exit is reported once per process: when its last thread exits (sched_process_exit's
 * group_dead, 6.16+, -DEXIT_HAS_GROUP_DEAD) or, on kernels without that field, when the
 * thread-group leader exits.
 *
 * Where the status comes from:
 * - task_struct.exit_code of the exiting task, as the kernel will report it to wait(2)
 *   (exitsnoop's method), at the offset the running kernel's BTF gives (-DTASK_EXIT_CODE_OFF, any
 *   attach method), or through the headers in raw programs when they match the kernel;
 * - only where neither is possible (no BTF and headers for another kernel), a join of
 *   tracepoints keyed by thread-group id. It enables syscall tracepoints, which put every
 *   syscall of every task on the slow path, so it is never the default where BTF exists:
 *   syscalls:sys_enter_exit_group(error_code): the status of the whole group; the first one wins,
 *     as in do_group_exit();
 *   syscalls:sys_enter_exit(error_code) by the group leader: its status unless a group exit or a
 *     fatal signal comes later (wait(2) reports the leader's exit_code then);
 *   signal:signal_deliver with the default action (sa_handler == SIG_DFL) of a signal whose
 *     default is to terminate: death by that signal. A signal that complete_signal() already
 *     found fatal is delivered through get_signal()'s group-exit fast path, which always reports
 *     SIGKILL; the real signal is the one signal:signal_generate saw queued for that task, so it
 *     is remembered there (sender's context, target pid) and read back at delivery;
 *   sched:sched_process_exec clears what exec's de_thread() left (it kills the other threads
 *     with that same SIGKILL fast path).
 */
#include "aios.h"

#ifndef SIGKILL
#define SIGKILL 9
#endif
/* Signals 1-31 whose default action is to terminate (with or without a core dump), signal(7):
 * all but SIGCHLD 17, SIGCONT 18, SIGSTOP 19, SIGTSTP 20, SIGTTIN 21, SIGTTOU 22, SIGURG 23,
 * SIGWINCH 28. Real-time signals (32+) terminate by default too. */
#define FATAL_SIGNALS_MASK 0xEF01FFFEULL

struct exit_info {
    s32 exit_code;
    s32 signal;
    u32 how;
    u32 _pad;
};

#if defined(TASK_EXIT_CODE_OFF) || defined(AIOS_RAW_TP)
#define EXIT_FROM_TASK 1        /* the status is read from task_struct.exit_code */
#else
BPF_TABLE("hash", u32, struct exit_info, exit_info, MAX_TASKS);
BPF_TABLE("lru_hash", u32, s32, pending_signal, 4096);
#endif
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

TRACEPOINT_PROBE(sched, sched_process_exec)
{
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
#ifndef EXIT_FROM_TASK
    exit_info.delete(&tgid);
#endif
    struct exec_event ev = {};
    fill_hdr(&ev.h, EVENT_EXEC, bpf_get_current_cgroup_id());
    ev.old_pid = args->old_pid;
    TP_DATA_LOC_READ_STR(ev.filename, filename, sizeof(ev.filename));
    send_event(args, &ev, sizeof(ev));
    return TP_PASS;
}

/* The exit status is task_struct.exit_code of the exiting task (current), as the kernel will report
 * it to wait(2) (exitsnoop's method). Its offset is the running kernel's own, from its BTF
 * (-DTASK_EXIT_CODE_OFF, loader.py), or the headers' when they match the kernel (AIOS_RAW_TP
 * without TASK_EXIT_CODE_OFF). */
#ifdef EXIT_FROM_TASK
#if !defined(TASK_EXIT_CODE_OFF)
#include <linux/sched.h>
#endif

static __always_inline int task_exit_code(void)
{
    int code = 0;
#ifdef TASK_EXIT_CODE_OFF
    bpf_probe_read_kernel(&code, sizeof(code), (void *)bpf_get_current_task() + TASK_EXIT_CODE_OFF);
#else
    struct task_struct *p = (struct task_struct *)bpf_get_current_task();
    code = p->exit_code;
#endif
    return code;
}

static __always_inline void send_exit(void *ctx)
{
    int code = task_exit_code();
    struct exit_event ev = {};
    fill_hdr(&ev.h, EVENT_EXIT, bpf_get_current_cgroup_id());
    ev.exit_code = (code >> 8) & 0xff;
    ev.signal = code & 0x7f;
    ev.core_dumped = (code & 0x80) != 0;
    ev.how = EXIT_HOW_TASK;
    send_event(ctx, &ev, sizeof(ev));
}
#endif

#ifdef AIOS_RAW_TP
/* ctx->args: (struct task_struct *p) before 6.16, (struct task_struct *p, bool group_dead) since;
 * p is current. */
RAW_TRACEPOINT_PROBE(sched_process_exit)
{
#ifdef EXIT_HAS_GROUP_DEAD
    if (!(ctx->args[1] & 0xff))
        return 0;
#else
    u64 pid_tgid = bpf_get_current_pid_tgid();
    if ((u32)pid_tgid != (u32)(pid_tgid >> 32))
        return 0;
#endif
    send_exit(ctx);
    return 0;
}

#elif defined(EXIT_FROM_TASK) /* tracepoint-format program, exit_code at its BTF offset */

TRACEPOINT_PROBE(sched, sched_process_exit)
{
#ifdef EXIT_HAS_GROUP_DEAD
    if (!args->group_dead)
        return TP_PASS;
#else
    u64 pid_tgid = bpf_get_current_pid_tgid();
    if ((u32)pid_tgid != (u32)(pid_tgid >> 32))
        return TP_PASS;
#endif
    send_exit(args);
    return TP_PASS;
}

#else /* no way to read task_struct here: join syscalls and signals (see the top) */

static __always_inline int fatal_by_default(int sig)
{
    if (sig <= 0)
        return 0;
    if (sig >= 32)
        return 1;
    return (FATAL_SIGNALS_MASK >> sig) & 1;
}

static __always_inline void record(u32 tgid, s32 code, s32 sig, u32 how)
{
    struct exit_info *cur = exit_info.lookup(&tgid);
    if (cur) {
        if (cur->how == EXIT_HOW_GROUP || cur->how == EXIT_HOW_SIGNAL)
            return;     /* the group's fate is sealed: do_group_exit() keeps the first code */
        cur->exit_code = code;
        cur->signal = sig;
        cur->how = how;
        return;
    }
    struct exit_info fresh = {.exit_code = code, .signal = sig, .how = how};
    if (exit_info.update(&tgid, &fresh) != 0)
        count_drop(DROP_TASK_MAP);
}

TRACEPOINT_PROBE(syscalls, sys_enter_exit_group)
{
    record(bpf_get_current_pid_tgid() >> 32, args->error_code & 0xff, 0, EXIT_HOW_GROUP);
    return TP_PASS;
}

TRACEPOINT_PROBE(syscalls, sys_enter_exit)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 tgid = pid_tgid >> 32;
    if ((u32)pid_tgid == tgid)
        record(tgid, args->error_code & 0xff, 0, EXIT_HOW_LEADER);
    return TP_PASS;
}

TRACEPOINT_PROBE(signal, signal_generate)
{
    /* result 0 is TRACE_SIGNAL_DELIVERED: queued (not ignored, not already pending) */
    if (args->result != 0 || !fatal_by_default(args->sig))
        return TP_PASS;
    u32 pid = args->pid;
    s32 sig = args->sig;
    pending_signal.update(&pid, &sig);
    return TP_PASS;
}

TRACEPOINT_PROBE(signal, signal_deliver)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 tgid = pid_tgid >> 32;
    u32 tid = (u32)pid_tgid;
    int sig = args->sig;
    if (args->sa_handler != 0) {
        /* caught (or SIG_IGN): not fatal, and no longer pending */
        pending_signal.delete(&tid);
        pending_signal.delete(&tgid);
        return TP_PASS;
    }
    if (!fatal_by_default(sig))
        return TP_PASS;
    if (sig == SIGKILL) {
        s32 *queued = pending_signal.lookup(&tid);
        if (!queued)
            queued = pending_signal.lookup(&tgid);
        if (queued)
            sig = *queued;
    }
    record(tgid, 0, sig, EXIT_HOW_SIGNAL);
    return TP_PASS;
}

TRACEPOINT_PROBE(sched, sched_process_exit)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 tgid = pid_tgid >> 32;
    u32 tid = (u32)pid_tgid;
#ifdef EXIT_HAS_GROUP_DEAD
    if (!args->group_dead)
        return TP_PASS;
#else
    if (tid != tgid)
        return TP_PASS;
#endif
    struct exit_event ev = {};
    fill_hdr(&ev.h, EVENT_EXIT, bpf_get_current_cgroup_id());
    struct exit_info *info = exit_info.lookup(&tgid);
    if (info) {
        ev.exit_code = info->exit_code;
        ev.signal = info->signal;
        ev.how = info->how;
        exit_info.delete(&tgid);
    }
    pending_signal.delete(&tid);
    pending_signal.delete(&tgid);
    send_event(args, &ev, sizeof(ev));
    return TP_PASS;
}
#endif
