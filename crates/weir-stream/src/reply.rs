//! Replies, precise enough to render every Redis reply in RESP2 and RESP3:
//! null bulk strings and null arrays are told apart, maps know how RESP2
//! flattens them, errors carry Redis's exact text.

use std::borrow::Cow;
use std::fmt;

/// An error reply, with its full text as Redis sends it (code first, such
/// as `ERR`, `NOGROUP`, `BUSYGROUP`, `WRONGTYPE`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error(pub Cow<'static, str>);

impl Error {
    /// An error with a fixed text.
    pub const fn fixed(text: &'static str) -> Self {
        Error(Cow::Borrowed(text))
    }

    /// An error with a full text (code included).
    pub fn from_text(text: String) -> Self {
        Error(Cow::Owned(text))
    }

    /// An `ERR` error with a formatted message.
    pub fn err(message: impl fmt::Display) -> Self {
        Error(Cow::Owned(format!("ERR {message}")))
    }

    /// The text.
    pub fn text(&self) -> &str {
        &self.0
    }

    /// `ERR syntax error`.
    pub const SYNTAX: Error = Error::fixed("ERR syntax error");
    /// A malformed stream ID.
    pub const INVALID_STREAM_ID: Error =
        Error::fixed("ERR Invalid stream ID specified as stream command argument");
    /// An exclusive start bound at the largest ID.
    pub const INVALID_INTERVAL_START: Error = Error::fixed("ERR invalid start ID for the interval");
    /// An exclusive end bound at the smallest ID.
    pub const INVALID_INTERVAL_END: Error = Error::fixed("ERR invalid end ID for the interval");
    /// A number that does not parse.
    pub const NOT_AN_INTEGER: Error = Error::fixed("ERR value is not an integer or out of range");
    /// A key of another type.
    pub const WRONG_TYPE: Error =
        Error::fixed("WRONGTYPE Operation against a key holding the wrong kind of value");
    /// A missing key where one is required.
    pub const NO_SUCH_KEY: Error = Error::fixed("ERR no such key");
    /// A group that exists already.
    pub const BUSY_GROUP: Error = Error::fixed("BUSYGROUP Consumer Group name already exists");

    /// `ERR wrong number of arguments for '<command>' command`.
    pub fn arity(command: &str) -> Self {
        Error::err(format_args!(
            "wrong number of arguments for '{}' command",
            command.to_ascii_lowercase()
        ))
    }

    /// `NOGROUP No such consumer group '<group>' for key name '<key>'`.
    pub fn no_group(key: &[u8], group: &[u8]) -> Self {
        Error(Cow::Owned(format!(
            "NOGROUP No such consumer group '{}' for key name '{}'",
            String::from_utf8_lossy(group),
            String::from_utf8_lossy(key)
        )))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// A stream entry as a reply: `[id, [field, value, ...]]` in both
/// protocols, kept in one buffer rather than a tree of small allocations.
#[derive(Clone, Debug)]
pub struct EntryReply {
    id: crate::id::StreamId,
    count: u32,
    /// Per field then value: u32 length, bytes.
    data: Vec<u8>,
}

impl EntryReply {
    /// An entry reply from its ID and field-value pairs.
    pub fn new<'a>(
        id: crate::id::StreamId,
        fields: impl Iterator<Item = (&'a [u8], &'a [u8])>,
        hint: usize,
    ) -> Self {
        let mut data = Vec::with_capacity(hint);
        let mut count = 0;
        for (name, value) in fields {
            for part in [name, value] {
                let length = u32::try_from(part.len()).expect("a field below 4 GiB");
                data.extend_from_slice(&length.to_le_bytes());
                data.extend_from_slice(part);
            }
            count += 1;
        }
        Self { id, count, data }
    }

    /// The entry's ID.
    pub fn id(&self) -> crate::id::StreamId {
        self.id
    }

    /// The field-value pairs.
    pub fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let mut rest = self.data.as_slice();
        (0..self.count).map(move |_| {
            let mut take = || {
                let length = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                let (part, tail) = rest[4..].split_at(length);
                rest = tail;
                part
            };
            let name = take();
            (name, take())
        })
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"*2\r\n");
        let mut id = Vec::with_capacity(41);
        self.id.write_to(&mut id);
        write_bulk(out, &id);
        write_header(out, b'*', self.count as usize * 2);
        for (name, value) in self.fields() {
            write_bulk(out, name);
            write_bulk(out, value);
        }
    }
}

/// A reply to a command. Two replies are equal when they encode to the same
/// bytes in both RESP2 and RESP3.
#[derive(Clone, Debug)]
pub enum Reply {
    /// A simple string (`+OK`).
    Simple(Cow<'static, str>),
    /// An error.
    Error(Error),
    /// An integer.
    Integer(i64),
    /// A bulk string.
    Bulk(Vec<u8>),
    /// A null bulk string: `$-1` in RESP2, `_` in RESP3.
    NullBulk,
    /// A null array: `*-1` in RESP2, `_` in RESP3.
    NullArray,
    /// An array.
    Array(Vec<Reply>),
    /// A map: `%` in RESP3, a flat array of keys and values in RESP2.
    Map(Vec<(Reply, Reply)>),
    /// A map that RESP2 renders as an array of two-element arrays (XREAD's
    /// reply).
    PairMap(Vec<(Reply, Reply)>),
    /// A stream entry.
    Entry(EntryReply),
    /// An out-of-band push (pub/sub messages): `>` in RESP3, an array in
    /// RESP2.
    Push(Vec<Reply>),
    /// A set: `~` in RESP3, an array in RESP2.
    Set(Vec<Reply>),
    /// Text with a format (`txt`, `mkd`): `=` verbatim string in RESP3, a
    /// bulk string in RESP2 (INFO, CLIENT LIST in RESP3).
    Verbatim(&'static str, Vec<u8>),
}

impl PartialEq for Reply {
    fn eq(&self, other: &Reply) -> bool {
        let mut left = Vec::new();
        let mut right = Vec::new();
        self.write_resp2(&mut left);
        other.write_resp2(&mut right);
        if left != right {
            return false;
        }
        left.clear();
        right.clear();
        self.write_resp3(&mut left);
        other.write_resp3(&mut right);
        left == right
    }
}

impl Reply {
    /// `+OK`.
    pub const OK: Reply = Reply::Simple(Cow::Borrowed("OK"));

    /// A bulk string from text.
    pub fn bulk(text: impl AsRef<[u8]>) -> Reply {
        Reply::Bulk(text.as_ref().to_vec())
    }

    /// Appends the RESP2 encoding.
    pub fn write_resp2(&self, out: &mut Vec<u8>) {
        self.write(out, false);
    }

    /// Appends the RESP3 encoding.
    pub fn write_resp3(&self, out: &mut Vec<u8>) {
        self.write(out, true);
    }

    /// The RESP2 encoding.
    pub fn to_resp2(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_resp2(&mut out);
        out
    }

    fn write(&self, out: &mut Vec<u8>, resp3: bool) {
        match self {
            Reply::Simple(text) => {
                out.push(b'+');
                out.extend_from_slice(text.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Reply::Error(error) => {
                out.push(b'-');
                out.extend_from_slice(error.text().as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Reply::Integer(value) => {
                out.push(b':');
                out.extend_from_slice(value.to_string().as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Reply::Bulk(bytes) => write_bulk(out, bytes),
            Reply::Entry(entry) => entry.write(out),
            Reply::NullBulk if resp3 => out.extend_from_slice(b"_\r\n"),
            Reply::NullBulk => out.extend_from_slice(b"$-1\r\n"),
            Reply::NullArray if resp3 => out.extend_from_slice(b"_\r\n"),
            Reply::NullArray => out.extend_from_slice(b"*-1\r\n"),
            Reply::Array(items) => {
                write_header(out, b'*', items.len());
                for item in items {
                    item.write(out, resp3);
                }
            }
            Reply::Push(items) | Reply::Set(items) => {
                let kind = match (self, resp3) {
                    (_, false) => b'*',
                    (Reply::Push(_), true) => b'>',
                    _ => b'~',
                };
                write_header(out, kind, items.len());
                for item in items {
                    item.write(out, resp3);
                }
            }
            Reply::Verbatim(format, text) if resp3 => {
                write_header(out, b'=', format.len() + 1 + text.len());
                out.extend_from_slice(format.as_bytes());
                out.push(b':');
                out.extend_from_slice(text);
                out.extend_from_slice(b"\r\n");
            }
            Reply::Verbatim(_, text) => write_bulk(out, text),
            Reply::Map(pairs) => {
                if resp3 {
                    write_header(out, b'%', pairs.len());
                } else {
                    write_header(out, b'*', pairs.len() * 2);
                }
                for (key, value) in pairs {
                    key.write(out, resp3);
                    value.write(out, resp3);
                }
            }
            Reply::PairMap(pairs) => {
                if resp3 {
                    write_header(out, b'%', pairs.len());
                    for (key, value) in pairs {
                        key.write(out, resp3);
                        value.write(out, resp3);
                    }
                } else {
                    write_header(out, b'*', pairs.len());
                    for (key, value) in pairs {
                        write_header(out, b'*', 2);
                        key.write(out, resp3);
                        value.write(out, resp3);
                    }
                }
            }
        }
    }
}

fn write_bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'$');
    crate::id::write_u64(out, bytes.len() as u64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

fn write_header(out: &mut Vec<u8>, kind: u8, length: usize) {
    out.push(kind);
    crate::id::write_u64(out, length as u64);
    out.extend_from_slice(b"\r\n");
}

impl From<Error> for Reply {
    fn from(error: Error) -> Self {
        Reply::Error(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nulls_and_maps_render_per_protocol() {
        let map = Reply::Map(vec![(Reply::bulk("a"), Reply::Integer(1))]);
        assert_eq!(map.to_resp2(), b"*2\r\n$1\r\na\r\n:1\r\n");
        let mut resp3 = Vec::new();
        map.write_resp3(&mut resp3);
        assert_eq!(resp3, b"%1\r\n$1\r\na\r\n:1\r\n");
        let pairs = Reply::PairMap(vec![(Reply::bulk("k"), Reply::NullArray)]);
        assert_eq!(pairs.to_resp2(), b"*1\r\n*2\r\n$1\r\nk\r\n*-1\r\n");
        assert_eq!(Reply::NullBulk.to_resp2(), b"$-1\r\n");
        let mut null = Vec::new();
        Reply::NullArray.write_resp3(&mut null);
        assert_eq!(null, b"_\r\n");
        assert_eq!(
            Reply::from(Error::SYNTAX).to_resp2(),
            b"-ERR syntax error\r\n"
        );
    }

    #[test]
    fn pushes_sets_and_verbatim_text_render_per_protocol() {
        let push = Reply::Push(vec![Reply::bulk("message"), Reply::Integer(1)]);
        assert_eq!(push.to_resp2(), b"*2\r\n$7\r\nmessage\r\n:1\r\n");
        let mut resp3 = Vec::new();
        push.write_resp3(&mut resp3);
        assert_eq!(resp3, b">2\r\n$7\r\nmessage\r\n:1\r\n");
        let set = Reply::Set(vec![Reply::bulk("a")]);
        resp3.clear();
        set.write_resp3(&mut resp3);
        assert_eq!(resp3, b"~1\r\n$1\r\na\r\n");
        let text = Reply::Verbatim("txt", b"a:1".to_vec());
        assert_eq!(text.to_resp2(), b"$3\r\na:1\r\n");
        resp3.clear();
        text.write_resp3(&mut resp3);
        assert_eq!(resp3, b"=7\r\ntxt:a:1\r\n");
    }
}
