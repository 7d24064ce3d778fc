//! Streaming reader: returns every complete record, then reports a damaged or truncated tail as a
//! final error item instead of failing the whole file. Memory is bounded by [`MAX_RECORD_SIZE`].
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use crate::{End, Error, Record, TailProblem};
use crate::{FORMAT_VERSION_MAJOR, MAGIC, PREAMBLE_FRAME_MAGIC};

/// The largest decompressed record a reader accepts (and a writer writes), bytes. Bounds the
/// memory a hostile file can make the reader allocate.
pub const MAX_RECORD_SIZE: usize = 64 << 20;

/// The decompression buffer is kept for the next record up to this capacity, bytes.
const KEEP_BUFFER: usize = 1 << 20;

/// Number of `Record` variants this reader knows; higher tags are skipped. (`tests`
/// `every_record_variant_is_known` matches on every variant: a new one does not compile there
/// until this is raised.)
const KNOWN_RECORD_VARIANTS: u64 = 10;

/// Counts bytes pulled from the file so record offsets can be reported.
#[derive(Debug)]
struct Counting<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

/// One zstd decompression context, reused for every record: creating one per record (a
/// recording has one frame per snapshot) cost more than decoding small snapshots.
struct Context(zstd::zstd_safe::DCtx<'static>);

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("zstd DCtx")
    }
}

/// Reads a recording record by record.
#[derive(Debug)]
pub struct Reader<R: Read> {
    inner: BufReader<Counting<R>>,
    context: Context,
    version: (u16, u16),
    done: bool,
    skipped_unknown: u64,
    records: u64,
    last_len: usize,
    /// The decompression buffer, reused from record to record (unless a record made it large).
    raw: Vec<u8>,
}

impl Reader<File> {
    /// Opens a recording file and checks its preamble.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        Reader::new(File::open(path)?)
    }
}

impl<R: Read> Reader<R> {
    /// Wraps a byte stream and checks its preamble (magic and major version).
    pub fn new(inner: R) -> Result<Self, Error> {
        let mut inner = BufReader::with_capacity(256 << 10, Counting { inner, count: 0 });
        let mut head = [0u8; 8];
        let got = read_up_to(&mut inner, &mut head)?;
        let magic = PREAMBLE_FRAME_MAGIC.to_le_bytes();
        // A recording cut within its preamble: a start of one, not something else.
        let cut = |at: usize| Error::Tail {
            offset: at as u64,
            problem: TailProblem::Truncated,
        };
        if got < 8 && got > 0 && head[..got.min(4)] == magic[..got.min(4)] {
            return Err(cut(got));
        }
        if got < 8 || head[..4] != magic {
            return Err(Error::NotARecording {
                found: describe_start(&head[..got]),
            });
        }
        let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
        if !(12..=4096).contains(&len) {
            return Err(Error::NotARecording {
                found: format!("preamble of {len} bytes"),
            });
        }
        let mut payload = vec![0u8; len];
        let got = read_up_to(&mut inner, &mut payload)?;
        if got < len && payload[..got.min(8)] == MAGIC[..got.min(8)] {
            return Err(cut(8 + got));
        }
        if got < len || payload[..8] != MAGIC {
            return Err(Error::NotARecording {
                found: "a zstd skippable frame without the leak-record magic".into(),
            });
        }
        let major = u16::from_le_bytes([payload[8], payload[9]]);
        let minor = u16::from_le_bytes([payload[10], payload[11]]);
        if major != FORMAT_VERSION_MAJOR {
            return Err(Error::UnsupportedVersion { major, minor });
        }
        Ok(Reader {
            inner,
            context: Context(zstd::zstd_safe::DCtx::create()),
            version: (major, minor),
            done: false,
            skipped_unknown: 0,
            records: 0,
            last_len: 0,
            raw: Vec::new(),
        })
    }

    /// Format version (major, minor) of the file.
    pub fn version(&self) -> (u16, u16) {
        self.version
    }

    /// Records of unknown (newer) kinds that were skipped.
    pub fn skipped_unknown(&self) -> u64 {
        self.skipped_unknown
    }

    /// Decompressed size, bytes, of the record last returned by [`Reader::next_record`] (0
    /// after an error item): a measure of the memory the decoded record holds.
    pub fn last_record_len(&self) -> usize {
        self.last_len
    }

    /// Byte offset of the next unread record.
    pub fn offset(&self) -> u64 {
        self.inner.get_ref().count - self.inner.buffer().len() as u64
    }

    /// The next record; `None` at a clean end of file. After an error item, always `None`.
    pub fn next_record(&mut self) -> Option<Result<Record, Error>> {
        self.last_len = 0;
        if self.done {
            return None;
        }
        loop {
            let result = self.read_one();
            match result {
                Ok(Some(Some(record))) => {
                    self.records += 1;
                    return Some(Ok(record));
                }
                Ok(Some(None)) => continue, // skipped frame or unknown record kind
                Ok(None) => {
                    self.done = true;
                    return None;
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
    }

    /// Ok(None): end of file. Ok(Some(None)): something skipped. Ok(Some(Some(r))): a record.
    fn read_one(&mut self) -> Result<Option<Option<Record>>, Error> {
        let offset = self.offset();
        let tail = |problem| Error::Tail { offset, problem };
        let mut magic = [0u8; 4];
        let got = read_up_to(&mut self.inner, &mut magic)?;
        if got == 0 {
            return Ok(None);
        }
        if got < 4 {
            return Err(tail(TailProblem::Truncated));
        }
        let m = u32::from_le_bytes(magic);
        if m & 0xFFFF_FFF0 == SKIPPABLE_MAGIC {
            // A skippable frame: reserved for future use; skip it.
            let mut len = [0u8; 4];
            if read_up_to(&mut self.inner, &mut len)? < 4 {
                return Err(tail(TailProblem::Truncated));
            }
            let len = u64::from(u32::from_le_bytes(len));
            let skipped = io::copy(&mut (&mut self.inner).take(len), &mut io::sink())?;
            if skipped < len {
                return Err(tail(TailProblem::Truncated));
            }
            return Ok(Some(None));
        }
        let mut raw = std::mem::take(&mut self.raw);
        raw.clear();
        {
            let source = (&magic[..]).chain(&mut self.inner);
            // `with_context` resets the context's session, so nothing of a previous (perhaps
            // damaged) frame carries over.
            let mut decoder =
                zstd::stream::read::Decoder::with_context(source, &mut self.context.0)
                    .single_frame();
            let limit = MAX_RECORD_SIZE as u64 + 1;
            match (&mut decoder).take(limit).read_to_end(&mut raw) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Err(tail(TailProblem::Truncated))
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e.into()),
                Err(e) => return Err(tail(TailProblem::Corrupt(e.to_string()))),
            }
            if raw.len() > MAX_RECORD_SIZE {
                return Err(tail(TailProblem::TooLarge));
            }
        }
        let result = match decode(&raw) {
            Ok(record) => {
                self.last_len = raw.len();
                Ok(Some(Some(record)))
            }
            Err(e) => {
                if leading_varint(&raw).is_some_and(|tag| tag >= KNOWN_RECORD_VARIANTS) {
                    self.skipped_unknown += 1;
                    Ok(Some(None))
                } else {
                    Err(tail(TailProblem::Undecodable(e.to_string())))
                }
            }
        };
        if raw.capacity() <= KEEP_BUFFER {
            self.raw = raw;
        }
        result
    }
}

/// The [`End`] record of a recording that ended cleanly, found without decoding the rest: the
/// frames are walked by their headers (a zstd frame's block headers give its length), and only
/// the last frame is decompressed. About one read of the file from the page cache; a reader
/// uses it to size what it keeps before it starts (`End::snapshots`).
///
/// None when the file cannot be read, does not end in an `End` record, or is not a whole
/// sequence of frames: a recording cut short by a crash, or one still being written.
pub fn find_end(path: impl AsRef<Path>) -> Option<End> {
    // No frame of a valid recording is longer than the largest record, compressed.
    let max_frame = zstd::zstd_safe::compress_bound(MAX_RECORD_SIZE) + 4096;
    let mut file = File::open(path).ok()?;
    let mut buf: Vec<u8> = Vec::new();
    // In `buf`: where the unwalked bytes start, and the last data frame walked (start, length).
    let mut pos = 0;
    let mut last: Option<(usize, usize)> = None;
    let mut eof = false;
    loop {
        let rest = &buf[pos..];
        let frame = if rest.len() < 8 {
            None
        } else if u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) & 0xFFFF_FFF0
            == SKIPPABLE_MAGIC
        {
            let len = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
            (rest.len() >= 8 + len).then_some((8 + len, false))
        } else {
            zstd::zstd_safe::find_frame_compressed_size(rest)
                .ok()
                .filter(|&len| len <= rest.len())
                .map(|len| (len, true))
        };
        match frame {
            Some((len, data)) => {
                if data {
                    last = Some((pos, len));
                }
                pos += len;
            }
            None if eof => break,
            None if buf.len() - pos > max_frame => return None,
            None => {
                // Keep the last data frame and the unwalked bytes; read more.
                let keep = last.map_or(pos, |(start, _)| start.min(pos));
                buf.drain(..keep);
                pos -= keep;
                last = last.map(|(start, len)| (start - keep, len));
                let want = (buf.len() - pos).max(4 << 20);
                eof = (&mut file).take(want as u64).read_to_end(&mut buf).ok()? == 0;
            }
        }
    }
    // Anything left over is a partial frame: not a clean end.
    if pos != buf.len() {
        return None;
    }
    let (start, len) = last?;
    let raw = zstd::bulk::decompress(&buf[start..start + len], MAX_RECORD_SIZE).ok()?;
    match postcard::from_bytes::<Record>(&raw).ok()? {
        Record::End(end) => Some(end),
        _ => None,
    }
}

/// Any of the 16 zstd skippable-frame magics, masked (`magic & 0xFFFF_FFF0`).
const SKIPPABLE_MAGIC: u32 = 0x184D_2A50;

/// Decodes one record's bytes: snapshots through the fast path when it applies, everything
/// else (and anything the fast path declines) through postcard.
fn decode(raw: &[u8]) -> Result<Record, postcard::Error> {
    match crate::fast::snapshot(raw) {
        Some(record) => Ok(record),
        None => postcard::from_bytes::<Record>(raw),
    }
}

impl<R: Read> Iterator for Reader<R> {
    type Item = Result<Record, Error>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_record()
    }
}

/// Reads until `buf` is full or EOF; returns the bytes read.
fn read_up_to(r: &mut impl BufRead, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn leading_varint(raw: &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for (i, b) in raw.iter().take(10).enumerate() {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn describe_start(head: &[u8]) -> String {
    if head.is_empty() {
        return "the file is empty".into();
    }
    if head.len() >= 4 && head[..4] == [0x28, 0xb5, 0x2f, 0xfd] {
        return "a plain zstd file without the leak-record preamble".into();
    }
    let text = head
        .iter()
        .all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace());
    if text {
        return "it starts with text; memleak text logs are read by leak-report".into();
    }
    format!("it starts with bytes {head:02x?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tag postcard writes for each variant: the last is `KNOWN_RECORD_VARIANTS - 1`.
    fn tag(record: &Record) -> u64 {
        match record {
            Record::Header(_) => 0,
            Record::Snapshot(_) => 1,
            Record::Bundle(_) => 2,
            Record::End(_) => 3,
            Record::Kernel(_) => 4,
            Record::Sampling(_) => 5,
            Record::Probes(_) => 6,
            Record::Children(_) => 7,
            Record::Unseen(_) => 8,
            Record::Process(_) => 9,
        }
    }

    #[test]
    fn every_record_variant_is_known() {
        let late = Record::Process(crate::Process::default());
        let bytes = postcard::to_allocvec(&late).unwrap();
        assert_eq!(u64::from(bytes[0]), tag(&late));
        assert_eq!(tag(&late), KNOWN_RECORD_VARIANTS - 1);
    }
}
