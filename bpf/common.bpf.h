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
enum stats_layout btf_stats_layout;

/* The object says which kinds of counters it keeps, in order (enum stats_layout). */
#if !defined(STATS_FIRST_KIND) || !defined(STATS_KINDS)
#error "define STATS_FIRST_KIND and STATS_KINDS before including common.bpf.h"
#endif

/* Next id for a new stack; ids below FIRST_STACK_ID are placeholders. */
__u32 next_stack_id = FIRST_STACK_ID;
/* --max-stacks, set by the recorder before load: how many ids new_stack_id hands out. */
const volatile __u32 stack_slots = 1 << 14;

/* A new stack id, or 0 (never a stack's) once all stack_slots were handed out: ids are never
 * reused, and every id handed out has its counters (and in user mode its trace slot). CPUs
 * racing for the last ids can all pass the first check; the second refuses the extra ones. A
 * full table hands out nothing, so no id is used up per allocation from a new stack. */
static __always_inline __u32 new_stack_id(void)
{
	__u32 id;

	if (next_stack_id - FIRST_STACK_ID >= stack_slots)
		return 0;
	id = __sync_fetch_and_add(&next_stack_id, 1);
	return id - FIRST_STACK_ID < stack_slots ? id : 0;
}

/* Every stack's counters, kind by kind: those of stack `id` and kind `k` at index
 * id * STATS_KINDS + k - STATS_FIRST_KIND, placeholders included. An array: the lookup is a
 * bounds check and an add (the verifier inlines it), where a hash table cost a hash and a
 * compare on every allocation and every free, and no entry has to be created or can be
 * missing. The recorder maps it and reads the counters in place. Sized by the recorder from
 * --max-stacks. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, ((1 << 14) + FIRST_STACK_ID) * STATS_KINDS);
	__type(key, __u32);
	__type(value, struct stack_stats);
} stats SEC(".maps");

/* The counters of stack `stack_id` and kind `kind`; NULL for a stack id beyond the table or a
 * kind this object does not keep. */
static __always_inline struct stack_stats *counters_of(__u32 stack_id, __u32 kind)
{
	__u32 i = stack_id * STATS_KINDS + (kind - STATS_FIRST_KIND);

	if (kind - STATS_FIRST_KIND >= STATS_KINDS)
		return NULL;
	return bpf_map_lookup_elem(&stats, &i);
}

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
	struct stack_stats *s = counters_of(key->stack_id, key->kind);

	if (s) {
		__sync_fetch_and_add(&s->free_bytes, bytes);
		__sync_fetch_and_add(&s->free_count, blocks);
		mark_changed(key->stack_id);
	}
}

/* The counters of `key`. Both objects hand out only stack ids within the table, so this never
 * falls back to the STACK_LOST_COUNTERS_FULL placeholder (key->stack_id is then changed to
 * it), which stays for safety; NULL only for a kind this object does not keep. */
static __always_inline struct stack_stats *stack_counters(struct stats_key *key)
{
	struct stack_stats *s = counters_of(key->stack_id, key->kind);

	if (!s) {
		key->stack_id = STACK_LOST_COUNTERS_FULL;
		s = counters_of(key->stack_id, key->kind);
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
