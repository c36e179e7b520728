//! Stream IDs: `ms-seq`, two `u64`s compared as one 128-bit number, and the
//! ways commands spell them.

use std::fmt;

use crate::reply::Error;

/// A stream entry ID.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId {
    /// Milliseconds part.
    pub ms: u64,
    /// Sequence part.
    pub seq: u64,
}

impl StreamId {
    /// `0-0`.
    pub const MIN: StreamId = StreamId { ms: 0, seq: 0 };
    /// `18446744073709551615-18446744073709551615`.
    pub const MAX: StreamId = StreamId {
        ms: u64::MAX,
        seq: u64::MAX,
    };

    /// An ID from its parts.
    pub const fn new(ms: u64, seq: u64) -> Self {
        Self { ms, seq }
    }

    /// Whether this is `0-0`.
    pub fn is_zero(self) -> bool {
        self == Self::MIN
    }

    /// The next ID, or `None` at `MAX`.
    pub fn next(self) -> Option<Self> {
        if self.seq < u64::MAX {
            Some(Self::new(self.ms, self.seq + 1))
        } else if self.ms < u64::MAX {
            Some(Self::new(self.ms + 1, 0))
        } else {
            None
        }
    }

    /// The previous ID, or `None` at `MIN`.
    pub fn prev(self) -> Option<Self> {
        if self.seq > 0 {
            Some(Self::new(self.ms, self.seq - 1))
        } else if self.ms > 0 {
            Some(Self::new(self.ms - 1, u64::MAX))
        } else {
            None
        }
    }

    /// Appends the `ms-seq` text to `out`.
    pub fn write_to(self, out: &mut Vec<u8>) {
        write_u64(out, self.ms);
        out.push(b'-');
        write_u64(out, self.seq);
    }

    /// The `ms-seq` text.
    pub fn to_bytes(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(41);
        self.write_to(&mut out);
        out
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}-{}", self.ms, self.seq)
    }
}

const DIGIT_PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// Appends the decimal text of `value`, two digits at a time.
// Each cast takes a value below 100 (a digit pair) or below 10.
#[allow(clippy::cast_possible_truncation)]
pub(crate) fn write_u64(out: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    while value >= 100 {
        let pair = (value % 100) as usize * 2;
        value /= 100;
        at -= 2;
        digits[at..at + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    }
    if value >= 10 {
        let pair = value as usize * 2;
        at -= 2;
        digits[at..at + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    } else {
        at -= 1;
        digits[at] = b'0' + value as u8;
    }
    out.extend_from_slice(&digits[at..]);
}

/// Parses an unsigned decimal the way Redis's `string2ull` does: digits only,
/// no sign, no leading `+`, at most 20 digits, no overflow.
pub(crate) fn parse_u64(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() || bytes.len() > 20 {
        return None;
    }
    let mut value: u64 = 0;
    for byte in bytes {
        if !byte.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(byte - b'0'))?;
    }
    Some(value)
}

/// What an ID argument asks for when it is missing its sequence part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MissingSeq {
    /// `ms` means `ms-0` (a start, or an XADD ID).
    Zero,
    /// `ms` means `ms-18446744073709551615` (an end).
    Max,
}

/// Parses an ID argument. `-` and `+` are accepted unless `strict`.
pub(crate) fn parse_id(bytes: &[u8], missing: MissingSeq, strict: bool) -> Result<StreamId, Error> {
    if !strict {
        if bytes == b"-" {
            return Ok(StreamId::MIN);
        }
        if bytes == b"+" {
            return Ok(StreamId::MAX);
        }
    }
    match bytes.iter().position(|byte| *byte == b'-') {
        None => {
            let ms = parse_u64(bytes).ok_or(Error::INVALID_STREAM_ID)?;
            let seq = match missing {
                MissingSeq::Zero => 0,
                MissingSeq::Max => u64::MAX,
            };
            Ok(StreamId::new(ms, seq))
        }
        Some(dash) => {
            let ms = parse_u64(&bytes[..dash]).ok_or(Error::INVALID_STREAM_ID)?;
            let seq = parse_u64(&bytes[dash + 1..]).ok_or(Error::INVALID_STREAM_ID)?;
            Ok(StreamId::new(ms, seq))
        }
    }
}

/// A range bound: inclusive, or exclusive with a leading `(` (which needs
/// a strict ID after it). `missing` is `Zero` for a start, `Max` for an end.
pub(crate) fn parse_range_bound(bytes: &[u8], missing: MissingSeq) -> Result<StreamId, Error> {
    if bytes.len() > 1 && bytes[0] == b'(' {
        let id = parse_id(&bytes[1..], missing, true)?;
        return match missing {
            MissingSeq::Zero => id.next().ok_or(Error::INVALID_INTERVAL_START),
            MissingSeq::Max => id.prev().ok_or(Error::INVALID_INTERVAL_END),
        };
    }
    parse_id(bytes, missing, false)
}

/// How XADD was told to pick the new ID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdSpec {
    /// `*`: from the clock, or after the last ID.
    Auto,
    /// `ms-*`: this millisecond, next sequence.
    AutoSeq(u64),
    /// An explicit ID.
    Explicit(StreamId),
}

/// Parses XADD's ID argument.
pub(crate) fn parse_xadd_id(bytes: &[u8]) -> Result<IdSpec, Error> {
    if bytes == b"*" {
        return Ok(IdSpec::Auto);
    }
    if let Some(ms) = bytes.strip_suffix(b"-*") {
        let ms = parse_u64(ms).ok_or(Error::INVALID_STREAM_ID)?;
        return Ok(IdSpec::AutoSeq(ms));
    }
    parse_id(bytes, MissingSeq::Zero, true).map(IdSpec::Explicit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_like_redis() {
        let check = |text: &str, missing, strict, expected: Option<(u64, u64)>| {
            let parsed = parse_id(text.as_bytes(), missing, strict)
                .ok()
                .map(|id| (id.ms, id.seq));
            assert_eq!(parsed, expected, "{text}");
        };
        check("5", MissingSeq::Zero, true, Some((5, 0)));
        check("5", MissingSeq::Max, false, Some((5, u64::MAX)));
        check("5-7", MissingSeq::Zero, true, Some((5, 7)));
        check("-", MissingSeq::Zero, false, Some((0, 0)));
        check("-", MissingSeq::Zero, true, None);
        check("+", MissingSeq::Zero, false, Some((u64::MAX, u64::MAX)));
        check(
            "18446744073709551615-18446744073709551615",
            MissingSeq::Zero,
            true,
            Some((u64::MAX, u64::MAX)),
        );
        check("18446744073709551616", MissingSeq::Zero, true, None);
        for bad in ["", "a", "1-", "-1", "1-2-3", " 1", "+1", "1.5", "0x10"] {
            check(bad, MissingSeq::Zero, true, None);
        }
    }

    #[test]
    fn exclusive_bounds_move_by_one_and_fail_at_the_edge() {
        let bound = |text: &str, missing| parse_range_bound(text.as_bytes(), missing);
        assert_eq!(bound("(5-5", MissingSeq::Zero), Ok(StreamId::new(5, 6)));
        assert_eq!(
            bound("(5-0", MissingSeq::Max),
            Ok(StreamId::new(4, u64::MAX))
        );
        assert_eq!(bound("(5", MissingSeq::Zero), Ok(StreamId::new(5, 1)));
        assert_eq!(bound("(-", MissingSeq::Zero), Err(Error::INVALID_STREAM_ID));
        assert_eq!(
            bound("(0-0", MissingSeq::Max),
            Err(Error::INVALID_INTERVAL_END)
        );
        let max = "(18446744073709551615-18446744073709551615";
        assert_eq!(
            bound(max, MissingSeq::Zero),
            Err(Error::INVALID_INTERVAL_START)
        );
    }

    #[test]
    fn ids_print_as_ms_dash_seq() {
        assert_eq!(StreamId::new(0, 0).to_bytes(), b"0-0");
        for value in [0u64, 9, 10, 99, 100, 101, 1_700_000_000_123, u64::MAX] {
            let mut out = Vec::new();
            write_u64(&mut out, value);
            assert_eq!(out, value.to_string().as_bytes());
        }
        assert_eq!(
            StreamId::MAX.to_string(),
            "18446744073709551615-18446744073709551615"
        );
    }
}
