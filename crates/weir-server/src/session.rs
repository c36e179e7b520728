//! What both the command runner (`commands`) and the server's own
//! administrative commands (`admin`) need, in a module that imports
//! neither: a connection's session, a command's response, the HELP and
//! unknown-subcommand replies.

use weir_stream::{ClientId, Error, Reply};

/// The version reported to clients (the Redis release whose behaviour weir
/// follows by default).
pub const REDIS_VERSION: &str = "7.4.0";

/// A connection's own state.
#[derive(Debug)]
pub struct Session {
    /// Its client id.
    pub id: ClientId,
    /// 2 or 3.
    pub resp: u8,
    /// Whether it may run commands (always, when no password is set).
    pub authenticated: bool,
    /// Inside MULTI.
    pub multi: Option<Multi>,
    /// Pub/sub subscriptions.
    pub subscriptions: usize,
    /// Waiting in a blocking read.
    pub blocked: bool,
    /// The blocking read it waits in, for commandstats.
    pub blocked_call: Option<BlockedCall>,
    /// Close once the replies so far are written.
    pub close: bool,
    /// The time of the batch of requests being run, read once for all of
    /// them (`None` outside a batch: read the clock).
    pub now_ms: Option<u64>,
    /// When the last command of the batch ended: the next one's start, so
    /// that timing a batch's commands reads the clock once per command.
    pub mark: Option<std::time::Instant>,
}

/// A blocking read waiting to complete, as commandstats sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockedCall {
    /// Its commandstats name.
    pub name: String,
    /// Microseconds it ran before blocking.
    pub usec: u64,
    /// Already counted as a call when it blocked (Redis 7.0).
    pub counted: bool,
}

impl Session {
    /// A new connection's session.
    pub fn new(id: ClientId, authenticated: bool) -> Self {
        Self {
            id,
            resp: 2,
            authenticated,
            multi: None,
            subscriptions: 0,
            blocked: false,
            blocked_call: None,
            close: false,
            now_ms: None,
            mark: None,
        }
    }

    /// Appends a reply in the session's protocol.
    pub fn encode(&self, reply: &Reply, out: &mut Vec<u8>) {
        if self.resp == 3 {
            reply.write_resp3(out);
        } else {
            reply.write_resp2(out);
        }
    }
}

/// A transaction being queued.
#[derive(Debug, Default)]
pub struct Multi {
    /// The queued commands.
    pub queued: Vec<Vec<Vec<u8>>>,
    /// Whether a queued command was refused (EXEC then aborts).
    pub aborted: bool,
}

/// What a command produced.
#[derive(Debug)]
pub enum Response {
    /// One reply.
    Reply(Reply),
    /// Several replies (one per channel of SUBSCRIBE and friends).
    Replies(Vec<Reply>),
    /// The client blocked; its reply comes later.
    Blocked,
}

impl From<Reply> for Response {
    fn from(reply: Reply) -> Self {
        Response::Reply(reply)
    }
}

impl From<Error> for Response {
    fn from(error: Error) -> Self {
        Response::Reply(Reply::Error(error))
    }
}

/// Redis's reply to an unknown subcommand.
pub fn unknown_subcommand(sub: &[u8], container: &str) -> Response {
    Error::err(format_args!(
        "unknown subcommand '{}'. Try {container} HELP.",
        String::from_utf8_lossy(sub)
            .chars()
            .take(128)
            .collect::<String>()
    ))
    .into()
}

/// A HELP reply: a header line, the lines, and the HELP line.
pub fn help(container: &str, lines: &[&str]) -> Response {
    let mut replies = vec![Reply::Simple(
        format!("{container} <subcommand> [<arg> [value] [opt] ...]. Subcommands are:").into(),
    )];
    replies.extend(
        lines
            .iter()
            .map(|line| Reply::Simple((*line).to_string().into())),
    );
    replies.push(Reply::Simple("HELP".into()));
    replies.push(Reply::Simple("    Print this help.".into()));
    Reply::Array(replies).into()
}
