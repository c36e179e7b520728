//! A small async RESP2 client for the workload processes: it sends a
//! command, flushes (madsim's TCP sends only what is flushed), and reads one
//! reply.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A RESP2 reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// `+`
    Simple(String),
    /// `-`
    Error(String),
    /// `:`
    Int(i64),
    /// `$`, or `$-1` as `None`.
    Bulk(Option<Vec<u8>>),
    /// `*`, or `*-1` as `None`.
    Array(Option<Vec<Value>>),
}

impl Value {
    /// The text of a bulk or simple string.
    pub fn text(&self) -> String {
        match self {
            Value::Bulk(Some(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
            Value::Simple(text) | Value::Error(text) => text.clone(),
            other => format!("{other:?}"),
        }
    }

    /// A compact rendering for evidence: strings as text, arrays in
    /// brackets, errors marked.
    pub fn show(&self) -> String {
        match self {
            Value::Simple(text) => format!("+{text}"),
            Value::Error(text) => format!("-{text}"),
            Value::Int(number) => number.to_string(),
            Value::Bulk(Some(bytes)) => format!("{:?}", String::from_utf8_lossy(bytes)),
            Value::Bulk(None) | Value::Array(None) => "nil".into(),
            Value::Array(Some(items)) => {
                let items: Vec<String> = items.iter().map(Value::show).collect();
                format!("[{}]", items.join(" "))
            }
        }
    }

    /// The items of an array (empty for anything else).
    pub fn items(&self) -> &[Value] {
        match self {
            Value::Array(Some(items)) => items,
            _ => &[],
        }
    }
}

/// Parses one reply from the start of `buffer`: the reply and the bytes it
/// used, `Ok(None)` when incomplete.
pub fn parse(buffer: &[u8]) -> io::Result<Option<(Value, usize)>> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let Some(end) = buffer.windows(2).position(|pair| pair == b"\r\n") else {
        return Ok(None);
    };
    let Some((&kind, rest)) = buffer[..end].split_first() else {
        return Err(bad("an empty reply line"));
    };
    let text = String::from_utf8_lossy(rest).into_owned();
    let after = end + 2;
    let number = || text.parse::<i64>().map_err(|_| bad("a bad length"));
    match kind {
        b'+' => Ok(Some((Value::Simple(text), after))),
        b'-' => Ok(Some((Value::Error(text), after))),
        b':' => Ok(Some((Value::Int(number()?), after))),
        b'$' => {
            let length = number()?;
            if length < 0 {
                return Ok(Some((Value::Bulk(None), after)));
            }
            let stop = after + length as usize;
            if buffer.len() < stop + 2 {
                return Ok(None);
            }
            Ok(Some((
                Value::Bulk(Some(buffer[after..stop].to_vec())),
                stop + 2,
            )))
        }
        b'*' => {
            let count = number()?;
            if count < 0 {
                return Ok(Some((Value::Array(None), after)));
            }
            let mut items = Vec::new();
            let mut used = after;
            for _ in 0..count {
                match parse(&buffer[used..])? {
                    Some((item, length)) => {
                        items.push(item);
                        used += length;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Value::Array(Some(items)), used)))
        }
        _ => Err(bad("an unknown reply type")),
    }
}

/// A connection.
#[derive(Debug)]
pub struct Client<S> {
    stream: S,
    buffer: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// Wraps a connected stream.
    pub fn new(stream: S) -> Self {
        Self {
            stream,
            buffer: Vec::new(),
        }
    }

    /// Sends one command and reads its reply.
    pub async fn call(&mut self, args: &[&str]) -> io::Result<Value> {
        let request: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
        self.send(&[request]).await?;
        self.read().await
    }

    /// Sends requests back to back (a pipeline), in one write.
    pub async fn send(&mut self, requests: &[Vec<String>]) -> io::Result<()> {
        let mut bytes = Vec::new();
        for request in requests {
            encode(request, &mut bytes);
        }
        self.stream.write_all(&bytes).await?;
        self.stream.flush().await
    }

    /// Reads one reply (of a request sent before, or a pushed message).
    pub async fn read(&mut self) -> io::Result<Value> {
        loop {
            if let Some((value, used)) = parse(&self.buffer)? {
                self.buffer.drain(..used);
                return Ok(value);
            }
            let mut chunk = [0u8; 4096];
            let read = self.stream.read(&mut chunk).await?;
            if read == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                ));
            }
            self.buffer.extend_from_slice(&chunk[..read]);
        }
    }
}

/// Appends `request` in RESP's multibulk form.
pub fn encode(request: &[String], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("*{}\r\n", request.len()).as_bytes());
    for arg in request {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_parse_whole_and_wait_when_cut() {
        let reply = b"*2\r\n$3\r\nabc\r\n*1\r\n:5\r\n";
        let (value, used) = parse(reply).unwrap().unwrap();
        assert_eq!(used, reply.len());
        assert_eq!(value.items()[0].text(), "abc");
        for cut in 0..reply.len() {
            assert_eq!(parse(&reply[..cut]).unwrap(), None, "cut at {cut}");
        }
        assert!(parse(b"?x\r\n").is_err());
        assert_eq!(parse(b"$-1\r\n").unwrap().unwrap().0, Value::Bulk(None));
    }
}
