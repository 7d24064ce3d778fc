//! A fast path for decoding snapshot records, which are almost all of a recording's bytes.
//!
//! serde's generic machinery spends about 200 instructions on each [`StackStats`] (six postcard
//! varints); this module reads the counters of a snapshot with a plain loop over the same wire
//! format, and leaves every other field to postcard. It is an optimisation only: whenever the
//! bytes are anything but a well-formed snapshot it gives up (`None`) and the caller decodes the
//! record with postcard, which then accepts it or reports the error. A record it does decode
//! equals what postcard decodes from the same bytes (tested in `tests`, and against random and
//! damaged records).
use serde::Deserialize;

use crate::records::{
    AllocKind, Losses, MapEntry, Module, ProcMemory, Record, Snapshot, SnapshotCost, Stack,
    StackStats,
};

/// The variant index of [`Record::Snapshot`] (postcard writes an enum's variant index first).
const SNAPSHOT_TAG: u32 = 1;

/// The fields of [`Snapshot`] before `stats`, in wire order (postcard encodes a struct as its
/// fields in order, so this struct reads the same bytes).
#[derive(Deserialize)]
struct Head {
    seq: u32,
    wall_ns: u64,
    mono_ns: u64,
    new_modules: Vec<Module>,
    new_stacks: Vec<Stack>,
}

/// The fields of [`Snapshot`] after `stats`, in wire order.
#[derive(Deserialize)]
struct Tail {
    maps: Option<Vec<MapEntry>>,
    memory: Option<ProcMemory>,
    losses: Losses,
    cost: SnapshotCost,
}

/// [`AllocKind`] by variant index.
const KINDS: [AllocKind; 5] = [
    AllocKind::Heap,
    AllocKind::Mmap,
    AllocKind::KernelSlab,
    AllocKind::KernelPage,
    AllocKind::KernelPercpu,
];

/// Postcard's varints: 7 bits a byte, least significant first, at most `MAX` bytes, and the
/// last byte may not carry bits beyond the type's width.
struct Varints<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Varints<'_> {
    /// The next varint of at most `MAX` bytes whose last byte, if it is the `MAX`th, is at most
    /// `last_max`. (A branch-free version, one 8-byte load and shifts, was slower here.)
    #[inline(always)]
    fn next<const MAX: usize>(&mut self, last_max: u8) -> Option<u64> {
        let mut out = 0u64;
        for i in 0..MAX {
            let byte = *self.bytes.get(self.pos)?;
            self.pos += 1;
            out |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return (i < MAX - 1 || byte <= last_max).then_some(out);
            }
        }
        None
    }

    #[inline(always)]
    fn u32(&mut self) -> Option<u32> {
        // 5 bytes; the last holds the top 4 bits.
        self.next::<5>(0x0f).map(|v| v as u32)
    }

    #[inline(always)]
    fn u64(&mut self) -> Option<u64> {
        // 10 bytes; the last holds the top bit.
        self.next::<10>(0x01)
    }
}

/// Decodes `raw` if it is a well-formed snapshot record; `None` for anything else.
pub(crate) fn snapshot(raw: &[u8]) -> Option<Record> {
    let mut v = Varints { bytes: raw, pos: 0 };
    if v.u32()? != SNAPSHOT_TAG {
        return None;
    }
    let (head, rest) = postcard::take_from_bytes::<Head>(&raw[v.pos..]).ok()?;
    let mut v = Varints {
        bytes: rest,
        pos: 0,
    };
    // A sequence's length is a usize varint; every entry takes at least six bytes.
    let n = usize::try_from(v.u64()?).ok()?;
    if n > rest.len() / 6 {
        return None;
    }
    let mut stats = Vec::with_capacity(n);
    for _ in 0..n {
        let stack = v.u32()?;
        let kind = *KINDS.get(v.u32()? as usize)?;
        stats.push(StackStats {
            stack,
            kind,
            alloc_bytes: v.u64()?,
            alloc_count: v.u64()?,
            free_bytes: v.u64()?,
            free_count: v.u64()?,
        });
    }
    let (tail, _) = postcard::take_from_bytes::<Tail>(&rest[v.pos..]).ok()?;
    Some(Record::Snapshot(Snapshot {
        seq: head.seq,
        wall_ns: head.wall_ns,
        mono_ns: head.mono_ns,
        new_modules: head.new_modules,
        new_stacks: head.new_stacks,
        stats,
        maps: tail.maps,
        memory: tail.memory,
        losses: tail.losses,
        cost: tail.cost,
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::records::Frame;

    /// splitmix64: a reproducible stream of test values.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        /// Values of every varint length, including the extremes.
        fn value(&mut self) -> u64 {
            match self.next() % 4 {
                0 => 0,
                1 => u64::MAX >> (self.next() % 64),
                _ => self.next() >> (self.next() % 64),
            }
        }
    }

    fn snapshot_record(rng: &mut Rng, entries: usize) -> Record {
        Record::Snapshot(Snapshot {
            seq: rng.value() as u32,
            wall_ns: rng.value(),
            mono_ns: rng.value(),
            new_modules: vec![Module {
                id: 1,
                path: "/usr/lib/libx.so".into(),
                build_id: Some(vec![1, 2, 3]),
                file_size: rng.value(),
            }],
            new_stacks: vec![Stack {
                id: rng.value() as u32,
                frames: vec![Frame {
                    addr: rng.value(),
                    module: Some(1),
                    offset: rng.value(),
                }],
                truncated: false,
                lost: None,
            }],
            stats: (0..entries)
                .map(|_| StackStats {
                    stack: rng.value() as u32,
                    kind: KINDS[(rng.next() % 5) as usize],
                    alloc_bytes: rng.value(),
                    alloc_count: rng.value(),
                    free_bytes: rng.value(),
                    free_count: rng.value(),
                })
                .collect(),
            maps: rng.next().is_multiple_of(2).then(Vec::new),
            memory: Some(ProcMemory::default()),
            losses: Losses::default(),
            cost: SnapshotCost::default(),
        })
    }

    #[test]
    fn kinds_are_in_variant_order() {
        for (i, kind) in KINDS.iter().enumerate() {
            assert_eq!(postcard::to_allocvec(kind).unwrap(), [i as u8]);
        }
        // A sixth kind would not be read by the fast path (nor by postcard, yet).
        assert!(postcard::from_bytes::<AllocKind>(&[5]).is_err());
    }

    #[test]
    fn decodes_what_postcard_decodes() {
        let mut rng = Rng(7);
        for entries in [0, 1, 2, 17, 1000] {
            let record = snapshot_record(&mut rng, entries);
            let raw = postcard::to_allocvec(&record).unwrap();
            assert_eq!(snapshot(&raw).unwrap(), record);
        }
    }

    #[test]
    fn other_records_are_left_to_postcard() {
        let end = Record::End(crate::records::End {
            wall_ns: 1,
            mono_ns: 2,
            reason: crate::records::EndReason::Duration,
            snapshots: 3,
        });
        assert!(snapshot(&postcard::to_allocvec(&end).unwrap()).is_none());
        assert!(snapshot(&[]).is_none());
    }

    /// Whatever the damage (a changed byte, a cut), the fast path either gives up or decodes
    /// exactly what postcard decodes; it never accepts what postcard refuses.
    #[test]
    fn damaged_records_decode_as_postcard_does_or_not_at_all() {
        let mut rng = Rng(11);
        let mut decoded = 0;
        for round in 0..3000 {
            let record = snapshot_record(&mut rng, 1 + round % 5);
            let mut raw = postcard::to_allocvec(&record).unwrap();
            match rng.next() % 3 {
                0 => raw.truncate((rng.next() as usize) % raw.len()),
                1 => {
                    let i = (rng.next() as usize) % raw.len();
                    raw[i] = rng.next() as u8;
                }
                _ => {
                    let i = (rng.next() as usize) % raw.len();
                    raw[i] |= 0x80;
                }
            }
            let reference = postcard::from_bytes::<Record>(&raw).ok();
            if let Some(fast) = snapshot(&raw) {
                assert_eq!(Some(fast), reference, "round {round}");
                decoded += 1;
            }
        }
        // Most single-byte changes leave a valid record: the fast path must have been used.
        assert!(decoded > 500, "{decoded}");
    }

    #[test]
    fn varints_refuse_what_postcard_refuses() {
        // u32: five bytes, the last at most 0x0f.
        let mut v = Varints {
            bytes: &[0xff, 0xff, 0xff, 0xff, 0x0f],
            pos: 0,
        };
        assert_eq!(v.u32(), Some(u32::MAX));
        for bad in [&[0xff, 0xff, 0xff, 0xff, 0x10][..], &[0x80; 5], &[0x80]] {
            assert_eq!(Varints { bytes: bad, pos: 0 }.u32(), None, "{bad:?}");
        }
        // The same, far from the end (the 8-byte path), and every length of u64 both ways.
        let mut padded = vec![0xff, 0xff, 0xff, 0xff, 0x10];
        padded.extend_from_slice(&[0; 16]);
        assert_eq!(
            Varints {
                bytes: &padded,
                pos: 0
            }
            .u32(),
            None
        );
        padded[4] = 0x0f;
        assert_eq!(
            Varints {
                bytes: &padded,
                pos: 0
            }
            .u32(),
            Some(u32::MAX)
        );
        for bits in 0..64 {
            let value = (1u64 << bits) | (bits as u64);
            let mut raw = postcard::to_allocvec(&value).unwrap();
            let len = raw.len();
            for padding in [0, 16] {
                raw.resize(len + padding, 0xff);
                let mut v = Varints {
                    bytes: &raw,
                    pos: 0,
                };
                assert_eq!(v.u64(), Some(value), "{bits} bits, padding {padding}");
                assert_eq!(v.pos, len);
            }
        }
        let mut max = vec![0xff; 9];
        max.push(0x01);
        assert_eq!(
            Varints {
                bytes: &max,
                pos: 0
            }
            .u64(),
            Some(u64::MAX)
        );
        max[9] = 0x02;
        assert_eq!(
            Varints {
                bytes: &max,
                pos: 0
            }
            .u64(),
            None
        );
    }
}
