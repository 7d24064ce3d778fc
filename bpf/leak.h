/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * The only definition of what crosses the kernel/user boundary. Rust sees these through the
 * generated skeleton's `types` module (recorder/src/bpf.rs), never through hand-written mirrors.
 */
#ifndef LEAK_H
#define LEAK_H

/* Deepest user stack kept; also the size of the stack table's key. */
#define MAX_STACK_DEPTH 64

/* Every way an event can be lost or misattributed. Index into the `counters` map. */
enum leak_counter {
	C_ALLOCS_FULL = 0,	 /* live-allocation table full: allocation not tracked */
	C_ALLOCS_FULL_BYTES = 1, /* bytes of those allocations */
	/* Allocations recorded on a placeholder stack, by reason (one count per allocation). */
	C_STACK_TABLE_FULL = 2,	 /* stack table full (or a 64-bit stack hash collision) */
	C_STACK_WALK_FAILED = 3, /* stack walk failed or came back empty */
	C_COUNTERS_FULL = 4,	 /* no counters for the stack id (0 since counters are an array) */
	C_PENDING_FULL = 5,	 /* per-thread call state not allocated: call not tracked */
	C_RET_WITHOUT_ENTRY = 6, /* allocator return without its entry */
	C_UNKNOWN_FREE = 7,	 /* free of an address not tracked */
	C_MISSED_FREE = 8,	 /* allocation at a still-tracked address (implied free) */
	C_NESTED = 9,		 /* allocator call inside another traced allocator call */
	C_ABANDONED = 10,	 /* allocator call that never returned (exception, longjmp) */
	C_READ_FAILED = 11,	 /* posix_memalign result could not be read */
	/* Not a loss: calls not nested in another traced call whose session probe skipped their
	 * return (nothing to record). */
	C_RETURN_SKIPPED = 12,
	/* A table update or delete the kernel refused because the table's lock was busy
	 * (table_full in common.bpf.h), so the event was not recorded. */
	C_ALLOC_BUSY = 13, /* allocation not recorded */
	C_FREE_BUSY = 14,  /* free not recorded: the block stays tracked, as outstanding */
	NR_COUNTERS = 15,
};

/* What memory a stack's counters describe. */
enum alloc_kind {
	KIND_HEAP = 0,
	KIND_MMAP = 1,
	/* Kernel mode (bpf/kmem.bpf.c). */
	KIND_KERNEL_SLAB = 2,	/* kmalloc, kmem_cache_alloc */
	KIND_KERNEL_PAGE = 3,	/* mm_page_alloc: PAGE_SIZE << order bytes */
	KIND_KERNEL_PERCPU = 4, /* percpu_alloc_percpu */
	NR_KINDS = 5,
};

/* Placeholder stack ids: allocations whose stack is unknown are still counted, here. */
enum lost_stack {
	STACK_LOST_TABLE_FULL = 1,
	STACK_LOST_WALK_FAILED = 2,
	STACK_LOST_COUNTERS_FULL = 3,
	STACK_LOST_EMPTY = 4,
	FIRST_STACK_ID = 16,
};

/* How an allocator call's arguments and result are read. */
enum call_type {
	CALL_PLAIN = 0,	  /* returns the new block: malloc, calloc, memalign, new, mallocx */
	CALL_REALLOC = 1, /* realloc-like: old block in old_ptr */
	CALL_MEMPTR = 2,  /* posix_memalign: status returned, block stored at memptr */
	CALL_MMAP = 3,	  /* anonymous mmap outside the allocator */
	CALL_IGNORE = 4,  /* an mmap we do not account (file-backed, stacks, reservations) */
};

/* A user stack: return addresses, innermost first, zero-filled past the last frame. */
struct stack_trace {
	__u64 ips[MAX_STACK_DEPTH];
};

/* Each object's per-stack counters (`stats`) are an array: those of stack id `id` and kind `k`
 * at index id * <kinds> + k - <first kind>, for the kinds that object records. */
enum stats_layout {
	USER_FIRST_KIND = KIND_HEAP, /* leak.bpf.c: KIND_HEAP, KIND_MMAP */
	USER_KINDS = 2,
	KERNEL_FIRST_KIND = KIND_KERNEL_SLAB, /* kmem.bpf.c: slab, page, percpu */
	KERNEL_KINDS = 3,
};

struct stats_key {
	__u32 stack_id;
	__u32 kind;
};

/* Cumulative per-stack counters; outstanding = alloc - free. */
struct stack_stats {
	__u64 alloc_bytes;
	__u64 alloc_count;
	__u64 free_bytes;
	__u64 free_count;
};

/* One live allocation. */
struct alloc_info {
	__u64 size;
	__u64 ts; /* user mode: identifies this record (thread id << 32 | that thread's count of
		   * blocks recorded); kernel mode: 0, unused */
	struct stats_key key;
};

/* An allocator call in flight on one thread. */
struct pending_call {
	__u64 size;
	__u64 old_ptr; /* realloc: the block being resized */
	__u64 old_ts;  /* realloc: its record's ts at entry, 0 if it was not tracked */
	__u64 memptr;  /* posix_memalign: where the result is stored */
	__u64 sp;      /* stack pointer at entry: detects calls that never returned */
	__u64 sample_left; /* --sample-bytes: bytes until this thread's next sample, 0 = draw */
	__u32 type;	   /* enum call_type */
	__u32 depth;	   /* traced allocator calls open on this thread */
	__u32 sampled;	   /* --sample-bytes: the open call's block is to be recorded */
	__u32 flags;	   /* CALL_BY_SESSION, CALL_LATE_RETURN */
};

/* pending_call.flags: the open call was opened by a session probe (bpf/leak.bpf.c, `enter`). */
#define CALL_BY_SESSION 1
/* ... after the hand-over began (`malloc_late`): malloc's classic return probe runs at its
 * return, and records it should the session probe be gone by then (`malloc_exit_late`). */
#define CALL_LATE_RETURN 2

/* A process forked from the target that may still run its program (bpf/leak.bpf.c,
 * `image_children`). */
enum image_kind {
	IMAGE_OWN = 1,    /* a copy of the target's address space (or of such a copy) */
	IMAGE_SHARED = 2, /* the target's own address space (CLONE_VM, not a thread) */
};
struct image_child {
	__u64 fork_ns; /* CLOCK_MONOTONIC at its fork */
	enum image_kind kind;
	__u32 pad;
};

/*
 * Byte sampling (--sample-bytes N, docs/performance.md "Sampling"). Each thread (kernel mode:
 * each CPU and nesting level) counts down a gap drawn from an exponential distribution of mean N
 * bytes; the allocation that reaches the end of the gap is recorded and a new gap is drawn. A
 * recorded block of s bytes was recorded with probability p = 1 - exp(-s/N) and stands for s/p
 * bytes and 1/p blocks.
 *
 * Gaps: sample_gaps[i] is the mean of -ln(u) over u in [i/SAMPLE_GAP_SLOTS, (i+1)/...), in
 * units of 2^-SAMPLE_GAP_SHIFT; a gap is N * sample_gaps[random slot], rounded up. Weights:
 * sample_weights[i] is f(i / SAMPLE_X_STEPS), f(x) = x / (1 - exp(-x)), in units of
 * 2^-SAMPLE_F_SHIFT, for x = s/N up to SAMPLE_X_MAX (linearly interpolated between entries); a
 * block of s >= SAMPLE_X_MAX * N bytes is always sampled (no gap exceeds 10.7 N) and counts as
 * itself. Sampled recordings count blocks in units of 2^-SAMPLE_COUNT_SHIFT; the recorder
 * divides before writing.
 */
enum sample_params {
	SAMPLE_GAP_SLOTS = 16384,
	SAMPLE_GAP_SHIFT = 16,
	SAMPLE_X_STEPS = 256,
	SAMPLE_X_MAX = 16,
	SAMPLE_WEIGHT_SLOTS = 256 * 16 + 1, /* SAMPLE_X_STEPS * SAMPLE_X_MAX + 1 */
	SAMPLE_F_SHIFT = 20,
	SAMPLE_COUNT_SHIFT = 16,
	/* Largest --sample-bytes, log2: keeps every fixed-point product below 2^64. */
	SAMPLE_BYTES_MAX_SHIFT = 32,
};

/*
 * Kernel mode (bpf/kmem.bpf.c). Slab objects, struct page pointers and per-CPU pointers live in
 * different address spaces: a live kernel allocation is keyed by address and kind.
 */
struct kalloc_key {
	__u64 addr;
	__u32 kind; /* enum alloc_kind */
	__u32 pad;
};

/* Length of a task's comm, NUL included (the `--comm` filter). */
#define COMM_LEN 16
/* Longest slab cache name kept by the `--cache` filter, NUL included. */
#define CACHE_NAME_LEN 32

/* Processes (not threads) the target started (bpf/leak.bpf.c, `target_started`): the first
 * STARTED_EXAMPLES of them are named. */
#define STARTED_EXAMPLES 4
struct started_process {
	__u32 pid;	     /* 0 until the slot is filled */
	__u32 pad;
	char comm[COMM_LEN]; /* its comm after its last exec; the target's if it did not exec */
};

#endif /* LEAK_H */
