//! One client connection: read, parse every complete request, run them
//! under one lock acquisition, write the replies; between reads, wait for
//! the replies of a blocked read, pub/sub messages, or a kill.
//!
//! A connection never holds the node's lock across an `await`. A malformed
//! request gets its protocol error and closes this connection only; a
//! client that sends more than its query-buffer limit is closed; one that
//! does not read its pub/sub messages is closed by the engine's output
//! limits. None of this touches other clients.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;
use weir_stream::{Error, Reply};

use crate::commands::{self, Session};
use crate::node::{Node, Runtime, State};
use crate::resp::{self, Parsed, Parser};

/// Bytes to have free in the read buffer before reading.
const READ_CHUNK: usize = 16 << 10;

/// Why a connection ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// The client closed it (or QUIT).
    Closed,
    /// A protocol error or the query-buffer limit.
    ProtocolError,
    /// CLIENT KILL, an output limit, or a failed sync.
    Killed(&'static str),
    /// The node is shutting down.
    Shutdown,
    /// A read or write failed.
    Io,
}

/// Serves one accepted connection until it ends.
pub async fn serve<S>(node: Arc<Node>, stream: S, addr: SocketAddr, laddr: SocketAddr) -> Ended
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let notify = Arc::new(Notify::new());
    let (mut reader, mut writer) = tokio::io::split(stream);
    let registered = {
        let mut state = node.lock();
        let now = node.clock.now_ms();
        state
            .register_client(addr, laddr, now, Arc::clone(&notify))
            .map(|id| {
                (
                    id,
                    state.runtime.requirepass.is_empty(),
                    parser_limits(&state.runtime),
                )
            })
    };
    let Some((id, authenticated, limits)) = registered else {
        let _ = writer
            .write_all(b"-ERR max number of clients reached\r\n")
            .await;
        let _ = writer.flush().await;
        return Ended::Closed;
    };
    tracing::debug!(client = id, %addr, "client connected");
    let mut connection = Connection {
        node: Arc::clone(&node),
        session: Session::new(id, authenticated),
        parser: Parser::new(limits),
        input: Vec::with_capacity(READ_CHUNK),
        start: 0,
        output: Vec::with_capacity(READ_CHUNK),
        uncounted_input: 0,
        unsettled: false,
    };
    let ended = connection.run(&mut reader, &mut writer, &notify).await;
    let _ = writer.shutdown().await;
    node.lock().remove_client(id);
    tracing::debug!(client = id, ?ended, "client disconnected");
    ended
}

struct Connection {
    node: Arc<Node>,
    session: Session,
    parser: Parser,
    /// Bytes read; `input[start..]` is not processed yet.
    input: Vec<u8>,
    start: usize,
    output: Vec<u8>,
    /// Bytes read and not yet counted in the statistics.
    uncounted_input: u64,
    /// The last batch left records for the command log: they are written
    /// (and, with `always`, synced) before its replies go out.
    unsettled: bool,
}

impl Connection {
    async fn run<R, W>(&mut self, reader: &mut R, writer: &mut W, notify: &Notify) -> Ended
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        // One wait for the whole connection (registered once, not at every
        // turn of the loop).
        let shutdown = self.node.shutdown.clone();
        let requested = shutdown.requested();
        tokio::pin!(requested);
        loop {
            let protocol_error = self.process();
            if self.unsettled {
                // Let the other ready clients run their commands first:
                // one write (and one sync) of the command log then covers
                // all of them, as Redis writes its AOF once per event-loop
                // turn before any reply.
                tokio::task::yield_now().await;
                let node = Arc::clone(&self.node);
                let mut state = node.lock();
                self.settle(&mut state);
            }
            if !self.output.is_empty() {
                // The flush is a no-op on a real socket; madsim's simulated
                // TCP sends only what is flushed.
                let mut written = writer.write_all(&self.output).await;
                if written.is_ok() {
                    written = writer.flush().await;
                }
                self.output.clear();
                if written.is_err() {
                    return Ended::Io;
                }
            }
            if protocol_error {
                return Ended::ProtocolError;
            }
            if self.session.close {
                return Ended::Closed;
            }
            self.compact();
            if self.input.capacity() - self.input.len() < READ_CHUNK / 4 {
                self.input.reserve(READ_CHUNK);
            }
            tokio::select! {
                biased;
                () = &mut requested => return Ended::Shutdown,
                _ = notify.notified() => {
                    // Let the clients that are ready run first: what they
                    // publish or add for this one then leaves in one write,
                    // as Redis flushes replies once per event-loop turn.
                    tokio::task::yield_now().await;
                    if let Some(reason) = self.deliver() {
                        // Write what was delivered before closing.
                        let _ = writer.write_all(&self.output).await;
                        let _ = writer.flush().await;
                        return Ended::Killed(reason);
                    }
                }
                read = reader.read_buf(&mut self.input) => match read {
                    Ok(0) => return Ended::Closed,
                    Ok(bytes) => {
                        self.uncounted_input += bytes as u64;
                        if self.input.len() - self.start > self.query_limit() {
                            return self.query_buffer_full(writer).await;
                        }
                    }
                    Err(_) => return Ended::Io,
                },
            }
        }
    }

    fn query_limit(&self) -> usize {
        self.parser.limits().max_query_buffer_bytes
    }

    async fn query_buffer_full<W: AsyncWrite + Unpin>(&mut self, writer: &mut W) -> Ended {
        let limit = self.query_limit();
        {
            let mut state = self.node.lock();
            state.stats.query_buffer_disconnections += 1;
        }
        tracing::warn!(
            client = self.session.id,
            limit,
            "closing a client that reached the query buffer limit"
        );
        let error = Reply::Error(Error::err(resp::ProtocolError::QueryBufferFull { limit }));
        let mut out = Vec::new();
        error.write_resp2(&mut out);
        let _ = writer.write_all(&out).await;
        let _ = writer.flush().await;
        Ended::ProtocolError
    }

    /// Runs every complete request in the buffer (until one blocks or
    /// closes); returns whether a protocol error ended the connection.
    fn process(&mut self) -> bool {
        if self.session.blocked || self.start == self.input.len() {
            return false;
        }
        let node = Arc::clone(&self.node);
        let mut guard = None;
        let mut protocol_error = false;
        let mut reserve = 0;
        let mut recycled: Vec<&[u8]> = Vec::with_capacity(8);
        while !self.session.blocked && !self.session.close {
            let pending = &self.input[self.start..];
            match self.parser.parse(pending, self.session.authenticated) {
                Ok(Parsed::Request { consumed }) => {
                    if !self.parser.args().is_empty() {
                        let mut argv = recycle(recycled);
                        argv.extend(
                            self.parser
                                .args()
                                .iter()
                                .map(|arg| resp::arg_bytes(pending, arg)),
                        );
                        if guard.is_none() {
                            let state = node.lock();
                            // One clock read for the whole batch.
                            self.session.now_ms = Some(node.clock.now_ms());
                            // A client killed while its requests were on
                            // their way runs none of them after the kill,
                            // as Redis closes it before reading more.
                            let killed = state
                                .clients
                                .get(&self.session.id)
                                .is_some_and(|entry| entry.killed.is_some());
                            if killed {
                                self.session.close = true;
                                break;
                            }
                            guard = Some(state);
                        }
                        let state = guard.as_mut().expect("the lock was just taken");
                        commands::run(&mut self.session, &node, state, &argv, &mut self.output);
                        recycled = recycle(argv);
                    }
                    self.start += consumed;
                }
                Ok(Parsed::Incomplete { reserve: wanted }) => {
                    reserve = wanted;
                    break;
                }
                Err(error) => {
                    let state = guard.get_or_insert_with(|| node.lock());
                    state.stats.protocol_errors += 1;
                    tracing::debug!(client = self.session.id, %error, "protocol error");
                    let reply = Reply::Error(Error::err(&error));
                    commands::emit(&self.session, state, &reply, &mut self.output);
                    protocol_error = true;
                    self.session.close = true;
                    break;
                }
            }
        }
        self.session.now_ms = None;
        self.session.mark = None;
        if reserve > 0 {
            // A large bulk string is arriving: make room for it at once.
            let wanted = reserve.min(self.query_limit());
            if self.input.capacity() - self.input.len() < wanted {
                self.input.reserve(wanted);
            }
        }
        if let Some(mut state) = guard {
            if state.db.has_uncommitted() {
                self.unsettled = true;
            } else {
                self.settle(&mut state);
            }
            self.account(&mut state);
        }
        protocol_error
    }

    /// Writes the command log's queued records (this batch's and any other
    /// client's) and hands out what the batch woke; on a failure that must
    /// withhold the replies, the connection closes without them.
    fn settle(&mut self, state: &mut State) {
        self.unsettled = false;
        if let Err(error) = state.settle() {
            tracing::error!(client = self.session.id, %error, "the command log could not be synced: closing the connection without replies");
            self.output.clear();
            self.session.close = true;
        }
    }

    /// Counts traffic and picks up limits changed by CONFIG SET.
    fn account(&mut self, state: &mut State) {
        state.stats.net_input_bytes += std::mem::take(&mut self.uncounted_input);
        state.stats.net_output_bytes += self.output.len() as u64;
        let limits = parser_limits(&state.runtime);
        if limits != self.parser.limits() {
            self.parser.set_limits(limits);
        }
    }

    /// Takes what other clients left for this one: the reply of a blocked
    /// read, pub/sub messages. Returns the reason if it must close.
    fn deliver(&mut self) -> Option<&'static str> {
        let node = Arc::clone(&self.node);
        let mut state = node.lock();
        let entry = state.clients.get_mut(&self.session.id)?;
        if let Some(reason) = entry.killed {
            return Some(reason);
        }
        let replies = std::mem::take(&mut entry.inbox);
        entry.inbox_bytes = 0;
        if !replies.is_empty() {
            self.session.blocked = false;
            entry.blocked = false;
        }
        // The first reply completes the blocking read, if one waited.
        if let Some(first) = replies.first() {
            if let Some(call) = self.session.blocked_call.take() {
                commands::count_blocked_call(&mut state, &call, first);
            }
        }
        for reply in &replies {
            commands::emit(&self.session, &mut state, reply, &mut self.output);
        }
        let messages = state.db.engine().pubsub().drain(self.session.id);
        for reply in commands::message_replies(messages) {
            self.session.encode(&reply, &mut self.output);
        }
        self.account(&mut state);
        None
    }

    /// Drops processed bytes from the read buffer.
    fn compact(&mut self) {
        if self.start == self.input.len() {
            self.input.clear();
            self.start = 0;
            if self.input.capacity() > 4 * READ_CHUNK {
                self.input.shrink_to(READ_CHUNK);
            }
        } else if self.start > 0 {
            self.input.drain(..self.start);
            self.start = 0;
        }
    }
}

/// Reuses a vector's allocation for borrows of another lifetime (the
/// arguments of the next request), so that running a request allocates
/// nothing. The vector is emptied first; the map never runs.
fn recycle<'a, 'b>(mut vector: Vec<&'a [u8]>) -> Vec<&'b [u8]> {
    vector.clear();
    vector
        .into_iter()
        .map(|_| -> &'b [u8] { unreachable!("the vector is empty") })
        .collect()
}

/// The request limits the node's settings give a connection's parser.
fn parser_limits(runtime: &Runtime) -> resp::Limits {
    resp::Limits {
        max_bulk_bytes: runtime.proto_max_bulk_len,
        max_query_buffer_bytes: runtime.client_query_buffer_limit,
        ..resp::Limits::default()
    }
}
