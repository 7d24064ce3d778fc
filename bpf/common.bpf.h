/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * What both BPF objects (leak.bpf.c, user mode; kmem.bpf.c, kernel mode) do the same way: the
 * per-stack counters and the loss counters, and putting an allocation on its stack's counters.
 * Each object includes this after leak.h (which stays the one header of the structs shared with
 * Rust) and has its own instance of these maps. Everything here is inlined.
 */
#ifndef LEAK_COMMON_BPF_H
#define LEAK_COMMON_BPF_H

#define EEXIST 17

/* Never used: they make the shared enums part of the BTF, hence of the Rust skeleton's types. */
enum leak_counter btf_leak_counter;
enum lost_stack btf_lost_stack;
enum alloc_kind btf_alloc_kind;

/* Next id for a new stack; ids below FIRST_STACK_ID are placeholders. */
__u32 next_stack_id = FIRST_STACK_ID;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, (1 << 14) + 16); /* --max-stacks + placeholders */
	__type(key, struct stats_key);
	__type(value, struct stack_stats);
} stats SEC(".maps");

/*
 * One bit per stack id (bit id % 64 of word id / 64), set once that stack's counters changed:
 * the recorder maps this array, takes (reads and clears) the bits at each snapshot and reads the
 * counters of those stacks only. Set after the counters, so a change is either seen by the read
 * that clears its bit or marked again. Stack id 0 is never used: its bit means a change to a
 * stack beyond the array was not marked, and the recorder then reads every counter. The
 * recorder sizes the array from --max-stacks; kernel mode does not read it (yet).
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, ((1 << 14) + FIRST_STACK_ID + 63) / 64);
	__type(key, __u32);
	__type(value, __u64);
} changed_stacks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NR_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline void count(__u32 which, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &which);

	/* Atomic although per CPU: a uprobe program can be preempted (full preemption) and a
	 * tracepoint's interrupted, and a plain increment would then lose the other's count.
	 * It costs a few ns, and only when something is counted. */
	if (v)
		__sync_fetch_and_add(v, n);
}

/* Marks stack `stack_id`'s counters as changed (after changing them). */
static __always_inline void mark_changed(__u32 stack_id)
{
	__u32 word = stack_id / 64;
	__u64 bit = 1ULL << (stack_id % 64);
	__u64 *w = bpf_map_lookup_elem(&changed_stacks, &word);

	if (!w) {
		word = 0;
		bit = 1; /* stack id 0: "read everything" */
		w = bpf_map_lookup_elem(&changed_stacks, &word);
		if (!w)
			return;
	}
	/* The common case, a stack already marked, writes nothing (the cache line stays shared). */
	if (!(*w & bit))
		__sync_fetch_and_or(w, bit);
}

static __always_inline void account_free(struct stats_key *key, __u64 bytes, __u64 blocks)
{
	struct stack_stats *s = bpf_map_lookup_elem(&stats, key);

	if (s) {
		__sync_fetch_and_add(&s->free_bytes, bytes);
		__sync_fetch_and_add(&s->free_count, blocks);
		mark_changed(key->stack_id);
	}
}

/* The counters of `key`, created on first use. When the table is full, those of the
 * STACK_LOST_COUNTERS_FULL placeholder (key->stack_id is changed to it); NULL if even that is
 * missing. */
static __always_inline struct stack_stats *stack_counters(struct stats_key *key)
{
	struct stack_stats *s = bpf_map_lookup_elem(&stats, key);

	if (!s) {
		struct stack_stats zero = {};

		bpf_map_update_elem(&stats, key, &zero, BPF_NOEXIST);
		s = bpf_map_lookup_elem(&stats, key);
		if (!s) {
			/* Placeholders are created by the recorder before attaching. */
			key->stack_id = STACK_LOST_COUNTERS_FULL;
			s = bpf_map_lookup_elem(&stats, key);
		}
	}
	return s;
}

/* Adds an allocation, now tracked, to the counters `s` of stack `stack_id` as `bytes` bytes and
 * `blocks` blocks (its size and 1, unless sampled); a placeholder stack also counts why the
 * allocation has no stack of its own. */
static __always_inline void account_alloc_weighted(struct stack_stats *s, __u32 stack_id,
						   __u64 bytes, __u64 blocks)
{
	__sync_fetch_and_add(&s->alloc_bytes, bytes);
	__sync_fetch_and_add(&s->alloc_count, blocks);
	mark_changed(stack_id);
	switch (stack_id) {
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

static __always_inline void account_alloc(struct stack_stats *s, __u32 stack_id, __u64 size)
{
	account_alloc_weighted(s, stack_id, size, 1);
}

#endif /* LEAK_COMMON_BPF_H */
