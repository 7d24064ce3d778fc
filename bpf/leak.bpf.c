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
#include <bpf/bpf_core_read.h>
#include "leak.h"
#define STATS_FIRST_KIND USER_FIRST_KIND
#define STATS_KINDS USER_KINDS
#include "common.bpf.h"

#define MAP_ANONYMOUS 0x20
#define MAP_STACK 0x20000

/* Set by the recorder before load. */
const volatile __u32 target_tgid = 0;
const volatile __u64 min_size = 0;
const volatile __u64 max_size = ~0ULL;
/* Tests only (LEAK_RECORD_TEST_STACK_HASH_MASK): fewer hash bits force stack hash collisions. */
const volatile __u64 stack_hash_mask = ~0ULL;
/* Tests only (LEAK_RECORD_TEST_NO_STACK_CHUNKS): every walk finds its CPU's chunk busy, as when
 * a preempted walk holds it (walk_chunks), and reads its records one by one. */
const volatile bool test_no_chunks = false;
/* Walks that found their CPU's chunk held (by a preempted walk, or the test hook) and read their
 * records one by one: slower, same frames. The recorder reports it; not a loss. */
__u64 chunkless_walks = 0;
/* Execs of the target (a started command's first program included), and the first stack id
 * handed out after the last one (`target_exec`): the stacks below it were walked in a program
 * the target has left, and the recorder locates them in that program's memory map, not in the
 * new one's (recorder/src/record.rs, `locate_before_exec`). */
__u64 target_execs = 0; /* count << 32 | first id: one store, so read whole */
/*
 * The kernel ties a uprobe to the task it was attached for: a classic probe fires where that
 * task's memory is the caller's, a session probe (uprobe_multi) for that task's thread group,
 * and places its breakpoints in that task's memory. The recorder attaches them for one thread
 * of the target, `probes_tid` (0: the main thread, `target_tgid`; set by the recorder before
 * it attaches), and attaches them again when that thread ends while the process lives on:
 * - `target_thread_execs`: another thread than the main one exec'd (`target_exec`). It took
 *   the main thread's place, in a new memory: no probe fires there, session probes included.
 * - `probes_thread_exits`: the probes' thread exited, others run on (`probes_thread_exit`;
 *   e.g. a main thread that calls pthread_exit): classic probes no longer fire.
 * `untied_ns` is when the last of either happened (CLOCK_MONOTONIC; written before the
 * counts). Each wakes the recorder (`wake`).
 */
__u32 probes_tid = 0;
__u64 target_thread_execs = 0;
__u64 probes_thread_exits = 0;
__u64 untied_ns = 0;

/* Leaving session probes when the target forks (recorder/src/bpf.rs, `Tracer::leave_sessions`).
 * A child forked without exec inherits the breakpoints of its parent's text; a classic probe's
 * filter takes one out of a process it does not trace at its first hit, a session probe never
 * does, so the child would trap on every malloc, twice. When a child still runs the target's
 * program a moment after its fork (`image_children`; most exec at once), the recorder
 * attaches malloc's classic pair (malloc_enter_late, malloc_exit_late) beside each session
 * probe, waits until every uprobe trap under way has ended (`handover_settle`), so that every
 * call from then on meets the classic return probe, hands new calls over to the pair
 * (`malloc_late`, set by the recorder), waits for the session probe's calls opened before that
 * to return (`open_session_calls`), and detaches the session probes, which takes their
 * breakpoints out of every process the classic pair does not trace. The classic return,
 * which runs before the session probe's, records every call the session probe opened that it
 * sees return, and one whose session entry never ran because the session probe went while its
 * thread was between the pair's entry and it (`malloc_exit_late`): a thread held between the
 * two probes of a trap across the detach loses no call. Every call is recorded once, by one
 * side, but for one whose trap began before the pair's return probe was attached and that is
 * still open after the grace (counted as abandoned), and a malloc in a signal handler that
 * interrupted another: one of the two is lost and counted (the handler's as nested; or, if its
 * thread was held across the detach, the interrupted call, as abandoned). */
bool malloc_late = false;
/* Processes forked from the target, or from one of these, that still run the target's program
 * (not threads): IMAGE_OWN, in a copy of its address space, with malloc's breakpoints; or
 * IMAGE_SHARED, in the target's own (CLONE_VM, as vfork and posix_spawn do), followed for
 * their forks. An exec, or the exit of the whole process, takes one out. Kept while
 * target_forked is attached (with session probes only). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32); /* PID */
	__type(value, struct image_child);
} image_children SEC(".maps");
/* Such processes `image_children` had no room for: the recorder hands over at once. */
__u64 image_children_lost = 0;

/* Wakes the recorder: at each fork that adds an IMAGE_OWN process (until the hand-over, it
 * traps on every malloc), and at each exec of the target by another thread than its main one
 * (until the probes are attached again, none fires). The records are PIDs; the recorder
 * discards them and reads `image_children` and `target_thread_execs`. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} wake SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 20); /* --max-allocs */
	__type(key, __u64);
	__type(value, struct alloc_info);
} allocs SEC(".maps");

/* A piece of the user stack, read in one go: the walk takes the frame records that lie within
 * it from this copy instead of reading each one (each bpf_probe_read_user cost about 100 ns
 * here). The first chunk starts at the stack pointer and holds up to FIRST_CHUNK bytes, enough
 * for the few frames of most stacks; on `leaky depths`, every other call 64 frames deep and its
 * records 16 bytes apart, alloc_exit went from 3.8-4.4 to 1.3-1.9 us per call. Further chunks
 * start at the first record beyond the last one and reach the end of its 4 KiB block: with
 * records 64 bytes apart, 3.2-4.2 -> 1.5-1.8 us with 1 KiB chunks; on 64-frame stacks
 * (`leaky deep_churn`) 4 KiB took about 15% off alloc_exit against 1 KiB. */
#define STACK_CHUNK 4096
#define FIRST_CHUNK 1024
struct stack_chunk {
	/* `words` hold the stack's [base, base + len); len 0: nothing. Kept here rather than in
	 * locals: the verifier then sees them as unknown values at every step of the walk, instead
	 * of telling walks apart by the chunks they read (which made it give up). */
	__u64 base;
	__u64 len;
	/* Words, not bytes: a record is then two 8-byte loads (a byte array made it 16 byte loads
	 * with shifts). + one frame record past any offset below STACK_CHUNK. */
	__u64 words[STACK_CHUNK / 8 + 2];
};

/* What one thread's allocator calls need: the open call, and the walk's trace. */
struct thread_state {
	struct pending_call call; /* `depth` 0: no call is open */
	struct stack_trace trace; /* the stack being walked */
	__u32 blocks; /* blocks this thread recorded, mod 2^32: their stamps (record) */
	__u32 last_id; /* the stack id this thread found last (0: none yet) ... */
	__u64 last_hash; /* ... for this hash (current_stack_id) */
	__u32 late_inert; /* malloc_enter_late left the open malloc call to its session probe */
	__u32 late_took; /* malloc_enter_late took this trap's call: the session entry skips it */
	__u32 late_closed; /* malloc_exit_late recorded the session probe's call: its return skips */
	__u32 late_pending; /* malloc_enter_late left this trap's call to a session entry yet to run */
	__u64 late_size; /* ... of this size (malloc_exit_late records it should that entry not run) */
	__u64 late_sp; /* ... and its stack pointer at entry */
	__u64 deleted; /* the block delete_enter retired last on this thread (free_enter) */
};

/* Each thread's state, in the thread itself: no hashing, no contention, freed with the thread
 * (about 0.6 KB per traced thread). The trace is per thread, not per CPU, because a uprobe
 * program can be preempted on kernels built or booted with full preemption (it runs under
 * migrate_disable() and a preemptible RCU read lock): another thread hitting a probe on the
 * same CPU would then overwrite a per-CPU trace in the middle of the walk. A thread's own state
 * is touched by that thread only, and it already has it at hand. */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct thread_state);
} threads SEC(".maps");

/* The walk's stack chunk, one per CPU, taken (`busy`) for the length of a walk. Not in the
 * thread's state, although that is where a preempted walk would be safe without a flag: the
 * kernel checks every bpf_probe_read_user against its destination (hardened usercopy), and for
 * task storage, a slab object, that check cost about 90 ns per read (alloc_exit on churn
 * 613-623 -> 513-530 ns). A walk preempted on a fully preemptible kernel keeps the chunk
 * busy, and a walk on its CPU meanwhile reads its records one by one: slower, same frames. */
struct walk_chunk {
	__u32 busy; /* 1 while a walk on this CPU uses `chunk` */
	__u32 pad;
	struct stack_chunk chunk;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2); /* 0: the chunk; 1: never read into, for a walk without one */
	__type(key, __u32);
	__type(value, struct walk_chunk);
} walk_chunks SEC(".maps");

/* Stack ids by a 64-bit hash of the trace. The trace itself is kept in stack_traces and
 * compared on every hit: two stacks with one hash are never merged (the second is counted as
 * not tracked, like a full table). Hashing only the frames walked is what makes this cheaper
 * than a table keyed by the whole 512-byte trace. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 14); /* --max-stacks */
	__type(key, __u64);
	__type(value, __u32);
} stack_ids SEC(".maps");

/* The trace of stack id `i + FIRST_STACK_ID` at index i, zero-filled past its last frame. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1 << 14); /* --max-stacks */
	__type(key, __u32);
	__type(value, struct stack_trace);
} stack_traces SEC(".maps");

static __always_inline bool is_target(void)
{
	return (bpf_get_current_pid_tgid() >> 32) == target_tgid;
}

/* What a session probe's entry side returns (SEC("uprobe.session"), Linux >= 6.13): run the
 * call's return side, or skip it. Skipped, the kernel leaves the return address alone, and the
 * call costs one trap instead of two. */
#define RUN_RETURN 0
#define SKIP_RETURN 1

/* Records an allocator call's arguments, or notes that it is nested in another one.
 *
 * `session`: the call has a session probe, whose return side runs only if this returns
 * RUN_RETURN. Such a call stays open only when its return has work to do (a block to record,
 * an old block to retire); otherwise it leaves no trace, and a nested call's return is skipped
 * without counting it in `depth`. That is exact only for functions that call no other probed
 * function while they run, since an open call is what marks a call inside it as nested: the
 * recorder gives session probes to malloc and mallocx alone, and only when mmap is not probed
 * (recorder/src/bpf.rs, `Sessions`). Returns RUN_RETURN or SKIP_RETURN; classic probes ignore
 * it. */
static __always_inline int enter_thread(struct thread_state *st, __u64 sp, __u64 size,
					__u64 old_ptr, __u64 memptr, __u32 type, bool session)
{
	struct pending_call *open = &st->call;
	__u64 old_ts = 0;
	bool needed;

	if (session)
		st->late_pending = 0; /* this trap's session entry ran (malloc_enter_late) */
	if (open->depth) {
		/* After the hand-over (`malloc_late`), a classic probe's call that finds a call of
		 * the session probe open: a session-probed function calls no probed function
		 * (above), so it does not run inside it; the session call's return went unseen
		 * (its probe was detached while it ran), and it counts as abandoned. */
		bool unseen = (open->flags & CALL_BY_SESSION) && !session &&
			      *(volatile bool *)&malloc_late;

		/* The stack grows down: a nested call runs below the open call's frame, or at it
		 * when the outer call tail-jumps into the inner one (glibc reallocarray -> realloc;
		 * both return probes then fire, innermost first). */
		if (sp <= open->sp && !unseen) {
			count(C_NESTED, 1);
			if (session)
				return SKIP_RETURN;
			open->depth++;
			return RUN_RETURN;
		}
		/* The open call's frame is gone: it never returned (exception, longjmp). A call
		 * abandoned and followed by one from the very same frame looks nested: rare. */
		count(C_ABANDONED, 1);
	}
	if (type == CALL_REALLOC && old_ptr) {
		struct alloc_info *old = bpf_map_lookup_elem(&allocs, &old_ptr);

		if (old)
			old_ts = old->ts;
		else
			unknown_free();
	}
	open->sampled = 1;
	if (sample_bytes && type != CALL_MMAP && type != CALL_IGNORE && size >= min_size &&
	    size <= max_size)
		open->sampled = take_sample(&open->sample_left, size);
	/* What `leave` would do with this call: record a block, or retire the old one. */
	needed = (type != CALL_IGNORE && open->sampled && size >= min_size && size <= max_size) ||
		 old_ts;
	if (session && !needed) {
		open->depth = 0;
		count(C_RETURN_SKIPPED, 1);
		return SKIP_RETURN;
	}
	open->size = size;
	open->old_ptr = old_ptr;
	open->old_ts = old_ts;
	open->memptr = memptr;
	open->sp = sp;
	open->type = type;
	open->flags = 0;
	if (session)
		open->flags = CALL_BY_SESSION |
			      (*(volatile bool *)&malloc_late ? CALL_LATE_RETURN : 0);
	open->depth = 1;
	return RUN_RETURN;
}

/* A call of a session probe is open on this thread. */
static __always_inline bool session_call_open(const struct thread_state *st)
{
	return st->call.depth && (st->call.flags & CALL_BY_SESSION);
}

/* `enter_thread` for the current thread, if it is the target's. */
static __always_inline int enter(struct pt_regs *ctx, __u64 size, __u64 old_ptr, __u64 memptr,
				 __u32 type, bool session)
{
	struct thread_state *st;

	if (!is_target())
		return SKIP_RETURN;
	st = bpf_task_storage_get(&threads, bpf_get_current_task_btf(), 0,
				  BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!st) {
		count(C_PENDING_FULL, 1);
		return SKIP_RETURN;
	}
	return enter_thread(st, PT_REGS_SP(ctx), size, old_ptr, memptr, type, session);
}

/* The highest user address on x86-64 with 5-level paging (TASK_SIZE_MAX, 56 bits); with 4
 * levels user space ends lower, at 2^47. */
#define USER_ADDR_MAX 0x00fffffffffff000ULL

/* A frame record of the frame-pointer chain, as the callee's prologue pushed it. */
struct frame_record {
	__u64 next; /* the caller's frame pointer */
	__u64 ret;  /* return address into the caller */
};

/* Walks the user frame-pointer chain into `trace` (a zero after the last frame, unless all
 * MAX_STACK_DEPTH are used) and returns the number of frames. Same frames as
 * bpf_get_stack(BPF_F_USER_STACK), which stores the interrupted ip and then follows %rbp, but
 * it stops where the chain ends (0, which _start leaves in %rbp) or stops going up the stack
 * (code without frame pointers left something else there) instead of reading that address:
 * the faulting read at the end of every chain cost the kernel's walker about 0.5 us per
 * allocation, more than the rest of the walk. Records come from reads of up to 4 KiB of the
 * stack at a time (struct stack_chunk) where they lie close together.
 * A frame pointer below the stack pointer is not followed either: every frame of the thread
 * lies above its stack pointer (the stack grows down), so such a value is whatever code built
 * without frame pointers left in %rbp (often a heap pointer or a small number), and reading
 * it cost 0.75 us per allocation in sqlite3 (alloc_exit 1.33 -> 0.57 us) and could
 * record a bogus frame. */
_Static_assert((MAX_STACK_DEPTH & (MAX_STACK_DEPTH - 1)) == 0, "the terminator's index is masked");
_Static_assert((STACK_CHUNK & (STACK_CHUNK - 1)) == 0 && STACK_CHUNK <= 4096,
	       "chunk offsets are masked; the chunk stays within one 4 KiB block");

static __always_inline __u64 hash_step(__u64 h, __u64 ip)
{
	return (h ^ ip) * 0x100000001b3ULL;
}

/* A chunk read from `at` ends with the 4 KiB block that holds `at`: that block is mapped (`at`
 * is the stack pointer or a frame record about to be read), so the read cannot fault, where
 * one reaching past the top of the stack would, and a fault costs more than every read the
 * chunk saves. */
static __always_inline __u64 chunk_len(__u64 at)
{
	__u64 len = 4096 - (at & 4095);

	return len > STACK_CHUNK ? STACK_CHUNK : len;
}

/* A record beyond the chunk starts a new chunk only when the last two records were at most this
 * far apart: the new chunk then likely holds several more. Records further apart are read one
 * at a time, as a chunk would mostly copy the frames' locals. */
#define SLIDE_MAX_STEP 256

/* Whether the frame record at `fp` lies within `chunk` (never when it holds nothing). */
static __always_inline bool in_chunk(struct stack_chunk *chunk, __u64 fp)
{
	__u64 off = fp - chunk->base;

	return fp >= chunk->base && off < chunk->len &&
	       chunk->len - off >= sizeof(struct frame_record);
}

/* Also sets *hash, a hash of the frames walked. Reads chunks of at most `room` bytes into
 * `chunk` (0: none, every record on its own; `chunk` is then never written but its length). */
static __always_inline long walk_user_stack(struct pt_regs *ctx, struct stack_trace *trace,
					    struct stack_chunk *chunk, __u64 room, __u64 *hash)
{
	struct frame_record fr;
	__u64 fp = PT_REGS_FP(ctx);
	__u64 sp = PT_REGS_SP(ctx);
	/* The count of execs goes into the hash: without ASLR the next program may run at the same
	 * addresses, and its stacks must not take the ids of the last one's. */
	__u64 h = 0xcbf29ce484222325ULL ^ (target_execs >> 32);
	__u64 step = ~0ULL; /* how far apart the last two records were */
	__u64 at, len, off;
	bool read, inside;
	long n;

	chunk->len = 0;
	trace->ips[0] = PT_REGS_IP(ctx);
	if (!trace->ips[0])
		return 0;
	h = hash_step(h, trace->ips[0]);
	/* Only the first frame pointer is checked against the stack pointer: the walk stops where
	 * the chain does not go up, so every later one lies above it. */
	if (fp < sp)
		fp = 0;
	for (n = 1; n < MAX_STACK_DEPTH; n++) {
		if (!fp || (fp & 7))
			break;
		inside = in_chunk(chunk, fp);
		if (!inside) {
			/* The first chunk starts at the stack pointer, read when the first record lies
			 * within it (records only go up the stack from there): a walk that ends at once,
			 * as in code without frame pointers, reads nothing. The next ones start at the
			 * first record they hold, once the chain is one of close frames. */
			at = n == 1 ? sp & ~7ULL : fp; /* 8-aligned, as records are */
			len = chunk_len(at);
			if (n == 1 && len > FIRST_CHUNK)
				len = FIRST_CHUNK;
			if (len > room)
				len = room;
			read = n == 1 ? fp - at + sizeof(fr) <= len
				      : step <= SLIDE_MAX_STEP && len >= sizeof(fr);
			chunk->len = 0;
			if (read && !bpf_probe_read_user(chunk->words, len, (void *)at)) {
				chunk->base = at;
				chunk->len = len;
			}
			inside = in_chunk(chunk, fp);
		}
		if (inside) {
			/* A word index below STACK_CHUNK / 8 (masked for the verifier) */
			off = ((fp - chunk->base) / 8) & (STACK_CHUNK / 8 - 1);
			fr.next = chunk->words[off];
			fr.ret = chunk->words[off + 1];
		} else if (bpf_probe_read_user(&fr, sizeof(fr), (void *)fp)) {
			break;
		}
		/* 0 ends the chain; an address beyond user space (the highest with 5-level paging
		 * included) is no return address: data (a shell's environment text) that code
		 * without frame pointers left %rbp pointing at, above the stack pointer. */
		if (!fr.ret || fr.ret > USER_ADDR_MAX)
			break;
		trace->ips[n] = fr.ret;
		h = hash_step(h, fr.ret);
		if (fr.next <= fp) {
			n++;
			break;
		}
		step = fr.next - fp;
		fp = fr.next;
	}
	/* The terminator; what lies past it is left from earlier walks (zero-filling the whole
	 * trace on every call cost 50-90 ns of alloc_exit's 700 on churn). */
	if (n < MAX_STACK_DEPTH)
		trace->ips[n & (MAX_STACK_DEPTH - 1)] = 0;
	/* Final avalanche (MurmurHash3's fmix64), so every frame moves every bit. */
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	*hash = (h ^ (h >> 33)) & stack_hash_mask;
	return n;
}

/* Whether stack `id` holds exactly `trace`. */
static __always_inline bool same_trace(__u32 id, struct stack_trace *trace)
{
	__u32 slot = id - FIRST_STACK_ID;
	struct stack_trace *known = bpf_map_lookup_elem(&stack_traces, &slot);
	__u32 i;

	if (!known)
		return false;
	for (i = 0; i < MAX_STACK_DEPTH; i++) {
		if (known->ips[i] != trace->ips[i])
			return false;
		if (!trace->ips[i])
			break; /* both zero-filled from here */
	}
	return true;
}

/* A new stack's id for `trace` (hash `hash`), its trace stored before the id can be found; the
 * id another CPU inserted for this hash first; or 0 once every slot was handed out (new stacks
 * are then not tracked) or the insert failed. */
static __always_inline __u32 new_stack(struct stack_trace *trace, __u64 hash)
{
	struct stack_trace *stored;
	__u32 id, slot, i;
	__u32 *known;
	long err;

	id = new_stack_id();
	if (!id)
		return 0;
	slot = id - FIRST_STACK_ID;
	stored = bpf_map_lookup_elem(&stack_traces, &slot);
	if (!stored)
		return 0;
	/* Up to its terminator only: the slot was never used (ids are never reused) and array
	 * entries start zeroed, so it ends zero-filled. */
	for (i = 0; i < MAX_STACK_DEPTH; i++) {
		stored->ips[i] = trace->ips[i];
		if (!trace->ips[i])
			break;
	}
	err = bpf_map_update_elem(&stack_ids, &hash, &id, BPF_NOEXIST);
	if (err == -EEXIST) {
		/* Another CPU inserted this hash first (its slot is used, ours stays unused). */
		known = bpf_map_lookup_elem(&stack_ids, &hash);
		return known ? *known : 0;
	}
	return err ? 0 : id;
}

/* The id of the current user stack, walked into the thread's state `st` (its trace, and the
 * stack id it found last); a placeholder id when it cannot be had (counted by the caller once
 * the allocation is recorded on it). */
static __always_inline __u32 current_stack_id(struct pt_regs *ctx, struct thread_state *st)
{
	struct stack_trace *trace = &st->trace;
	struct walk_chunk *wc;
	__u32 which = 0, id;
	__u32 *known;
	__u64 hash, room = 0;
	long n;

	/* This CPU's chunk, unless a preempted walk holds it (the test hook makes it look held). */
	wc = bpf_map_lookup_elem(&walk_chunks, &which);
	if (wc && test_no_chunks)
		wc->busy = 1;
	if (wc && !__sync_val_compare_and_swap(&wc->busy, 0, 1)) {
		room = STACK_CHUNK;
	} else {
		__sync_fetch_and_add(&chunkless_walks, 1);
		which = 1;
		wc = bpf_map_lookup_elem(&walk_chunks, &which);
		if (!wc)
			return STACK_LOST_WALK_FAILED;
	}
	n = walk_user_stack(ctx, trace, &wc->chunk, room, &hash);
	if (room) {
		/* Released after the walk's last access to it, so that no walk on this CPU can
		 * take it before (compiler order suffices: only this CPU reads the flag). */
		asm volatile("" ::: "memory");
		*(volatile __u32 *)&wc->busy = 0;
	}
	if (n <= 0)
		return STACK_LOST_EMPTY;
	/* The id stack_ids holds for this hash: the one this thread found last if it was for this
	 * hash (stack_ids never changes an entry once made, so that saves a lookup and changes
	 * nothing), else looked up, else a new one. */
	if (st->last_id && st->last_hash == hash) {
		id = st->last_id;
	} else {
		known = bpf_map_lookup_elem(&stack_ids, &hash);
		id = known ? *known : new_stack(trace, hash);
		if (!id)
			return STACK_LOST_TABLE_FULL;
	}
	/* A different stack with the same hash: counted, never merged. */
	if (!same_trace(id, trace))
		return STACK_LOST_TABLE_FULL;
	st->last_hash = hash;
	st->last_id = id;
	return id;
}

/* Records a new block on the current stack (walked with the state `st` of thread `tid`). */
static __always_inline void record(struct pt_regs *ctx, struct thread_state *st, __u64 tid,
				   __u64 ptr, __u64 size, __u32 kind)
{
	struct stats_key key = { .kind = kind };
	struct alloc_info info = {};
	struct stack_stats *s;
	long err;

	key.stack_id = current_stack_id(ctx, st);
	s = stack_counters(&key);
	if (!s)
		return;
	info.size = size;
	/* What tells this record from any other at the same address (realloc checks it at its
	 * return): the thread's id and its count of blocks recorded. Unique unless the thread
	 * records 2^32 blocks in between (or its id is reused by a new thread whose count meets
	 * the old one's), and never 0 (a thread id is not). bpf_ktime_get_ns()
	 * did the same job for 60-70 ns more per allocation. */
	info.ts = (tid << 32) | ++st->blocks;
	info.key = key;
	/* Inserting first spares the common case a lookup. */
	err = bpf_map_update_elem(&allocs, &ptr, &info, BPF_NOEXIST);
	if (err == -EEXIST) {
		/* The allocator handed out a tracked address again: its free was missed. */
		int retired = retire_block(&allocs, &ptr, 0);

		if (retired > 0)
			count(C_MISSED_FREE, 1);
		/* Still tracked if its lock was busy: not replaced, or its bytes would stay
		 * outstanding with no record left to retire them. */
		if (retired < 0) {
			count(C_ALLOC_BUSY, 1);
			return;
		}
		err = bpf_map_update_elem(&allocs, &ptr, &info, BPF_ANY);
	}
	if (err && !table_full(err)) {
		count(C_ALLOC_BUSY, 1);
		return;
	}
	if (err) {
		count(C_ALLOCS_FULL, 1);
		count(C_ALLOCS_FULL_BYTES, size);
		return;
	}
	account_block_alloc(s, key.stack_id, kind, size);
}

/* The outermost allocator call on this thread returned `ret`. */
static __always_inline int leave_thread(struct pt_regs *ctx, struct thread_state *st,
					__u64 pid_tgid, __u64 ret)
{
	struct pending_call *open;
	struct pending_call call;
	__u64 ptr = ret;
	__u32 kind = KIND_HEAP;

	if (!st || !st->call.depth) {
		count(C_RET_WITHOUT_ENTRY, 1);
		return 0;
	}
	open = &st->call;
	if (open->depth > 1) {
		open->depth--;
		return 0;
	}
	call = *open;
	open->depth = 0;

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
				retire_block(&allocs, &call.old_ptr, call.old_ts);
			return 0;
		}
		if (call.old_ts)
			retire_block(&allocs, &call.old_ptr, call.old_ts);
		break;
	case CALL_MMAP:
		if (ptr == ~0ULL) /* MAP_FAILED */
			return 0;
		kind = KIND_MMAP;
		break;
	}
	/* Not sampled: no stack walk, no table insert (the point of --sample-bytes). */
	if (!ptr || call.size < min_size || call.size > max_size || !call.sampled)
		return 0;
	record(ctx, st, (__u32)pid_tgid, ptr, call.size, kind);
	return 0;
}

/* `leave_thread` for the current thread, if it is the target's. `session`: a session probe's
 * return side, which skips the call if malloc's classic return probe, which ran before it in
 * this trap (the newest consumer first), recorded it already (`malloc_exit_late`). */
static __always_inline int leave_from(struct pt_regs *ctx, __u64 ret, bool session)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct thread_state *st;

	if ((pid_tgid >> 32) != target_tgid) /* is_target(), keeping the thread id */
		return 0;
	st = bpf_task_storage_get(&threads, bpf_get_current_task_btf(), 0, 0);
	if (session && st && st->late_closed) {
		st->late_closed = 0;
		return 0;
	}
	return leave_thread(ctx, st, pid_tgid, ret);
}

static __always_inline int leave(struct pt_regs *ctx, __u64 ret)
{
	return leave_from(ctx, ret, false);
}

SEC("uprobe")
int BPF_UPROBE(malloc_enter, size_t size)
{
	enter(ctx, size, 0, 0, CALL_PLAIN, false);
	return 0;
}

SEC("uprobe")
int BPF_UPROBE(calloc_enter, size_t nmemb, size_t size)
{
	enter(ctx, nmemb * size, 0, 0, CALL_PLAIN, false);
	return 0;
}

SEC("uprobe")
int BPF_UPROBE(memalign_enter, size_t alignment, size_t size)
{
	enter(ctx, size, 0, 0, CALL_PLAIN, false);
	return 0;
}

SEC("uprobe")
int BPF_UPROBE(realloc_enter, void *ptr, size_t size)
{
	enter(ctx, size, (__u64)ptr, 0, CALL_REALLOC, false);
	return 0;
}

SEC("uprobe")
int BPF_UPROBE(reallocarray_enter, void *ptr, size_t nmemb, size_t size)
{
	enter(ctx, nmemb * size, (__u64)ptr, 0, CALL_REALLOC, false);
	return 0;
}

SEC("uprobe")
int BPF_UPROBE(posix_memalign_enter, void **memptr, size_t alignment, size_t size)
{
	enter(ctx, size, 0, (__u64)memptr, CALL_MEMPTR, false);
	return 0;
}

SEC("uretprobe")
int BPF_URETPROBE(alloc_exit, void *ret)
{
	return leave(ctx, (__u64)ret);
}

extern bool bpf_session_is_return(void) __ksym __weak;

/* Tests only (LEAK_RECORD_TEST_HANDOVER_HOLD, recorder/src/bpf.rs, `test_hold_next_trap`):
 * while `test_hold_armed` names a place (HOLD_*), the next of the target's threads to reach it
 * outside other allocator calls (HOLD_PAIR_ENTRY_NESTED: inside one; HOLD_PAIR_RETURN: either)
 * before the hand-over (`malloc_late`) disarms it and stays there `test_hold_ns`, as a thread
 * the kernel preempts, or whose virtual CPU the host deschedules, can stay in a trap.
 * `test_holds` counts the holds. */
#define HOLD_SESSION_ENTRY 1 /* the session entry, before it reads `malloc_late` */
#define HOLD_PAIR_ENTRY 2 /* malloc_enter_late, after it left the call to the session entry */
#define HOLD_PAIR_RETURN 3 /* malloc_exit_late, after it handled the session probe's call */
#define HOLD_PAIR_ENTRY_NESTED 4 /* as HOLD_PAIR_ENTRY, in a malloc inside another allocator call */
__u64 test_hold_ns = 0;
__u32 test_hold_armed = 0;
__u32 test_holds = 0;

static long hold_until(__u64 index, void *deadline)
{
	return bpf_ktime_get_ns() >= *(__u64 *)deadline;
}

static __always_inline void test_hold(__u32 at)
{
	struct thread_state *st;
	__u64 deadline;
	bool nested;

	if (*(volatile __u32 *)&test_hold_armed != at || *(volatile bool *)&malloc_late ||
	    !is_target())
		return;
	/* Not a malloc inside another allocator call (glibc's realloc(NULL, n)): nested, it would
	 * open no call of its own; but for HOLD_PAIR_ENTRY_NESTED, only one. (A return closed its
	 * call.) */
	st = bpf_task_storage_get(&threads, bpf_get_current_task_btf(), 0, 0);
	nested = st && st->call.depth;
	if (at == HOLD_PAIR_ENTRY_NESTED ? !nested : at != HOLD_PAIR_RETURN && nested)
		return;
	if (__sync_val_compare_and_swap(&test_hold_armed, at, 0) != at)
		return;
	__sync_fetch_and_add(&test_holds, 1);
	deadline = bpf_ktime_get_ns() + test_hold_ns;
	bpf_loop(1 << 23, hold_until, &deadline, 0);
}

/* A session probe (malloc, mallocx): one program runs at the call's entry and, if that asked for
 * it, at its return. Loaded only where used (recorder/src/bpf.rs, `Sessions`); the classic pair
 * malloc_enter + alloc_exit otherwise. */
SEC("uprobe.session")
int BPF_UPROBE(malloc_session, size_t size)
{
	if (bpf_session_is_return())
		return leave_from(ctx, PT_REGS_RC(ctx), true);
	/* A link attached before an exec by another thread (its cookie: `target_thread_execs`
	 * then), which the recorder attached again: until it drops this one (it runs here too,
	 * for the same thread group), its successor records the call. */
	if (bpf_get_attach_cookie(ctx) != target_thread_execs)
		return SKIP_RETURN;
	test_hold(HOLD_SESSION_ENTRY);
	if (*(volatile bool *)&malloc_late) {
		struct thread_state *st;

		/* The classic pair took the call if its entry, which ran first in this trap, saw the
		 * hand-over. This probe takes it if that entry ran before the hand-over, did not run
		 * (the trap began its handlers before that probe was attached), or could not get the
		 * thread's state. */
		if (!is_target())
			return SKIP_RETURN;
		st = bpf_task_storage_get(&threads, bpf_get_current_task_btf(), 0, 0);
		if (!st)
			return enter(ctx, size, 0, 0, CALL_PLAIN, true);
		if (st->late_took) {
			st->late_took = 0;
			return SKIP_RETURN;
		}
		return enter_thread(st, PT_REGS_SP(ctx), size, 0, 0, CALL_PLAIN, true);
	}
	return enter(ctx, size, 0, 0, CALL_PLAIN, true);
}

/* malloc's classic pair beside its session probe, after the target forked (`malloc_late`).
 * Both entries run at each call while both are attached: the kernel runs the newest
 * consumer's handlers first (kernel/events/uprobes.c, consumer_add; the same order on every
 * kernel with sessions), so this entry runs before the session probe's and reads
 * `malloc_late` first. It says in `late_took` that it took the call (the session entry, next,
 * clears it), and in `late_inert` that it left the call to the session probe, for this return
 * (which the recorder attaches after this entry: a trap that runs it ran the entry too). A
 * call it leaves stays `late_pending`, with its size, until the session entry runs
 * (`enter_thread`): should the recorder detach the session probe while this thread is between
 * the two, the entry never runs, and this return records the call. One flag of each per
 * thread is enough because malloc calls no probed function: a malloc in a signal handler that
 * interrupted one is lost (counted). */
SEC("uprobe")
int BPF_UPROBE(malloc_enter_late, size_t size)
{
	bool late = *(volatile bool *)&malloc_late;
	struct thread_state *st;

	if (!is_target())
		return 0;
	st = bpf_task_storage_get(&threads, bpf_get_current_task_btf(), 0,
				  BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!st) {
		if (late)
			count(C_PENDING_FULL, 1);
		return 0;
	}
	st->late_inert = !late;
	st->late_pending = !late;
	st->late_closed = 0; /* a new call: any earlier trap's return chain is over */
	if (late) {
		st->late_took = 1;
		enter_thread(st, PT_REGS_SP(ctx), size, 0, 0, CALL_PLAIN, false);
	} else {
		/* Read only while `late_pending`: not stored at every call after the hand-over. */
		st->late_size = size;
		st->late_sp = PT_REGS_SP(ctx);
		test_hold(HOLD_PAIR_ENTRY);
		test_hold(HOLD_PAIR_ENTRY_NESTED);
	}
	return 0;
}

SEC("uretprobe")
int BPF_URETPROBE(malloc_exit_late, void *ret)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct thread_state *st;
	bool took = false;

	if ((pid_tgid >> 32) != target_tgid)
		return 0;
	st = bpf_task_storage_get(&threads, bpf_get_current_task_btf(), 0, 0);
	if (st && st->late_pending) {
		/* The session entry of this trap did not run (its probe went first): this return
		 * opens the call its entry left, as of that entry, and records it. A call still open
		 * is one it runs in (nested: glibc's realloc(NULL, n) tail-jumps into malloc), or a
		 * call of the session probe, which counts as abandoned (one a malloc in a signal
		 * handler interrupted is then lost, counted). */
		st->late_pending = 0;
		st->late_inert = 0;
		enter_thread(st, st->late_sp, st->late_size, 0, 0, CALL_PLAIN, false);
	} else if (st && session_call_open(st) && PT_REGS_SP(ctx) >= st->call.sp) {
		/* This trap's call, which the session entry opened: not one a malloc in a signal
		 * handler interrupted, whose frame is above (the stack pointer is back at the
		 * entry's, or one return address above it). This return records it, and tells the
		 * session probe's (`leave_from`), next in this trap: the recorder may detach the
		 * session probe before the trap reaches it. Also before the hand-over: the recorder
		 * detaches it once no call is open, and this thread may be held here until then. */
		st->late_inert = 0;
		st->late_closed = 1;
		took = true;
	} else if (st && st->late_inert) {
		/* Its entry left the call to the session probe, which did not open it (nothing to
		 * record). */
		st->late_inert = 0;
		return 0;
	}
	/* One copy of leave_thread (the compiler made one per path: three times the code for the
	 * verifier). */
	barrier_var(took);
	leave_thread(ctx, st, pid_tgid, (__u64)ret);
	if (took)
		test_hold(HOLD_PAIR_RETURN);
	return 0;
}

/* Attached beside the session probe during the hand-over and detached at once: the detach
 * returns when every uprobe trap under way has ended (kernel/events/uprobes.c,
 * uprobe_unregister_sync: the traps run their handlers under an RCU tasks trace read lock). */
SEC("uprobe")
int handover_settle(struct pt_regs *ctx)
{
	return 0;
}

/* During the hand-over (`malloc_late`): one byte for each of the target's threads with a call
 * of the session probe open that `malloc_exit_late` may not see return, which the session
 * probe must stay attached for (those opened since the hand-over began it does see: the
 * recorder waits for every trap that began before it attached that probe, then begins). */
SEC("iter/task")
int open_session_calls(struct bpf_iter__task *ctx)
{
	struct task_struct *task = ctx->task;
	struct thread_state *st;

	if (!task || task->tgid != target_tgid)
		return 0;
	st = bpf_task_storage_get(&threads, task, 0, 0);
	if (st && session_call_open(st) && !(st->call.flags & CALL_LATE_RETURN))
		bpf_seq_write(ctx->meta->seq, "s", 1);
	return 0;
}

/* Adds the processes the target forks, and those they fork before they exec, to
 * `image_children`. */
SEC("tp_btf/sched_process_fork")
int BPF_PROG(target_forked, struct task_struct *parent, struct task_struct *child)
{
	__u32 ppid = parent->tgid, pid = child->tgid;
	struct image_child c = { .fork_ns = bpf_ktime_get_ns(), .kind = IMAGE_OWN };
	bool shares = child->mm == parent->mm;

	if (pid == ppid)
		return 0; /* a thread */
	if (ppid == target_tgid) {
		if (shares)
			c.kind = IMAGE_SHARED;
	} else {
		struct image_child *p = bpf_map_lookup_elem(&image_children, &ppid);

		if (!p)
			return 0;
		/* Its own copy of an address space with malloc's breakpoints, or (CLONE_VM) its
		 * parent's. */
		if (shares)
			c.kind = p->kind;
	}
	if (bpf_map_update_elem(&image_children, &pid, &c, BPF_ANY))
		__sync_fetch_and_add(&image_children_lost, 1);
	/* Should it fail (the ring full), the recorder has yet to read it: it reads the map then. */
	if (c.kind == IMAGE_OWN)
		bpf_ringbuf_output(&wake, &pid, sizeof(pid), BPF_RB_FORCE_WAKEUP);
	return 0;
}

/* Processes (not threads) the target started while the tracepoints below were attached, in all,
 * and the first STARTED_EXAMPLES of them (`started_examples[i]` for i < started_processes,
 * filled once its slot is taken: pid 0 until then). leak-record follows one process: it writes
 * them to the recording (Record::Children), so that leak-report can say why a wrapper that runs
 * its program without exec left a recording without the program's allocations. */
__u64 started_processes = 0;
struct started_process started_examples[STARTED_EXAMPLES] = {};

#define CLONE_THREAD 0x00010000

/* task_newtask runs in the parent's context (the target's, for its children). */
SEC("tp_btf/task_newtask")
int BPF_PROG(target_started, struct task_struct *task, __u64 clone_flags)
{
	__u64 n;

	if (!is_target() || (clone_flags & CLONE_THREAD))
		return 0;
	n = __sync_fetch_and_add(&started_processes, 1);
	if (n < STARTED_EXAMPLES) {
		bpf_get_current_comm(started_examples[n].comm, COMM_LEN);
		started_examples[n].pid = task->tgid;
	}
	return 0;
}

/* A named child execs: it is named after its new program. Every exec in the system comes here;
 * it costs a load and a compare until the target starts a process, and STARTED_EXAMPLES
 * compares after. */
SEC("tp_btf/sched_process_exec")
int BPF_PROG(started_exec, struct task_struct *p)
{
	__u64 n = started_processes;
	__u32 pid = p->tgid;

	if (n == 0)
		return 0;
	for (int i = 0; i < STARTED_EXAMPLES; i++) {
		if (i < n && started_examples[i].pid == pid) {
			bpf_get_current_comm(started_examples[i].comm, COMM_LEN);
			break;
		}
	}
	return 0;
}

/* What the blocks retired at the target's execs (retire_at_exec) counted for on their stacks,
 * in all: bytes, and blocks (with --sample-bytes, estimates; blocks in units of
 * 2^-SAMPLE_COUNT_SHIFT). Written once per exec, inside an odd `exec_retired_seq` (a
 * sequence lock: one exec at a time writes), so that the recorder reads both of one sweep. */
__u64 exec_retired_seq = 0;
__u64 exec_retired_bytes = 0;
__u64 exec_retired_blocks = 0;
/* One sweep's sums, as it goes (one exec of the target at a time: the kernel lets one thread of
 * a process exec at a time). In .bss rather than on the stack: the verifier then sees them as
 * unknown values, where stack slots the callback adds to made it tell every step apart. */
__u64 sweep_bytes = 0;
__u64 sweep_blocks = 0;

/* One block of the program the target left: no longer tracked, and freed on its stack (only
 * if this took it out of the table: nothing else should, but then it is counted once). */
static long retire_at_exec(struct bpf_map *map, __u64 *addr, struct alloc_info *a, void *ctx)
{
	struct alloc_info block = *a;
	__u64 bytes, blocks;

	if (bpf_map_delete_elem(map, addr))
		return 0;
	weigh(block.key.kind, block.size, &bytes, &blocks);
	account_free(&block.key, bytes, blocks);
	sweep_bytes += bytes;
	sweep_blocks += blocks;
	return 0;
}

/* The target execs: the stack ids handed out from now on are the new program's. (The kernel
 * lets one thread of a process exec at a time.) The old address space is gone, and every block
 * the old program had outstanding with it: they are retired from their stacks here, before the
 * new program's first instruction (PITFALLS 21), rather than left outstanding for ever (and
 * counted as missed frees when the new program's blocks happen to reuse their addresses).
 * Only the target's blocks are tracked, and its other threads are gone by now: nothing adds to
 * `allocs` during the sweep. It visits every bucket of the table (--max-allocs), holding the
 * CPU: here 4 ms at the default size (56 ms at 16 Mi), and 0.25-0.3 us per block it frees
 * (benches/exec.sh, docs/performance.md). */
SEC("tp_btf/sched_process_exec")
int BPF_PROG(target_exec, struct task_struct *p, pid_t old_pid)
{
	if (p->tgid != target_tgid)
		return 0;
	sweep_bytes = 0;
	sweep_blocks = 0;
	bpf_for_each_map_elem(&allocs, retire_at_exec, NULL, 0);
	if (sweep_blocks || sweep_bytes) {
		__sync_fetch_and_add(&exec_retired_seq, 1);
		exec_retired_bytes += sweep_bytes;
		exec_retired_blocks += sweep_blocks;
		__sync_fetch_and_add(&exec_retired_seq, 1);
	}
	if (old_pid != p->tgid) {
		/* Another thread than the main one exec'd: it took the main thread's place, and
		 * the kernel ended the main thread, to which every uprobe is tied (it filters by
		 * the memory of the task it was attached for): none fires in the new program
		 * until the recorder attaches them again. */
		__u32 pid = p->tgid;

		untied_ns = bpf_ktime_get_ns();
		__sync_fetch_and_add(&target_thread_execs, 1);
		bpf_ringbuf_output(&wake, &pid, sizeof(pid), BPF_RB_FORCE_WAKEUP);
	}
	target_execs = ((target_execs >> 32) + 1) << 32 | next_stack_id;
	return 0;
}

/* Before Linux 5.16 the exec'ing thread was `group_exit_task`. */
struct signal_struct___old {
	struct task_struct *group_exit_task;
} __attribute__((preserve_access_index));

/* Whether another thread of p's process is exec'ing (it ends the others, then takes the main
 * thread's place). */
static __always_inline bool exec_under_way(struct task_struct *p)
{
	struct signal_struct *sig = p->signal;

	if (bpf_core_field_exists(sig->group_exec_task))
		return BPF_CORE_READ(sig, group_exec_task) != NULL;
	return BPF_CORE_READ((struct signal_struct___old *)sig, group_exit_task) != NULL;
}

/* The thread the probes are tied to exits while other threads of the target run on
 * (`probes_tid`). Not when another thread's exec ends it: `target_exec` counts that. */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(probes_thread_exit, struct task_struct *p)
{
	__u32 tid = probes_tid ? probes_tid : target_tgid;
	__u32 pid = p->tgid;

	if (pid != target_tgid || p->pid != tid || p->signal->live.counter == 0 ||
	    exec_under_way(p))
		return 0;
	untied_ns = bpf_ktime_get_ns();
	__sync_fetch_and_add(&probes_thread_exits, 1);
	bpf_ringbuf_output(&wake, &pid, sizeof(pid), BPF_RB_FORCE_WAKEUP);
	return 0;
}

/* An exec replaces the process's address space, and the breakpoints with it. */
SEC("tp_btf/sched_process_exec")
int BPF_PROG(image_child_exec, struct task_struct *p)
{
	__u32 pid = p->tgid;

	bpf_map_delete_elem(&image_children, &pid);
	return 0;
}

/* The last thread of a process leaves: its address space goes. */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(image_child_exit, struct task_struct *p)
{
	__u32 pid = p->tgid;

	if (p->signal->live.counter == 0)
		bpf_map_delete_elem(&image_children, &pid);
	return 0;
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
	struct thread_state *st;

	if (!p || !is_target() || retire_block(&allocs, &p, 0))
		return 0;
	/* Not tracked. The block an operator delete of this thread has just retired is that
	 * delete's own call of free (a delete that frees through free after other work; one that
	 * only jumps to free has no probe of its own), not an unknown block. Looked up only here,
	 * off the path of every tracked free. */
	st = bpf_task_storage_get(&threads, bpf_get_current_task_btf(), 0, 0);
	if (st && st->deleted == p) {
		st->deleted = 0;
		count(C_NESTED, 1);
		return 0;
	}
	unknown_free();
	return 0;
}

/* An operator delete that is the allocator's own (jemalloc's, tcmalloc's, mimalloc's sized and
 * aligned deletes free the block themselves, without calling free): retires the block like
 * free_enter, and notes it for the free the delete may call next (free_enter). */
SEC("uprobe")
int BPF_UPROBE(delete_enter, void *ptr)
{
	__u64 p = (__u64)ptr;
	struct thread_state *st;

	if (!p || !is_target())
		return 0;
	switch (retire_block(&allocs, &p, 0)) {
	case 0:
		unknown_free();
		return 0;
	case -1:
		return 0; /* still tracked: the free this delete may call retires it */
	}
	st = bpf_task_storage_get(&threads, bpf_get_current_task_btf(), 0,
				  BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (st)
		st->deleted = p;
	return 0;
}

SEC("uprobe")
int BPF_UPROBE(mmap_enter, void *addr, size_t len, int prot, int flags, int fd)
{
	/* Only anonymous memory is accounted; thread stacks and PROT_NONE reservations are
	 * address space, not memory in use. */
	bool accounted = (flags & MAP_ANONYMOUS) && !(flags & MAP_STACK) && prot != 0;

	enter(ctx, len, 0, 0, accounted ? CALL_MMAP : CALL_IGNORE, false);
	return 0;
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
		retire_block(&allocs, &p, 0);
	} else {
		/* The head of the mapping was unmapped: the rest stays, shorter. */
		struct alloc_info rest = *a;
		__u64 tail = p + len;

		long err = bpf_map_delete_elem(&allocs, &p);

		/* As in retire_block: accounted only once out of the table. */
		if (err) {
			if (err != -ENOENT)
				count(C_FREE_BUSY, 1);
			return 0;
		}
		account_free(&rest.key, len, 0);
		rest.size -= len;
		if (bpf_map_update_elem(&allocs, &tail, &rest, BPF_ANY)) {
			count(C_ALLOCS_FULL, 1);
			count(C_ALLOCS_FULL_BYTES, rest.size);
		}
	}
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
