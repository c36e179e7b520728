//! Kafka's records (v2) inside a batch: encoding, decoding, and the
//! zigzag varints they are made of.
//!
//! A record is `length` (varint: the bytes after it), `attributes` (i8,
//! unused: 0), `timestamp_delta` (varlong, from the batch's base
//! timestamp), `offset_delta` (varint), `key_length` (varint, -1: no key)
//! and key, `value_length` (varint, -1: no value) and value, `header_count`
//! (varint) and that many headers: `key_length` (varint), key,
//! `value_length` (varint, -1: none), value. Varints are zigzag-encoded,
//! at most 5 bytes for 32 bits and 10 for 64, as Kafka reads them.

use super::{BatchError, BatchHeader, RECORD_HEADERS_MAX};

/// One header of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header<'a> {
    /// The header's key.
    pub key: &'a [u8],
    /// The header's value, or none.
    pub value: Option<&'a [u8]>,
}

/// A record to append.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// The record's timestamp, in ms since the epoch (the producer's).
    pub timestamp_ms: i64,
    /// The key, used for partitioning; none for keyless records.
    pub key: Option<&'a [u8]>,
    /// The value; none is a tombstone.
    pub value: Option<&'a [u8]>,
    /// Headers.
    pub headers: &'a [Header<'a>],
}

impl<'a> Record<'a> {
    /// A record with a value, no key and no headers.
    pub fn value(timestamp_ms: i64, value: &'a [u8]) -> Self {
        Self {
            timestamp_ms,
            key: None,
            value: Some(value),
            headers: &[],
        }
    }

    /// A record with a key and a value.
    pub fn keyed(timestamp_ms: i64, key: &'a [u8], value: &'a [u8]) -> Self {
        Self {
            timestamp_ms,
            key: Some(key),
            value: Some(value),
            headers: &[],
        }
    }
}

/// A decoded record of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordView<'a> {
    /// The record's offset in the log.
    pub offset: u64,
    /// The record's timestamp.
    pub timestamp_ms: i64,
    /// The key.
    pub key: Option<&'a [u8]>,
    /// The value.
    pub value: Option<&'a [u8]>,
    /// Bytes the record takes in its (uncompressed) batch, length prefix
    /// included.
    pub encoded_bytes: usize,
    headers: &'a [u8],
    header_count: u32,
}

impl<'a> RecordView<'a> {
    /// The record's headers.
    pub fn headers(&self) -> HeaderIter<'a> {
        HeaderIter {
            cursor: Cursor {
                bytes: self.headers,
                position: 0,
            },
            remaining: self.header_count,
        }
    }

    /// How many headers the record has.
    pub fn header_count(&self) -> u32 {
        self.header_count
    }
}

/// Iterator over a record's headers (checked when the record was decoded).
#[derive(Clone, Debug)]
pub struct HeaderIter<'a> {
    cursor: Cursor<'a>,
    remaining: u32,
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = Header<'a>;

    fn next(&mut self) -> Option<Header<'a>> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        read_header(&mut self.cursor).ok()
    }
}

/// Iterator over a batch's records; yields an error and stops at the first
/// malformed one.
#[derive(Clone, Debug)]
pub struct Records<'a> {
    bytes: &'a [u8],
    position: usize,
    remaining: u32,
    base_offset: u64,
    base_timestamp: i64,
    last_offset_delta: u32,
    last_delta: Option<u32>,
}

impl<'a> Records<'a> {
    /// The records in `bytes` (uncompressed) of the batch with `header`.
    pub(crate) fn new(header: &BatchHeader, bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            position: 0,
            remaining: header.record_count,
            base_offset: header.base_offset,
            base_timestamp: header.base_timestamp,
            last_offset_delta: header.last_offset_delta,
            last_delta: None,
        }
    }

    /// Bytes decoded so far.
    pub fn position(&self) -> usize {
        self.position
    }

    /// Whether every byte was decoded.
    pub fn at_end(&self) -> bool {
        self.position == self.bytes.len()
    }

    fn decode_one(&mut self) -> Result<RecordView<'a>, BatchError> {
        let mut cursor = Cursor {
            bytes: self.bytes,
            position: self.position,
        };
        let length = usize::try_from(cursor.varint()?)
            .map_err(|_| cursor.malformed("negative record length"))?;
        let body_start = cursor.position;
        let Some(body_end) = body_start
            .checked_add(length)
            .filter(|end| *end <= self.bytes.len())
        else {
            return Err(cursor.malformed("record length runs past the records"));
        };
        let mut cursor = Cursor {
            bytes: &self.bytes[..body_end],
            position: body_start,
        };
        let _attributes = cursor.byte()?;
        let timestamp_delta = cursor.varlong()?;
        let offset_delta = u32::try_from(cursor.varint()?)
            .map_err(|_| cursor.malformed("negative offset delta"))?;
        if self.last_delta.is_some_and(|last| offset_delta <= last) {
            return Err(cursor.malformed("offset deltas do not increase"));
        }
        if offset_delta > self.last_offset_delta {
            return Err(cursor.malformed("offset delta beyond the batch's last offset delta"));
        }
        let key = cursor.nullable_bytes()?;
        let value = cursor.nullable_bytes()?;
        let Some(header_count) = u32::try_from(cursor.varint()?)
            .ok()
            .filter(|count| *count <= RECORD_HEADERS_MAX)
        else {
            return Err(cursor.malformed("negative header count or above RECORD_HEADERS_MAX"));
        };
        let headers_start = cursor.position;
        for _ in 0..header_count {
            read_header(&mut cursor)?;
        }
        let headers = &self.bytes[headers_start..cursor.position];
        if cursor.position != body_end {
            return Err(cursor.malformed("record length does not match its fields"));
        }
        let Some(timestamp_ms) = self.base_timestamp.checked_add(timestamp_delta) else {
            return Err(cursor.malformed("timestamp overflows"));
        };
        self.last_delta = Some(offset_delta);
        let encoded_bytes = body_end - self.position;
        self.position = body_end;
        Ok(RecordView {
            offset: self.base_offset + u64::from(offset_delta),
            timestamp_ms,
            key,
            value,
            encoded_bytes,
            headers,
            header_count,
        })
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<RecordView<'a>, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        let result = self.decode_one();
        match &result {
            Ok(_) => self.remaining -= 1,
            Err(_) => self.remaining = 0,
        }
        Some(result)
    }
}

fn read_header<'a>(cursor: &mut Cursor<'a>) -> Result<Header<'a>, BatchError> {
    let key_length = usize::try_from(cursor.varint()?)
        .map_err(|_| cursor.malformed("negative header key length"))?;
    let key = cursor.take(key_length)?;
    let value = cursor.nullable_bytes()?;
    Ok(Header { key, value })
}

/// Bytes `record` takes in a batch, its length prefix included, with the
/// given deltas.
pub fn record_size(record: &Record<'_>, timestamp_delta: i64, offset_delta: u32) -> usize {
    let body = record_body_size(record, timestamp_delta, offset_delta);
    varint_size(body as i64) + body
}

fn record_body_size(record: &Record<'_>, timestamp_delta: i64, offset_delta: u32) -> usize {
    let mut size = 1 + varint_size(timestamp_delta) + varint_size(i64::from(offset_delta));
    size += nullable_size(record.key) + nullable_size(record.value);
    size += varint_size(record.headers.len() as i64);
    for header in record.headers {
        size += varint_size(header.key.len() as i64) + header.key.len();
        size += nullable_size(header.value);
    }
    size
}

/// Checks the limits of the format on one record.
pub(super) fn check_record(record: &Record<'_>) -> Result<(), BatchError> {
    if record.headers.len() > RECORD_HEADERS_MAX as usize {
        return Err(BatchError::Unencodable {
            reason: "more headers than RECORD_HEADERS_MAX",
        });
    }
    let fields = [record.key, record.value]
        .into_iter()
        .flatten()
        .chain(record.headers.iter().map(|header| header.key))
        .chain(record.headers.iter().filter_map(|header| header.value));
    for field in fields {
        if field.len() > i32::MAX as usize / 2 {
            return Err(BatchError::Unencodable {
                reason: "a key, value or header larger than a record may be",
            });
        }
    }
    Ok(())
}

/// Writes one record (checked by [`check_record`]) into reserved memory.
pub(super) fn encode_record(
    record: &Record<'_>,
    timestamp_delta: i64,
    offset_delta: u32,
    out: &mut Vec<u8>,
) {
    let body = record_body_size(record, timestamp_delta, offset_delta);
    put_varint(out, body as i64);
    out.push(0);
    put_varint(out, timestamp_delta);
    put_varint(out, i64::from(offset_delta));
    put_nullable(out, record.key);
    put_nullable(out, record.value);
    put_varint(out, record.headers.len() as i64);
    for header in record.headers {
        put_varint(out, header.key.len() as i64);
        out.extend_from_slice(header.key);
        put_nullable(out, header.value);
    }
}

fn nullable_size(bytes: Option<&[u8]>) -> usize {
    match bytes {
        None => varint_size(-1),
        Some(bytes) => varint_size(bytes.len() as i64) + bytes.len(),
    }
}

fn put_nullable(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varint(out, -1),
        Some(bytes) => {
            put_varint(out, bytes.len() as i64);
            out.extend_from_slice(bytes);
        }
    }
}

fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)).cast_unsigned()
}

fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

/// Bytes of the zigzag varint of `value`.
pub fn varint_size(value: i64) -> usize {
    let mut value = zigzag(value);
    let mut size = 1;
    while value >= 0x80 {
        value >>= 7;
        size += 1;
    }
    size
}

/// Appends the zigzag varint of `value`.
pub fn put_varint(out: &mut Vec<u8>, value: i64) {
    let mut value = zigzag(value);
    while value >= 0x80 {
        out.push((value & 0x7f) as u8 | 0x80);
        value >>= 7;
    }
    out.push((value & 0x7f) as u8);
}

#[derive(Clone, Debug)]
struct Cursor<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Cursor<'a> {
    fn malformed(&self, reason: &'static str) -> BatchError {
        BatchError::Malformed {
            position: self.position,
            reason,
        }
    }

    fn byte(&mut self) -> Result<u8, BatchError> {
        let Some(byte) = self.bytes.get(self.position) else {
            return Err(self.malformed("record ends early"));
        };
        self.position += 1;
        Ok(*byte)
    }

    /// An unsigned varint of at most `max_bytes` bytes.
    #[inline]
    fn unsigned(&mut self, max_bytes: usize) -> Result<u64, BatchError> {
        // Most varints of a record (lengths, deltas) fit one byte.
        if let Some(byte) = self.bytes.get(self.position) {
            if *byte < 0x80 {
                self.position += 1;
                return Ok(u64::from(*byte));
            }
        }
        let mut value = 0u64;
        for index in 0..max_bytes {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7f) << (7 * index);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.malformed("varint longer than its type allows"))
    }

    /// A zigzag varint that must fit 32 bits, as Kafka's `readVarint`.
    fn varint(&mut self) -> Result<i64, BatchError> {
        let raw = self.unsigned(5)?;
        let raw = u32::try_from(raw).map_err(|_| self.malformed("varint overflows 32 bits"))?;
        Ok(unzigzag(u64::from(raw)))
    }

    /// A zigzag varlong, as Kafka's `readVarlong`.
    fn varlong(&mut self) -> Result<i64, BatchError> {
        let start = self.position;
        let raw = self.unsigned(10)?;
        if self.position - start == 10 && self.bytes[self.position - 1] > 1 {
            return Err(self.malformed("varlong overflows 64 bits"));
        }
        Ok(unzigzag(raw))
    }

    fn take(&mut self, length: usize) -> Result<&'a [u8], BatchError> {
        let Some(end) = self
            .position
            .checked_add(length)
            .filter(|end| *end <= self.bytes.len())
        else {
            return Err(self.malformed("field runs past the record"));
        };
        let bytes = &self.bytes[self.position..end];
        self.position = end;
        Ok(bytes)
    }

    fn nullable_bytes(&mut self) -> Result<Option<&'a [u8]>, BatchError> {
        match self.varint()? {
            -1 => Ok(None),
            length => match usize::try_from(length) {
                Ok(length) => Ok(Some(self.take(length)?)),
                Err(_) => Err(self.malformed("negative length other than -1")),
            },
        }
    }
}
