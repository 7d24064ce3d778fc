//! Writes a recording: the preamble, then one checksummed zstd frame per record.
use std::io::{self, Write};

use crate::{Error, Header, Record};
use crate::{FORMAT_VERSION_MAJOR, FORMAT_VERSION_MINOR, MAGIC, PREAMBLE_FRAME_MAGIC};

/// Compression level: records are small and written every few seconds; level 3 is zstd's default
/// and costs well under a millisecond per snapshot.
const LEVEL: i32 = 3;

/// Writes records to `W`. Each [`Writer::write`] issues one `write_all` of one complete frame, so
/// a crash leaves at most the last frame incomplete.
pub struct Writer<W: Write> {
    out: W,
    compressor: zstd::bulk::Compressor<'static>,
    bytes_written: u64,
}

impl<W: Write> std::fmt::Debug for Writer<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("bytes_written", &self.bytes_written)
            .finish_non_exhaustive()
    }
}

/// The preamble: a zstd skippable frame whose payload is the magic and the format version.
pub(crate) fn preamble() -> Vec<u8> {
    let mut payload = Vec::with_capacity(12);
    payload.extend_from_slice(&MAGIC);
    payload.extend_from_slice(&FORMAT_VERSION_MAJOR.to_le_bytes());
    payload.extend_from_slice(&FORMAT_VERSION_MINOR.to_le_bytes());
    let mut frame = Vec::with_capacity(8 + payload.len());
    frame.extend_from_slice(&PREAMBLE_FRAME_MAGIC.to_le_bytes());
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&payload);
    frame
}

fn new_compressor() -> Result<zstd::bulk::Compressor<'static>, Error> {
    let mut c = zstd::bulk::Compressor::new(LEVEL)?;
    c.set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true))?;
    c.set_parameter(zstd::zstd_safe::CParameter::ContentSizeFlag(true))?;
    Ok(c)
}

fn encode_with(c: &mut zstd::bulk::Compressor<'static>, record: &Record) -> Result<Vec<u8>, Error> {
    let raw = postcard::to_stdvec(record).map_err(|e| Error::Encode(e.to_string()))?;
    if raw.len() > crate::MAX_RECORD_SIZE {
        return Err(Error::Encode(format!(
            "record of {} bytes exceeds the {} byte limit",
            raw.len(),
            crate::MAX_RECORD_SIZE
        )));
    }
    Ok(c.compress(&raw)?)
}

impl<W: Write> Writer<W> {
    /// Writes the preamble and the header record.
    pub fn new(mut out: W, header: &Header) -> Result<Self, Error> {
        let pre = preamble();
        out.write_all(&pre)?;
        let mut w = Writer {
            out,
            compressor: new_compressor()?,
            bytes_written: pre.len() as u64,
        };
        w.write(&Record::Header(header.clone()))?;
        Ok(w)
    }

    /// Appends one record as one frame. On error the frame may be partially written: the caller
    /// can cut the file back to [`Writer::bytes_written`] (see the recorder).
    pub fn write(&mut self, record: &Record) -> Result<u64, Error> {
        let frame = encode_with(&mut self.compressor, record)?;
        self.out.write_all(&frame)?;
        self.bytes_written += frame.len() as u64;
        Ok(frame.len() as u64)
    }

    /// Bytes of complete frames written so far.
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    /// Flushes the underlying writer.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// The underlying writer.
    pub fn get_ref(&self) -> &W {
        &self.out
    }

    /// Gives back the underlying writer.
    pub fn into_inner(self) -> W {
        self.out
    }
}
