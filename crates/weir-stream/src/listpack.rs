//! The sizes Redis's listpacks would give the entries of a stream node.
//!
//! Redis decides when a stream node is full from the byte size of its
//! listpack, so reproducing its node boundaries (and so `~` trimming and
//! `XINFO STREAM`'s `radix-tree-keys`) needs those sizes. weir does not
//! store listpacks; it only computes what their size would be:
//!
//! - a listpack is a 6-byte header, its elements, and a 1-byte end marker;
//! - an element is its encoding, its data, and a "backlen" of 1 to 5 bytes
//!   giving the size of encoding plus data;
//! - a string that reads as a 64-bit integer (no sign but `-`, no leading
//!   zero, at most 20 characters) is stored as an integer of 1, 2, 3, 4, 5
//!   or 9 bytes depending on its range; other strings take a 1-, 2- or
//!   5-byte length header (up to 63, up to 4095, longer).

use crate::id::StreamId;

/// Header and end marker of an empty listpack.
pub const EMPTY_LISTPACK_BYTES: u64 = 7;

fn backlen_bytes(length: u64) -> u64 {
    match length {
        0..=127 => 1,
        128..=16382 => 2,
        16383..=2_097_150 => 3,
        2_097_151..=268_435_454 => 4,
        _ => 5,
    }
}

fn integer_encoding_bytes(value: i64) -> u64 {
    match value {
        0..=127 => 1,
        -4096..=4095 => 2,
        -32768..=32767 => 3,
        -8_388_608..=8_388_607 => 4,
        -2_147_483_648..=2_147_483_647 => 5,
        _ => 9,
    }
}

/// Bytes of an integer element.
pub fn integer_element_bytes(value: i64) -> u64 {
    let encoded = integer_encoding_bytes(value);
    encoded + backlen_bytes(encoded)
}

/// Bytes of a string element (stored as an integer when it reads as one).
pub fn string_element_bytes(bytes: &[u8]) -> u64 {
    if let Some(value) = as_listpack_integer(bytes) {
        return integer_element_bytes(value);
    }
    let length = bytes.len() as u64;
    let header = if length < 64 {
        1
    } else if length < 4096 {
        2
    } else {
        5
    };
    header + length + backlen_bytes(header + length)
}

/// Whether listpacks store `bytes` as an integer, and which.
fn as_listpack_integer(bytes: &[u8]) -> Option<i64> {
    if bytes.is_empty() || bytes.len() >= 21 {
        return None;
    }
    if bytes == b"0" {
        return Some(0);
    }
    let (negative, digits) = match bytes.strip_prefix(b"-") {
        Some(digits) => (true, digits),
        None => (false, bytes),
    };
    let first = *digits.first()?;
    if !(b'1'..=b'9').contains(&first) || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut value: u64 = 0;
    for digit in digits {
        value = value
            .checked_mul(10)?
            .checked_add(u64::from(digit - b'0'))?;
    }
    if negative {
        if value > i64::MAX as u64 + 1 {
            return None;
        }
        Some((value as i64).wrapping_neg())
    } else {
        i64::try_from(value).ok()
    }
}

/// Bytes of a new node's listpack before its first entry, except the live
/// and deleted counters: the header, the master field count, the master
/// fields and the terminating zero. `fields` holds names and values
/// alternately.
pub fn master_bytes(fields: &[&[u8]]) -> u64 {
    EMPTY_LISTPACK_BYTES
        + integer_element_bytes((fields.len() / 2) as i64)
        + names(fields).map(string_element_bytes).sum::<u64>()
        + integer_element_bytes(0)
}

fn names<'a>(fields: &'a [&'a [u8]]) -> impl Iterator<Item = &'a [u8]> {
    fields.chunks_exact(2).map(|pair| pair[0])
}

fn values<'a>(fields: &'a [&'a [u8]]) -> impl Iterator<Item = &'a [u8]> {
    fields.chunks_exact(2).map(|pair| pair[1])
}

/// Bytes one entry adds to its node's listpack: flags, the ID as deltas from
/// the master ID, the field count and names (unless they are the master's),
/// the values, and the count of the entry's elements.
pub fn entry_bytes(id: StreamId, master: StreamId, fields: &[&[u8]], same_fields: bool) -> u64 {
    let flags = if same_fields { 2 } else { 0 };
    let count = (fields.len() / 2) as i64;
    let mut bytes = integer_element_bytes(flags)
        + integer_element_bytes(id.ms.wrapping_sub(master.ms) as i64)
        + integer_element_bytes(id.seq.wrapping_sub(master.seq) as i64);
    if !same_fields {
        bytes += integer_element_bytes(count);
        bytes += names(fields).map(string_element_bytes).sum::<u64>();
    }
    bytes += values(fields).map(string_element_bytes).sum::<u64>();
    let elements = count + 3 + if same_fields { 0 } else { count + 1 };
    bytes + integer_element_bytes(elements)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_sizes_follow_the_listpack_encodings() {
        assert_eq!(integer_element_bytes(0), 2);
        assert_eq!(integer_element_bytes(127), 2);
        assert_eq!(integer_element_bytes(128), 3);
        assert_eq!(integer_element_bytes(-4096), 3);
        assert_eq!(integer_element_bytes(4096), 4);
        assert_eq!(integer_element_bytes(i64::MAX), 10);
        assert_eq!(string_element_bytes(b"v"), 3);
        assert_eq!(
            string_element_bytes(b"123"),
            2,
            "numeric strings are integers"
        );
        assert_eq!(
            string_element_bytes(b"0123"),
            6,
            "a leading zero keeps it a string"
        );
        assert_eq!(string_element_bytes(b"-0"), 4);
        assert_eq!(string_element_bytes(&[b'x'; 63]), 65);
        assert_eq!(string_element_bytes(&[b'x'; 64]), 67);
        assert_eq!(string_element_bytes(&[b'x'; 126]), 130);
        assert_eq!(string_element_bytes(&[b'x'; 4096]), 4103);
        assert_eq!(as_listpack_integer(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(as_listpack_integer(b"9223372036854775808"), None);
    }
}
