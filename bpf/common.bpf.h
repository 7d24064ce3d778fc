/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * What both BPF objects (leak.bpf.c, user mode; kmem.bpf.c, kernel mode) do the same way: the
 * per-stack counters and the loss counters, and putting an allocation on its stack's counters.
 * Each object includes this after leak.h (which stays the one header of the structs shared with
 * Rust) and has its own instance of these maps. Everything here is inlined.
 */
#ifndef LEAK_COMMON_BPF_H
#define LEAK_COMMON_BPF_H

#define ENOENT 2
#define ENOMEM 12
#define EEXIST 17
#define E2BIG 7

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

/*
 * Byte sampling (--sample-bytes; bpf/leak.h explains the tables): which allocations are
 * recorded, and what a recorded one counts for.
 */

/* Never used: makes the sampling constants part of the BTF, hence of the Rust skeletons. */
enum sample_params btf_sample_params;

/* --sample-bytes: mean bytes between samples (leak.h); 0 records every allocation. */
const volatile __u64 sample_bytes = 0;

/* --sample-bytes tables, filled by the recorder before attaching (leak.h). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SAMPLE_GAP_SLOTS);
	__type(key, __u32);
	__type(value, __u32);
} sample_gaps SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SAMPLE_WEIGHT_SLOTS);
	__type(key, __u32);
	__type(value, __u32);
} sample_weights SEC(".maps");

/* A new gap until the next sample: exponential, mean sample_bytes, at least 1 byte. Rounded
 * up: a block of s bytes then ends a gap g exactly when the real-valued g is at most s, as
 * with a continuous gap (rounding to nearest would sample 0.5/N too often). */
static __always_inline __u64 draw_gap(void)
{
	__u32 slot = bpf_get_prandom_u32() & (SAMPLE_GAP_SLOTS - 1);
	__u32 *g = bpf_map_lookup_elem(&sample_gaps, &slot);
	__u64 gap;

	if (!g)
		return sample_bytes;
	gap = (sample_bytes * *g + (1ULL << SAMPLE_GAP_SHIFT) - 1) >> SAMPLE_GAP_SHIFT;
	return gap ? gap : 1;
}

/* Whether an allocation of `size` bytes is sampled: it is when it reaches the end of the current
 * gap, `*left` bytes (0: none drawn yet; a block of 0 bytes counts as 1). Sampled or not, the
 * countdown moves on, so that over the allocations it counts the samples are a Poisson process
 * on bytes: each block is sampled with p = 1 - exp(-s/N), whatever came before it. User mode
 * keeps a countdown per thread, kernel mode one per CPU and nesting level. */
static __always_inline bool take_sample(__u64 *left, __u64 size)
{
	__u64 s = size ? size : 1;

	if (!*left)
		*left = draw_gap();
	if (s < *left) {
		*left -= s;
		return false;
	}
	*left = draw_gap();
	return true;
}

/* What a block of `size` bytes and `kind` counts for on its stack: its size and one block when
 * every allocation is recorded; when sampled, s/p bytes and 1/p blocks (in units of
 * 2^-SAMPLE_COUNT_SHIFT), p = 1 - exp(-s/N) being the chance that it was sampled. User-mode
 * mmap calls are never sampled (p = 1); every kernel kind is. Frees use the same weights as the
 * allocation did. */
static __always_inline void weigh(__u32 kind, __u64 size, __u64 *bytes, __u64 *blocks)
{
	__u64 n = sample_bytes, s = size ? size : 1, scaled, est;
	__u32 idx, next;
	__u32 *f0, *f1;

	*bytes = size;
	*blocks = 1;
	if (!n)
		return;
	*blocks = 1ULL << SAMPLE_COUNT_SHIFT;
	if (kind == KIND_MMAP || s >= n * SAMPLE_X_MAX)
		return;
	/* x = s/N = (idx + rem/N) / SAMPLE_X_STEPS; interpolate f between idx and idx + 1. */
	scaled = s * SAMPLE_X_STEPS;
	idx = scaled / n;
	next = idx + 1;
	f0 = bpf_map_lookup_elem(&sample_weights, &idx);
	f1 = bpf_map_lookup_elem(&sample_weights, &next);
	if (!f0 || !f1)
		return;
	/* s/p = N * f(x). f grows by at most 2^SAMPLE_F_SHIFT / SAMPLE_X_STEPS per step and stays
	 * below 2^(SAMPLE_F_SHIFT + 5); N is at most 2^SAMPLE_BYTES_MAX_SHIFT: no overflow. */
	est = n * (*f0 + (__u64)(*f1 - *f0) * (scaled % n) / n);
	*bytes = size ? (est + (1ULL << (SAMPLE_F_SHIFT - 1))) >> SAMPLE_F_SHIFT : 0;
	*blocks = (est >> (SAMPLE_F_SHIFT - SAMPLE_COUNT_SHIFT)) / s;
}

/* Retires the block `a` from its stack's counters. */
static __always_inline void account_block_free(struct alloc_info *a)
{
	__u64 bytes, blocks;

	weigh(a->key.kind, a->size, &bytes, &blocks);
	account_free(&a->key, bytes, blocks);
}

/* Whether a failed table update means the table is full (a preallocated hash map has no free
 * element: E2BIG; an on-demand one could not allocate: ENOMEM). Any other error means its
 * lock was busy on this CPU: EBUSY before Linux 6.15, EDEADLK or ETIMEDOUT from the resilient
 * locks since (a program that interrupted one holding it, from an NMI or a tracepoint inside
 * the locked section). */
static __always_inline bool table_full(long err)
{
	return err == -E2BIG || err == -ENOMEM;
}

/* Takes the record at `key` out of `map` (a table of live blocks) and its block off its stack's
 * outstanding counters. 1 if it did; 0 if the block was not tracked (or, with `expect_ts` set,
 * its record is no longer the one seen then), or another CPU retired it meanwhile (a double
 * free racing with itself; that CPU counted it); -1 if the kernel refused the delete (counted:
 * its lock was busy, and the block stays tracked and outstanding rather than be counted freed
 * twice). The record is copied first: once deleted, its element may be reused. */
static __always_inline int retire_block(void *map, void *key, __u64 expect_ts)
{
	struct alloc_info *a = bpf_map_lookup_elem(map, key);
	struct alloc_info block;
	long err;

	if (!a)
		return 0;
	block = *a;
	if (expect_ts && block.ts != expect_ts)
		return 0;
	err = bpf_map_delete_elem(map, key);
	if (err == -ENOENT)
		return 0;
	if (err) {
		count(C_FREE_BUSY, 1);
		return -1;
	}
	account_block_free(&block);
	return 1;
}

/* A free (or realloc) of an address not tracked. With sampling, most such blocks were simply
 * not sampled; they cannot be told apart from untracked ones, so none is counted. */
static __always_inline void unknown_free(void)
{
	if (!sample_bytes)
		count(C_UNKNOWN_FREE, 1);
}

/* Adds a block of `size` bytes, now tracked, to the counters `s` of stack `stack_id` (weighed
 * when sampled). */
static __always_inline void account_block_alloc(struct stack_stats *s, __u32 stack_id, __u32 kind,
						__u64 size)
{
	__u64 bytes, blocks;

	weigh(kind, size, &bytes, &blocks);
	account_alloc_weighted(s, stack_id, bytes, blocks);
}

#endif /* LEAK_COMMON_BPF_H */
