//! The RESP request parser: arrays of bulk strings (what every client
//! library sends) and inline commands (what a person types into `telnet`),
//! parsed incrementally from a connection's read buffer.
//!
//! Arguments of multibulk requests are not copied: the parser returns their
//! ranges in the buffer. It keeps its place inside a request that has not
//! fully arrived, so a request of a million arguments or a bulk string of
//! hundreds of megabytes arriving in small reads is scanned once, not once
//! per read. Inline commands (quotes and escapes decoded) are the only ones
//! copied.
//!
//! Every limit is named ([`Limits`]); going over one, or any malformed
//! input, is a [`ProtocolError`] with Redis's text, after which the server
//! replies with the error and closes that connection only. The parser never
//! panics on any input: `fuzz/fuzz_targets/resp_request.rs` and the
//! property tests below feed it garbage.

use std::ops::Range;

/// Limits on what one request may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of one bulk string (Redis's `proto-max-bulk-len`, 512 MiB).
    pub max_bulk_bytes: usize,
    /// Arguments of one request (Redis accepts up to 2^31; 1 Mi here, which
    /// no client reaches in practice).
    pub max_arguments: usize,
    /// Bytes of an inline command line (Redis: 64 KiB).
    pub max_inline_bytes: usize,
    /// Bytes of unprocessed input a client may hold (Redis's
    /// `client-query-buffer-limit`, 1 GiB).
    pub max_query_buffer_bytes: usize,
    /// Arguments of one request while a password is required and not yet
    /// given (Redis: 10), so that an unauthenticated client cannot make the
    /// server reserve much memory.
    pub max_unauthenticated_arguments: usize,
    /// Bytes of one bulk string before AUTH (Redis: 16 KiB).
    pub max_unauthenticated_bulk_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bulk_bytes: 512 << 20,
            max_arguments: 1 << 20,
            max_inline_bytes: 64 << 10,
            max_query_buffer_bytes: 1 << 30,
            max_unauthenticated_arguments: 10,
            max_unauthenticated_bulk_bytes: 16 << 10,
        }
    }
}

/// Longest count line (`*<n>` or `$<n>`) accepted before its CRLF.
const MAX_COUNT_LINE_BYTES: usize = 64 << 10;

/// Bulk strings at least this long get their whole size reserved in the
/// buffer at once, instead of growing it read by read.
pub const LARGE_BULK_BYTES: usize = 32 << 10;

/// A malformed or oversized request. The text is Redis's (after `ERR `).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// An inline command line longer than the limit.
    #[error("Protocol error: too big inline request")]
    InlineTooBig,
    /// Quotes that do not close in an inline command.
    #[error("Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
    /// A `*<n>` line longer than the limit.
    #[error("Protocol error: too big mbulk count string")]
    CountLineTooBig,
    /// A `*<n>` that is not a number or over the limit.
    #[error("Protocol error: invalid multibulk length")]
    InvalidMultibulkLength,
    /// Too many arguments before AUTH.
    #[error("Protocol error: unauthenticated multibulk length")]
    UnauthenticatedMultibulkLength,
    /// A `$<n>` line longer than the limit.
    #[error("Protocol error: too big bulk count string")]
    BulkLineTooBig,
    /// Something other than `$` where a bulk string should start.
    #[error("Protocol error: expected '$', got '{}'", char::from(*.0))]
    ExpectedBulk(u8),
    /// A `$<n>` that is not a number, negative or over the limit.
    #[error("Protocol error: invalid bulk length")]
    InvalidBulkLength,
    /// A bulk string too long before AUTH.
    #[error("Protocol error: unauthenticated bulk length")]
    UnauthenticatedBulkLength,
    /// A bulk string not followed by CRLF.
    #[error("Protocol error: expected CRLF after a bulk string")]
    MissingBulkTerminator,
    /// The client sent more unprocessed input than the limit.
    #[error("Protocol error: query buffer limit of {limit} bytes exceeded")]
    QueryBufferFull {
        /// The limit.
        limit: usize,
    },
}

/// One argument of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Arg {
    /// A range of the read buffer.
    Range(Range<usize>),
    /// Decoded bytes (inline commands).
    Owned(Vec<u8>),
}

/// Where the parser stands inside a multibulk request.
#[derive(Clone, Debug, Default)]
struct Partial {
    /// Arguments announced by `*<n>`.
    expected: usize,
    /// Where the next unparsed element starts.
    position: usize,
    /// The announced length of the bulk string being received, once its
    /// `$<n>` line was parsed (`position` is then at its first byte).
    bulk: Option<usize>,
}

/// What [`Parser::parse`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A whole request ending `consumed` bytes into the buffer; its
    /// arguments are in [`Parser::args`] (none for an empty request, which
    /// is to be ignored).
    Request {
        /// Bytes of the buffer the request took.
        consumed: usize,
    },
    /// More bytes are needed. `reserve`: a large bulk string is being
    /// received, and the buffer should have room for this many more bytes.
    Incomplete {
        /// Bytes worth reserving.
        reserve: usize,
    },
}

/// An incremental RESP request parser. Use one per connection.
#[derive(Debug, Default)]
pub struct Parser {
    limits: Limits,
    args: Vec<Arg>,
    partial: Option<Partial>,
}

impl Parser {
    /// A parser with these limits.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            args: Vec::new(),
            partial: None,
        }
    }

    /// The limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Changes the limits (CONFIG SET); a request being received is judged
    /// by the new ones from its next element.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// The arguments of the request last returned by [`Parser::parse`].
    pub fn args(&self) -> &[Arg] {
        &self.args
    }

    /// Whether a request has started arriving but is not complete.
    pub fn in_request(&self) -> bool {
        self.partial.is_some()
    }

    /// Parses the next request from `buffer`, which must start where the
    /// last complete request ended: the positions of a partly received
    /// request are relative to that start, so the caller may move the bytes
    /// (compact its buffer) between calls. `authenticated`: false while a
    /// password is required and not yet given (small requests only).
    pub fn parse(&mut self, buffer: &[u8], authenticated: bool) -> Result<Parsed, ProtocolError> {
        let result = self.parse_inner(buffer, authenticated);
        if result.is_err() {
            self.partial = None;
            self.args.clear();
        }
        result
    }

    fn parse_inner(&mut self, buffer: &[u8], authenticated: bool) -> Result<Parsed, ProtocolError> {
        if self.partial.is_none() {
            self.args.clear();
            match buffer.first() {
                None => return Ok(Parsed::Incomplete { reserve: 0 }),
                Some(b'*') => {}
                Some(_) => return self.parse_inline(buffer),
            }
            let Some((count, after)) = count_line(buffer, 1, MAX_COUNT_LINE_BYTES)
                .map_err(|()| ProtocolError::CountLineTooBig)?
            else {
                return Ok(Parsed::Incomplete { reserve: 0 });
            };
            let count = parse_count(count).ok_or(ProtocolError::InvalidMultibulkLength)?;
            if count > self.limits.max_arguments as i64 {
                return Err(ProtocolError::InvalidMultibulkLength);
            }
            if !authenticated && count > self.limits.max_unauthenticated_arguments as i64 {
                return Err(ProtocolError::UnauthenticatedMultibulkLength);
            }
            if count <= 0 {
                // `*0` and `*-1`: an empty request, ignored as Redis does.
                return Ok(Parsed::Request { consumed: after });
            }
            let count = count as usize;
            self.args.reserve(count.min(1024));
            self.partial = Some(Partial {
                expected: count,
                position: after,
                bulk: None,
            });
        }
        self.parse_multibulk(buffer, authenticated)
    }

    fn parse_multibulk(
        &mut self,
        buffer: &[u8],
        authenticated: bool,
    ) -> Result<Parsed, ProtocolError> {
        let partial = self.partial.as_mut().expect("inside a multibulk request");
        while self.args.len() < partial.expected {
            let length = match partial.bulk {
                Some(length) => length,
                None => {
                    let Some(&first) = buffer.get(partial.position) else {
                        return Ok(Parsed::Incomplete { reserve: 0 });
                    };
                    if first != b'$' {
                        return Err(ProtocolError::ExpectedBulk(first));
                    }
                    let line = count_line(buffer, partial.position + 1, MAX_COUNT_LINE_BYTES)
                        .map_err(|()| ProtocolError::BulkLineTooBig)?;
                    let Some((digits, after)) = line else {
                        return Ok(Parsed::Incomplete { reserve: 0 });
                    };
                    let length = parse_count(digits)
                        .filter(|length| {
                            *length >= 0 && *length as u64 <= self.limits.max_bulk_bytes as u64
                        })
                        .ok_or(ProtocolError::InvalidBulkLength)?
                        as usize;
                    if !authenticated && length > self.limits.max_unauthenticated_bulk_bytes {
                        return Err(ProtocolError::UnauthenticatedBulkLength);
                    }
                    partial.position = after;
                    partial.bulk = Some(length);
                    length
                }
            };
            let end = partial.position + length;
            if buffer.len() < end + 2 {
                let reserve = if length >= LARGE_BULK_BYTES {
                    end + 2 - buffer.len()
                } else {
                    0
                };
                return Ok(Parsed::Incomplete { reserve });
            }
            if &buffer[end..end + 2] != b"\r\n" {
                return Err(ProtocolError::MissingBulkTerminator);
            }
            self.args.push(Arg::Range(partial.position..end));
            partial.position = end + 2;
            partial.bulk = None;
        }
        let consumed = partial.position;
        self.partial = None;
        Ok(Parsed::Request { consumed })
    }

    fn parse_inline(&mut self, buffer: &[u8]) -> Result<Parsed, ProtocolError> {
        let Some(newline) = buffer.iter().position(|byte| *byte == b'\n') else {
            if buffer.len() > self.limits.max_inline_bytes {
                return Err(ProtocolError::InlineTooBig);
            }
            return Ok(Parsed::Incomplete { reserve: 0 });
        };
        if newline > self.limits.max_inline_bytes {
            return Err(ProtocolError::InlineTooBig);
        }
        let mut line = &buffer[..newline];
        if let Some(stripped) = line.strip_suffix(b"\r") {
            line = stripped;
        }
        for arg in split_inline(line)? {
            self.args.push(Arg::Owned(arg));
        }
        if self.args.len() > self.limits.max_arguments {
            self.args.clear();
            return Err(ProtocolError::InvalidMultibulkLength);
        }
        Ok(Parsed::Request {
            consumed: newline + 1,
        })
    }
}

/// The digits of a count line starting at `from` and the position after
/// its CRLF; `Ok(None)` when the CRLF has not arrived; `Err` when the line
/// is longer than `limit`.
fn count_line(buffer: &[u8], from: usize, limit: usize) -> Result<Option<(&[u8], usize)>, ()> {
    let rest = &buffer[from.min(buffer.len())..];
    match rest.iter().position(|byte| *byte == b'\r') {
        Some(carriage) if carriage > limit => Err(()),
        Some(carriage) => {
            if rest.len() < carriage + 2 {
                return Ok(None);
            }
            // Redis does not check the byte after `\r`; neither do we.
            Ok(Some((&rest[..carriage], from + carriage + 2)))
        }
        None if rest.len() > limit => Err(()),
        None => Ok(None),
    }
}

/// A signed decimal count, as Redis's `string2ll` reads it: optional `-`,
/// digits, no leading `+`, no spaces, no leading zeros except `0` itself.
fn parse_count(digits: &[u8]) -> Option<i64> {
    let (negative, digits) = match digits.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, digits),
    };
    if digits.is_empty() || digits.len() > 19 || (digits.len() > 1 && digits[0] == b'0') {
        return None;
    }
    let mut value: i64 = 0;
    for digit in digits {
        if !digit.is_ascii_digit() {
            return None;
        }
        value = value
            .checked_mul(10)?
            .checked_add(i64::from(digit - b'0'))?;
    }
    Some(if negative { -value } else { value })
}

/// Splits an inline command line the way `redis-cli` and Redis do
/// (`sdssplitargs`): words separated by spaces; `"..."` with `\n`, `\r`,
/// `\t`, `\b`, `\a`, `\\`, `\"` and `\xHH` escapes; `'...'` with `\'`; a
/// closing quote must be followed by a space or the end of the line.
pub fn split_inline(line: &[u8]) -> Result<Vec<Vec<u8>>, ProtocolError> {
    let mut args = Vec::new();
    let mut position = 0;
    loop {
        // Separators: C's isspace, and NUL (which ends a C string, where
        // Redis splits). Every byte that ends a word below is one of them,
        // so each pass consumes input.
        while position < line.len()
            && matches!(
                line[position],
                b' ' | b'\n' | b'\r' | b'\t' | 0x0b | 0x0c | 0
            )
        {
            position += 1;
        }
        if position == line.len() {
            return Ok(args);
        }
        let mut current = Vec::new();
        let mut in_double = false;
        let mut in_single = false;
        loop {
            let Some(&byte) = line.get(position) else {
                if in_double || in_single {
                    return Err(ProtocolError::UnbalancedQuotes);
                }
                break;
            };
            if in_double {
                if byte == b'\\'
                    && line.get(position + 1) == Some(&b'x')
                    && line.get(position + 2).is_some_and(u8::is_ascii_hexdigit)
                    && line.get(position + 3).is_some_and(u8::is_ascii_hexdigit)
                {
                    current.push(hex(line[position + 2]) * 16 + hex(line[position + 3]));
                    position += 3;
                } else if byte == b'\\' && position + 1 < line.len() {
                    position += 1;
                    current.push(match line[position] {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        other => other,
                    });
                } else if byte == b'"' {
                    if line
                        .get(position + 1)
                        .is_some_and(|next| !next.is_ascii_whitespace())
                    {
                        return Err(ProtocolError::UnbalancedQuotes);
                    }
                    position += 1;
                    break;
                } else {
                    current.push(byte);
                }
            } else if in_single {
                if byte == b'\\' && line.get(position + 1) == Some(&b'\'') {
                    position += 1;
                    current.push(b'\'');
                } else if byte == b'\'' {
                    if line
                        .get(position + 1)
                        .is_some_and(|next| !next.is_ascii_whitespace())
                    {
                        return Err(ProtocolError::UnbalancedQuotes);
                    }
                    position += 1;
                    break;
                } else {
                    current.push(byte);
                }
            } else {
                match byte {
                    b' ' | b'\n' | b'\r' | b'\t' | 0 => break,
                    b'"' => in_double = true,
                    b'\'' => in_single = true,
                    _ => current.push(byte),
                }
            }
            position += 1;
        }
        args.push(current);
    }
}

fn hex(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        _ => digit - b'A' + 10,
    }
}

/// Resolves an argument against the buffer it was parsed from.
pub fn arg_bytes<'a>(buffer: &'a [u8], arg: &'a Arg) -> &'a [u8] {
    match arg {
        Arg::Range(range) => &buffer[range.clone()],
        Arg::Owned(bytes) => bytes,
    }
}

/// Parses every request in `input`, fed in chunks of `chunk` bytes, the way
/// a connection does, until the input ends or a protocol error: the
/// requests found and the error, if any. The fuzz target and the tests call
/// it; it must never panic.
pub fn parse_all(
    input: &[u8],
    chunk: usize,
    limits: Limits,
) -> (Vec<Vec<Vec<u8>>>, Option<ProtocolError>) {
    let mut parser = Parser::new(limits);
    let mut buffer: Vec<u8> = Vec::new();
    let mut requests = Vec::new();
    let mut fed = 0;
    loop {
        match parser.parse(&buffer, true) {
            Ok(Parsed::Request { consumed }) => {
                let args: Vec<Vec<u8>> = parser
                    .args()
                    .iter()
                    .map(|arg| arg_bytes(&buffer, arg).to_vec())
                    .collect();
                if !args.is_empty() {
                    requests.push(args);
                }
                buffer.drain(..consumed);
            }
            Ok(Parsed::Incomplete { .. }) => {
                if fed == input.len() {
                    return (requests, None);
                }
                let next = (fed + chunk.max(1)).min(input.len());
                buffer.extend_from_slice(&input[fed..next]);
                fed = next;
                if buffer.len() > limits.max_query_buffer_bytes {
                    return (
                        requests,
                        Some(ProtocolError::QueryBufferFull {
                            limit: limits.max_query_buffer_bytes,
                        }),
                    );
                }
            }
            Err(error) => return (requests, Some(error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode(args: &[Vec<u8>]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            out.extend_from_slice(arg);
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    fn parse_one(input: &[u8]) -> Result<Vec<Vec<u8>>, ProtocolError> {
        let (mut requests, error) = parse_all(input, input.len().max(1), Limits::default());
        match error {
            Some(error) => Err(error),
            None => Ok(requests.pop().unwrap_or_default()),
        }
    }

    #[test]
    fn multibulk_requests_parse_in_one_read_and_byte_by_byte() {
        let args = vec![b"XADD".to_vec(), b"s".to_vec(), b"*".to_vec(), b"".to_vec()];
        let mut input = encode(&args);
        input.extend(encode(&[b"PING".to_vec()]));
        for chunk in [1, 2, 3, 7, input.len()] {
            let (requests, error) = parse_all(&input, chunk, Limits::default());
            assert_eq!(error, None);
            assert_eq!(requests, vec![args.clone(), vec![b"PING".to_vec()]]);
        }
    }

    #[test]
    fn inline_commands_split_like_redis() {
        assert_eq!(
            parse_one(b"set  \"a b\" 'c\\'d' \"\\x41\\n\"\r\n").unwrap(),
            vec![
                b"set".to_vec(),
                b"a b".to_vec(),
                b"c'd".to_vec(),
                b"A\n".to_vec()
            ]
        );
        assert_eq!(parse_one(b"PING\n").unwrap(), vec![b"PING".to_vec()]);
        // A NUL separates words (found by the property test below: it once
        // looped forever, growing the argument list).
        assert_eq!(
            parse_one(b"a\x00b\x0b\r\n").unwrap(),
            vec![b"a".to_vec(), b"b\x0b".to_vec()]
        );
        assert_eq!(parse_one(b"\r\n").unwrap(), Vec::<Vec<u8>>::new());
        assert_eq!(
            parse_one(b"get \"unclosed\r\n"),
            Err(ProtocolError::UnbalancedQuotes)
        );
        assert_eq!(
            parse_one(b"get \"a\"b\r\n"),
            Err(ProtocolError::UnbalancedQuotes)
        );
    }

    #[test]
    fn malformed_requests_get_redis_errors() {
        let cases: &[(&[u8], ProtocolError)] = &[
            (b"*x\r\n", ProtocolError::InvalidMultibulkLength),
            (b"*2000000\r\n", ProtocolError::InvalidMultibulkLength),
            (b"*1\r\n+PING\r\n", ProtocolError::ExpectedBulk(b'+')),
            (b"*1\r\n$-3\r\n", ProtocolError::InvalidBulkLength),
            (b"*1\r\n$01\r\nx\r\n", ProtocolError::InvalidBulkLength),
            (b"*1\r\n$999999999999\r\n", ProtocolError::InvalidBulkLength),
            (b"*1\r\n$4\r\nPINGxx", ProtocolError::MissingBulkTerminator),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_one(input).as_ref(), Err(expected), "{input:?}");
        }
        assert_eq!(
            ProtocolError::ExpectedBulk(b'+').to_string(),
            "Protocol error: expected '$', got '+'"
        );
        let long_inline = vec![b'a'; 70 << 10];
        assert_eq!(parse_one(&long_inline), Err(ProtocolError::InlineTooBig));
        let mut long_count = b"*".to_vec();
        long_count.extend(vec![b'1'; 70 << 10]);
        assert_eq!(parse_one(&long_count), Err(ProtocolError::CountLineTooBig));
    }

    #[test]
    fn empty_multibulk_requests_are_ignored() {
        let (requests, error) =
            parse_all(b"*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n", 1, Limits::default());
        assert_eq!(error, None);
        assert_eq!(requests, vec![vec![b"PING".to_vec()]]);
    }

    #[test]
    fn unauthenticated_clients_cannot_send_large_requests() {
        let mut parser = Parser::default();
        assert_eq!(
            parser.parse(b"*100\r\n", false),
            Err(ProtocolError::UnauthenticatedMultibulkLength)
        );
        let mut parser = Parser::default();
        assert_eq!(
            parser.parse(b"*2\r\n$4\r\nAUTH\r\n$100000\r\n", false),
            Err(ProtocolError::UnauthenticatedBulkLength)
        );
        let mut parser = Parser::default();
        assert!(parser
            .parse(b"*2\r\n$4\r\nAUTH\r\n$100000\r\n", true)
            .is_ok());
    }

    #[test]
    fn a_large_bulk_asks_for_its_room_and_survives_a_moved_buffer() {
        let value = vec![b'v'; 100_000];
        let input = encode(&[b"ECHO".to_vec(), value.clone()]);
        let mut parser = Parser::default();
        // The request starts after one already processed.
        let mut buffer = encode(&[b"PING".to_vec()]);
        let first = buffer.len();
        assert_eq!(
            parser.parse(&buffer, true),
            Ok(Parsed::Request { consumed: first })
        );
        buffer.extend_from_slice(&input[..50]);
        assert!(matches!(
            parser.parse(&buffer[first..], true),
            Ok(Parsed::Incomplete { .. })
        ));
        // The connection compacts its buffer: the request moves to the front.
        buffer.drain(..first);
        buffer.extend_from_slice(&input[50..1000]);
        match parser.parse(&buffer, true).unwrap() {
            Parsed::Incomplete { reserve } => assert_eq!(reserve, input.len() - 1000),
            other => panic!("{other:?}"),
        }
        buffer.extend_from_slice(&input[1000..]);
        assert_eq!(
            parser.parse(&buffer, true),
            Ok(Parsed::Request {
                consumed: input.len()
            })
        );
        assert_eq!(arg_bytes(&buffer, &parser.args()[1]), &value[..]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn garbage_never_panics(input in proptest::collection::vec(any::<u8>(), 0..300), chunk in 1usize..40) {
            let limits = Limits { max_query_buffer_bytes: 200, max_inline_bytes: 100, ..Limits::default() };
            let _ = parse_all(&input, chunk, limits);
        }

        #[test]
        fn mutated_requests_never_panic(
            args in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 1..5),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
            chunk in 1usize..40,
        ) {
            let mut input = encode(&args);
            for (at, byte) in flips {
                let at = at % input.len();
                input[at] = byte;
            }
            let _ = parse_all(&input, chunk, Limits::default());
        }

        #[test]
        fn encoded_requests_round_trip_in_any_chunking(
            requests in proptest::collection::vec(
                proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..50), 1..6), 1..6),
            chunk in 1usize..64,
        ) {
            let mut input = Vec::new();
            for request in &requests {
                input.extend(encode(request));
            }
            let (parsed, error) = parse_all(&input, chunk, Limits::default());
            prop_assert_eq!(error, None);
            prop_assert_eq!(parsed, requests);
        }
    }
}
