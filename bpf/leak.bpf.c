// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Outstanding allocations per user call stack of one process.
 *
 * Entry probes remember an allocator call's arguments per thread; return probes record the block
 * with the stack taken there (every frame a return address, the caller's frame intact); free-side
 * probes retire blocks. Counters are aggregated per stack in the kernel, and every event that
 * cannot be recorded is counted in `counters` (see leak.h).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "leak.h"

#define EEXIST 17
#define MAP_ANONYMOUS 0x20
#define MAP_STACK 0x20000

/* Set by the recorder before load. */
const volatile __u32 target_tgid = 0;
const volatile __u64 min_size = 0;
const volatile __u64 max_size = ~0ULL;

/* Never used: they make the shared enums part of the BTF, hence of the Rust skeleton's types. */
enum leak_counter btf_leak_counter;
enum lost_stack btf_lost_stack;
enum alloc_kind btf_alloc_kind;

/* Next id for a new stack; ids below FIRST_STACK_ID are placeholders. */
__u32 next_stack_id = FIRST_STACK_ID;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 20); /* --max-allocs */
	__type(key, __u64);
	__type(value, struct alloc_info);
} allocs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 16);
	__type(key, __u32);
	__type(value, struct pending_call);
} pending_calls SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 14); /* --max-stacks */
	__type(key, struct stack_trace);
	__type(value, __u32);
} stack_ids SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, (1 << 14) + 16); /* --max-stacks + placeholders */
	__type(key, struct stats_key);
	__type(value, struct stack_stats);
} stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct stack_trace);
} scratch_traces SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NR_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline void count(__u32 which, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &which);

	if (v)
		*v += n;
}

static __always_inline bool is_target(void)
{
	return (bpf_get_current_pid_tgid() >> 32) == target_tgid;
}

/* Records an allocator call's arguments, or notes that it is nested in another one. */
static __always_inline int enter(struct pt_regs *ctx, __u64 size, __u64 old_ptr, __u64 memptr,
				 __u32 type)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u64 sp = PT_REGS_SP(ctx);
	struct pending_call *open;
	struct pending_call call = {};

	if (!is_target())
		return 0;
	open = bpf_map_lookup_elem(&pending_calls, &tid);
	if (open) {
		/* The stack grows down: a nested call runs below the open call's frame, or at it
		 * when the outer call tail-jumps into the inner one (glibc reallocarray -> realloc;
		 * both return probes then fire, innermost first). */
		if (sp <= open->sp) {
			open->depth++;
			count(C_NESTED, 1);
			return 0;
		}
		/* The open call's frame is gone: it never returned (exception, longjmp). A call
		 * abandoned and followed by one from the very same frame looks nested: rare. */
		count(C_ABANDONED, 1);
	}
	call.size = size;
	call.old_ptr = old_ptr;
	call.memptr = memptr;
	call.sp = sp;
	call.type = type;
	call.depth = 1;
	if (type == CALL_REALLOC && old_ptr) {
		struct alloc_info *old = bpf_map_lookup_elem(&allocs, &old_ptr);

		if (old)
			call.old_ts = old->ts;
		else
			count(C_UNKNOWN_FREE, 1);
	}
	if (bpf_map_update_elem(&pending_calls, &tid, &call, BPF_ANY))
		count(C_PENDING_FULL, 1);
	return 0;
}

static __always_inline void account_free(struct stats_key *key, __u64 bytes, __u64 blocks)
{
	struct stack_stats *s = bpf_map_lookup_elem(&stats, key);

	if (s) {
		__sync_fetch_and_add(&s->free_bytes, bytes);
		__sync_fetch_and_add(&s->free_count, blocks);
	}
}

/* Retires a tracked block. With `expect_ts` set, only if the record is still the one seen then. */
static __always_inline void release(__u64 ptr, __u64 expect_ts)
{
	struct alloc_info *a = bpf_map_lookup_elem(&allocs, &ptr);

	if (!a || (expect_ts && a->ts != expect_ts))
		return;
	account_free(&a->key, a->size, 1);
	bpf_map_delete_elem(&allocs, &ptr);
}

/* The id of the current user stack; a placeholder id when it cannot be had (counted by the
 * caller once the allocation is recorded on it). */
static __always_inline __u32 current_stack_id(struct pt_regs *ctx)
{
	__u32 zero = 0, id;
	struct stack_trace *trace = bpf_map_lookup_elem(&scratch_traces, &zero);
	__u32 *known;
	long n, err;

	if (!trace)
		return STACK_LOST_WALK_FAILED;
	/* Zero-fills the rest of the buffer, so the whole trace is a stable key. */
	n = bpf_get_stack(ctx, trace->ips, sizeof(trace->ips), BPF_F_USER_STACK);
	if (n <= 0)
		return n < 0 ? STACK_LOST_WALK_FAILED : STACK_LOST_EMPTY;
	known = bpf_map_lookup_elem(&stack_ids, trace);
	if (known)
		return *known;
	id = __sync_fetch_and_add(&next_stack_id, 1);
	err = bpf_map_update_elem(&stack_ids, trace, &id, BPF_NOEXIST);
	if (err == -EEXIST) {
		/* Another CPU inserted the same stack first; use its id. */
		known = bpf_map_lookup_elem(&stack_ids, trace);
		if (known)
			return *known;
	}
	return err ? STACK_LOST_TABLE_FULL : id;
}

/* Records a new block on the current stack. */
static __always_inline void record(struct pt_regs *ctx, __u64 ptr, __u64 size, __u32 kind)
{
	struct stats_key key = { .kind = kind };
	struct alloc_info info = {};
	struct alloc_info *stale;
	struct stack_stats *s;

	key.stack_id = current_stack_id(ctx);
	s = bpf_map_lookup_elem(&stats, &key);
	if (!s) {
		struct stack_stats zero = {};

		bpf_map_update_elem(&stats, &key, &zero, BPF_NOEXIST);
		s = bpf_map_lookup_elem(&stats, &key);
		if (!s) {
			/* Placeholders are created by the recorder before attaching. */
			key.stack_id = STACK_LOST_COUNTERS_FULL;
			s = bpf_map_lookup_elem(&stats, &key);
			if (!s)
				return;
		}
	}
	stale = bpf_map_lookup_elem(&allocs, &ptr);
	if (stale) {
		/* The allocator handed out a tracked address again: its free was missed. */
		count(C_MISSED_FREE, 1);
		account_free(&stale->key, stale->size, 1);
	}
	info.size = size;
	info.ts = bpf_ktime_get_ns();
	info.key = key;
	if (bpf_map_update_elem(&allocs, &ptr, &info, BPF_ANY)) {
		count(C_ALLOCS_FULL, 1);
		count(C_ALLOCS_FULL_BYTES, size);
		if (stale)
			bpf_map_delete_elem(&allocs, &ptr);
		return;
	}
	__sync_fetch_and_add(&s->alloc_bytes, size);
	__sync_fetch_and_add(&s->alloc_count, 1);
	switch (key.stack_id) {
	case STACK_LOST_TABLE_FULL:
		count(C_STACK_TABLE_FULL, 1);
		break;
	case STACK_LOST_WALK_FAILED:
	case STACK_LOST_EMPTY:
		count(C_STACK_WALK_FAILED, 1);
		break;
	case STACK_LOST_COUNTERS_FULL:
		count(C_COUNTERS_FULL, 1);
		break;
	}
}

/* The outermost allocator call on this thread returned `ret`. */
static __always_inline int leave(struct pt_regs *ctx, __u64 ret)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct pending_call *open;
	struct pending_call call;
	__u64 ptr = ret;
	__u32 kind = KIND_HEAP;

	if (!is_target())
		return 0;
	open = bpf_map_lookup_elem(&pending_calls, &tid);
	if (!open) {
		count(C_RET_WITHOUT_ENTRY, 1);
		return 0;
	}
	if (open->depth > 1) {
		open->depth--;
		return 0;
	}
	call = *open;
	bpf_map_delete_elem(&pending_calls, &tid);

	switch (call.type) {
	case CALL_IGNORE:
		return 0;
	case CALL_MEMPTR:
		if (ret != 0) /* failed posix_memalign: nothing was allocated */
			return 0;
		if (bpf_probe_read_user(&ptr, sizeof(ptr), (void *)call.memptr)) {
			count(C_READ_FAILED, 1);
			return 0;
		}
		break;
	case CALL_REALLOC:
		if (!ptr) {
			/* realloc(p, 0) freed p; any other failure leaves p allocated. */
			if (call.size == 0 && call.old_ts)
				release(call.old_ptr, call.old_ts);
			return 0;
		}
		if (call.old_ts)
			release(call.old_ptr, call.old_ts);
		break;
	case CALL_MMAP:
		if (ptr == ~0ULL) /* MAP_FAILED */
			return 0;
		kind = KIND_MMAP;
		break;
	}
	if (!ptr || call.size < min_size || call.size > max_size)
		return 0;
	record(ctx, ptr, call.size, kind);
	return 0;
}

SEC("uprobe")
int BPF_UPROBE(malloc_enter, size_t size)
{
	return enter(ctx, size, 0, 0, CALL_PLAIN);
}

SEC("uprobe")
int BPF_UPROBE(calloc_enter, size_t nmemb, size_t size)
{
	return enter(ctx, nmemb * size, 0, 0, CALL_PLAIN);
}

SEC("uprobe")
int BPF_UPROBE(memalign_enter, size_t alignment, size_t size)
{
	return enter(ctx, size, 0, 0, CALL_PLAIN);
}

SEC("uprobe")
int BPF_UPROBE(realloc_enter, void *ptr, size_t size)
{
	return enter(ctx, size, (__u64)ptr, 0, CALL_REALLOC);
}

SEC("uprobe")
int BPF_UPROBE(reallocarray_enter, void *ptr, size_t nmemb, size_t size)
{
	return enter(ctx, nmemb * size, (__u64)ptr, 0, CALL_REALLOC);
}

SEC("uprobe")
int BPF_UPROBE(posix_memalign_enter, void **memptr, size_t alignment, size_t size)
{
	return enter(ctx, size, 0, (__u64)memptr, CALL_MEMPTR);
}

SEC("uretprobe")
int BPF_URETPROBE(alloc_exit, void *ret)
{
	return leave(ctx, (__u64)ret);
}

SEC("uretprobe")
int BPF_URETPROBE(posix_memalign_exit, int ret)
{
	return leave(ctx, (__u64)(__s64)ret);
}

SEC("uprobe")
int BPF_UPROBE(free_enter, void *ptr)
{
	__u64 p = (__u64)ptr;
	struct alloc_info *a;

	if (!p || !is_target())
		return 0;
	a = bpf_map_lookup_elem(&allocs, &p);
	if (!a) {
		count(C_UNKNOWN_FREE, 1);
		return 0;
	}
	account_free(&a->key, a->size, 1);
	bpf_map_delete_elem(&allocs, &p);
	return 0;
}

SEC("uprobe")
int BPF_UPROBE(mmap_enter, void *addr, size_t len, int prot, int flags, int fd)
{
	/* Only anonymous memory is accounted; thread stacks and PROT_NONE reservations are
	 * address space, not memory in use. */
	bool accounted = (flags & MAP_ANONYMOUS) && !(flags & MAP_STACK) && prot != 0;

	return enter(ctx, len, 0, 0, accounted ? CALL_MMAP : CALL_IGNORE);
}

SEC("uprobe")
int BPF_UPROBE(munmap_enter, void *addr, size_t len)
{
	__u64 p = (__u64)addr;
	struct alloc_info *a;

	if (!is_target())
		return 0;
	a = bpf_map_lookup_elem(&allocs, &p);
	/* Unmaps of the allocator's own chunks are not ours to count. */
	if (!a || a->key.kind != KIND_MMAP)
		return 0;
	if (len >= a->size) {
		account_free(&a->key, a->size, 1);
		bpf_map_delete_elem(&allocs, &p);
	} else {
		/* The head of the mapping was unmapped: the rest stays, shorter. */
		struct alloc_info rest = *a;
		__u64 tail = p + len;

		account_free(&a->key, len, 0);
		rest.size -= len;
		bpf_map_delete_elem(&allocs, &p);
		if (bpf_map_update_elem(&allocs, &tail, &rest, BPF_ANY)) {
			count(C_ALLOCS_FULL, 1);
			count(C_ALLOCS_FULL_BYTES, rest.size);
		}
	}
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
