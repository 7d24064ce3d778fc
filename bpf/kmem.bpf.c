// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Outstanding kernel allocations per kernel call stack (`leak-record --kernel`).
 *
 * BTF tracepoints (tp_btf: no tracefs, no kprobes) on the kmem events record slab objects, pages
 * and per-CPU chunks with the kernel stack of the allocation, and retire them on the matching
 * free, whatever task frees them (RCU callbacks, workers). Allocations can be kept to one process
 * (`target_tgid`) or command name (`target_comm`): only the allocating context is filtered.
 * Counters are aggregated per stack in the kernel, and every event that cannot be recorded is
 * counted in `counters` (see leak.h). A separate object from leak.bpf.c, so user mode never loads
 * these programs.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "leak.h"
#define STATS_FIRST_KIND KERNEL_FIRST_KIND
#define STATS_KINDS KERNEL_KINDS
#include "common.bpf.h"

/* Set by the recorder before load. */
const volatile __u32 target_tgid = 0; /* 0: every task */
const volatile bool filter_comm = false;
const volatile char target_comm[COMM_LEN] = {};
const volatile bool filter_cache = false; /* only kmem_cache_alloc from target_cache */
const volatile char target_cache[CACHE_NAME_LEN] = {};
const volatile __u64 page_size = 4096;
const volatile __u64 min_size = 0;
const volatile __u64 max_size = ~0ULL;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 20); /* --max-allocs */
	__type(key, struct kalloc_key);
	__type(value, struct alloc_info);
} kallocs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 14); /* --max-stacks */
	__type(key, struct stack_trace);
	__type(value, __u32);
} stack_ids SEC(".maps");

/*
 * The scratch traces of stack walks (and sampling countdowns), per CPU and per nesting level. A
 * tracepoint runs with preemption off but interrupts on, and kernel memory is allocated in task,
 * softirq and hardirq context: a softirq's allocation can run its program on this CPU while a
 * task's program is between taking its stack and looking it up. With one trace per CPU, the
 * task's allocation would then be put on the softirq's stack. Each level of nesting takes the
 * next trace.
 */
#define SCRATCH_LEVELS 4
_Static_assert((SCRATCH_LEVELS & (SCRATCH_LEVELS - 1)) == 0, "the level is masked");
struct scratch {
	__u32 depth; /* walks in progress on this CPU */
	__u32 pad;
	/* --sample-bytes: bytes until the next sample, per level (take_sample). Per level for the
	 * same reason as the traces: an interrupt's allocation must not change the countdown of
	 * the program it interrupted between reading and writing it. */
	__u64 sample_left[SCRATCH_LEVELS];
	struct stack_trace traces[SCRATCH_LEVELS];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch SEC(".maps");

/* Whether an allocation made in the current context is wanted. */
static __always_inline bool wanted(void)
{
	if (target_tgid && (bpf_get_current_pid_tgid() >> 32) != target_tgid)
		return false;
	if (filter_comm) {
		char comm[COMM_LEN];

		bpf_get_current_comm(comm, sizeof(comm));
		for (int i = 0; i < COMM_LEN; i++) {
			if (comm[i] != target_comm[i])
				return false;
			if (!comm[i])
				break;
		}
	}
	return true;
}

/* The id of the kernel stack taken into `trace`; a placeholder id when it cannot be had. */
static __always_inline __u32 stack_id_in(void *ctx, struct stack_trace *trace)
{
	__u32 id;
	__u32 *known;
	long n, err;

	/* Zero-fills the rest of the buffer, so the whole trace is a stable key. */
	n = bpf_get_stack(ctx, trace->ips, sizeof(trace->ips), 0);
	if (n <= 0)
		return n < 0 ? STACK_LOST_WALK_FAILED : STACK_LOST_EMPTY;
	known = bpf_map_lookup_elem(&stack_ids, trace);
	if (known)
		return *known;
	id = new_stack_id();
	if (!id)
		return STACK_LOST_TABLE_FULL;
	err = bpf_map_update_elem(&stack_ids, trace, &id, BPF_NOEXIST);
	/* The table's lock is busy (table_full): the stack cannot be had now. Counted as a failed
	 * walk rather than as a full table, which would call for a larger --max-stacks. */
	if (err && err != -EEXIST && !table_full(err))
		return STACK_LOST_WALK_FAILED;
	if (err == -EEXIST) {
		/* Another CPU inserted the same stack first; use its id. */
		known = bpf_map_lookup_elem(&stack_ids, trace);
		if (known)
			return *known;
	}
	return err ? STACK_LOST_TABLE_FULL : id;
}

/* What current_stack_id returns for an allocation --sample-bytes leaves out (no id is 0). */
#define NOT_SAMPLED 0

/* The id of the kernel stack of an allocation of `size` bytes; NOT_SAMPLED when --sample-bytes
 * leaves it out (then nothing is walked); a placeholder id when it cannot be had (counted by the
 * caller once the allocation is recorded on it). */
static __always_inline __u32 current_stack_id(void *ctx, __u64 size)
{
	__u32 zero = 0, level, id;
	struct scratch *s = bpf_map_lookup_elem(&scratch, &zero);

	if (!s)
		return STACK_LOST_WALK_FAILED;
	/* Not atomic, and need not be: a tracepoint runs with preemption off (the tracepoint
	 * call disables it), so whatever interrupts this program on this CPU runs to its end, and
	 * restores `depth`, before this program goes on. */
	level = s->depth++;
	if (level >= SCRATCH_LEVELS) {
		s->depth--;
		/* Nested deeper than any countdown: a gap of its own decides (as likely for this
		 * one block, up to the gap table's resolution). */
		if (sample_bytes && (size ? size : 1) < draw_gap())
			return NOT_SAMPLED;
		return STACK_LOST_WALK_FAILED;
	}
	level &= SCRATCH_LEVELS - 1;
	if (sample_bytes && !take_sample(&s->sample_left[level], size))
		id = NOT_SAMPLED;
	else
		id = stack_id_in(ctx, &s->traces[level]);
	s->depth--;
	return id;
}

/* Whether a slab cache is the one `--cache` asked for. */
static __always_inline bool cache_wanted(struct kmem_cache *s)
{
	char name[CACHE_NAME_LEN];

	if (bpf_probe_read_kernel_str(name, sizeof(name), BPF_CORE_READ(s, name)) < 0)
		return false;
	for (int i = 0; i < CACHE_NAME_LEN; i++) {
		if (name[i] != target_cache[i])
			return false;
		if (!name[i])
			break;
	}
	return true;
}

/* Records a new kernel allocation on the current stack. */
static __always_inline int on_alloc(void *ctx, __u64 addr, __u64 size, __u32 kind)
{
	struct kalloc_key k = { .addr = addr, .kind = kind };
	struct stats_key key = { .kind = kind };
	struct alloc_info info = {};
	struct stack_stats *s;
	long err;

	if (!addr || size < min_size || size > max_size || !wanted())
		return 0;
	/* An object still tracked at this address had its free missed (a free path without a
	 * tracepoint): counted, and retired as freed. Also when this one is not sampled. */
	switch (retire_block(&kallocs, &k, 0)) {
	case 1:
		count(C_MISSED_FREE, 1);
		break;
	case -1:
		/* Still tracked (its lock busy): not replaced, or its bytes would stay outstanding
		 * with no record left to retire them. */
		count(C_ALLOC_BUSY, 1);
		return 0;
	}
	key.stack_id = current_stack_id(ctx, size);
	if (key.stack_id == NOT_SAMPLED)
		return 0; /* no stack walk, no table insert: the point of sampling */
	s = stack_counters(&key);
	if (!s)
		return 0;
	info.size = size; /* ts stays 0: nothing here reads it */
	info.key = key;
	err = bpf_map_update_elem(&kallocs, &k, &info, BPF_ANY);
	if (err && !table_full(err)) {
		count(C_ALLOC_BUSY, 1);
		return 0;
	}
	if (err) {
		count(C_ALLOCS_FULL, 1);
		count(C_ALLOCS_FULL_BYTES, size);
		return 0;
	}
	account_block_alloc(s, key.stack_id, kind, size);
	return 0;
}

/* Retires a tracked kernel allocation, whoever frees it. */
static __always_inline int on_free(__u64 addr, __u32 kind)
{
	struct kalloc_key k = { .addr = addr, .kind = kind };

	/* Not tracked: not allocated while recording, by a task the filters leave out, or not
	 * sampled. */
	if (addr && retire_block(&kallocs, &k, 0) == 0)
		unknown_free();
	return 0;
}

/* Arguments are read by position from the context (tp_btf passes the tracepoint's arguments as
 * an array of u64); CO-RE checks pick the positions of the running kernel's prototype. */

SEC("tp_btf/kmalloc")
int BPF_PROG(kmalloc, unsigned long call_site, const void *ptr, size_t bytes_req,
	     size_t bytes_alloc)
{
	/* The tracepoint does not say which kmalloc cache served it. */
	if (filter_cache)
		return 0;
	/* Same positions since kmalloc and kmalloc_node were merged (6.1) and before. */
	return on_alloc(ctx, (__u64)ptr, bytes_alloc, KIND_KERNEL_SLAB);
}

SEC("tp_btf/kfree")
int BPF_PROG(kfree, unsigned long call_site, const void *ptr)
{
	return on_free((__u64)ptr, KIND_KERNEL_SLAB);
}

SEC("tp_btf/kmem_cache_alloc")
int BPF_PROG(kmem_cache_alloc)
{
	__u64 ptr = ctx[1], size;

	if (bpf_core_type_exists(struct trace_event_raw_kmem_cache_alloc)) {
		/* 6.1+: (call_site, ptr, struct kmem_cache *s, gfp_flags, node). */
		struct kmem_cache *s = (void *)ctx[2];

		if (filter_cache && !cache_wanted(s))
			return 0;
		size = BPF_CORE_READ(s, size);
	} else {
		/* Before: (call_site, ptr, bytes_req, bytes_alloc, gfp_flags[, node]); no cache. */
		if (filter_cache)
			return 0;
		size = ctx[3];
	}
	return on_alloc(ctx, ptr, size, KIND_KERNEL_SLAB);
}

SEC("tp_btf/kmem_cache_free")
int BPF_PROG(kmem_cache_free, unsigned long call_site, const void *ptr)
{
	/* kfree() of a cache object fires kfree, kmem_cache_free() fires this: one kind. */
	return on_free((__u64)ptr, KIND_KERNEL_SLAB);
}

SEC("tp_btf/mm_page_alloc")
int BPF_PROG(mm_page_alloc, struct page *page, unsigned int order)
{
	return on_alloc(ctx, (__u64)page, page_size << order, KIND_KERNEL_PAGE);
}

SEC("tp_btf/mm_page_free")
int BPF_PROG(mm_page_free, struct page *page, unsigned int order)
{
	return on_free((__u64)page, KIND_KERNEL_PAGE);
}

/* One subprogram per prototype, so that each reads its arguments at constant offsets (inlined,
 * the compiler merges the branches' loads into one at a computed offset, which the verifier
 * refuses). */
static __noinline int percpu_alloc_6_3(__u64 *ctx)
{
	/* 6.3+: (call_site, reserved, is_atomic, size, align, base_addr, off, ptr, bytes_alloc,
	 * gfp_flags). */
	return on_alloc(ctx, ctx[7], ctx[8], KIND_KERNEL_PERCPU);
}

static __noinline int percpu_alloc_6_0(__u64 *ctx)
{
	/* (reserved, is_atomic, size, align, base_addr, off, ptr, bytes_alloc, gfp_flags). */
	return on_alloc(ctx, ctx[6], ctx[7], KIND_KERNEL_PERCPU);
}

static __noinline int percpu_alloc_old(__u64 *ctx)
{
	/* (reserved, is_atomic, size, align, base_addr, off, ptr): the requested size. */
	return on_alloc(ctx, ctx[6], ctx[2], KIND_KERNEL_PERCPU);
}

SEC("tp_btf/percpu_alloc_percpu")
int BPF_PROG(percpu_alloc_percpu)
{
	if (bpf_core_field_exists(struct trace_event_raw_percpu_alloc_percpu, call_site))
		return percpu_alloc_6_3(ctx);
	if (bpf_core_field_exists(struct trace_event_raw_percpu_alloc_percpu, bytes_alloc))
		return percpu_alloc_6_0(ctx);
	return percpu_alloc_old(ctx);
}

SEC("tp_btf/percpu_free_percpu")
int BPF_PROG(percpu_free_percpu, void *base_addr, int off, void *ptr)
{
	return on_free((__u64)ptr, KIND_KERNEL_PERCPU);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
