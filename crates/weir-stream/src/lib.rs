//! weir's in-memory stream engine: Redis Streams and Redis Pub/Sub
//! semantics on a compact representation, with persistence through
//! [`weir_io`].
//!
//! From Rust, call it through the typed API ([`api`]): [`Engine::add`],
//! [`Engine::range`], [`Engine::read`], [`Engine::read_group`],
//! [`Engine::ack`], [`Engine::claim`], [`Engine::auto_claim`], [`Engine::trim`] and the group
//! calls, with typed results and [`StreamError`]s (through a [`Store`]:
//! [`Store::run`], so that the command log records them). A server speaks
//! Redis's terms instead: [`Engine::execute`] takes a command as Redis
//! receives it and returns a [`Reply`] precise enough to render every
//! Redis reply in RESP2 and RESP3 (null bulk vs null array, maps, Redis's
//! exact error texts); each command parses its arguments and runs the same
//! code as its typed call. It has no threads, no I/O and no clock of its own:
//! time comes from the [`weir_io::Clock`] it is given, blocking reads are
//! registered in the engine and answered through [`Engine::take_wakeups`],
//! and what a command changed is queued for the command log through
//! [`Engine::take_propagated`].
//!
//! ```
//! use std::sync::Arc;
//! use weir_io::ManualClock;
//! use weir_stream::{Config, Context, Engine, Outcome, Reply};
//!
//! let mut engine = Engine::new(Config::default(), Arc::new(ManualClock::new(1_000)));
//! let context = Context::default();
//! let added = engine.execute(&context, &[b"XADD", b"orders", b"*", b"item", b"book"]);
//! assert_eq!(added, Outcome::Reply(Reply::bulk("1000-0")));
//! let length = engine.execute(&context, &[b"XLEN", b"orders"]);
//! assert_eq!(length, Outcome::Reply(Reply::Integer(1)));
//! ```
#![warn(missing_docs)]
// Lossy `as` casts are refused in the engines: each conversion either
// cannot lose (checked with `try_from`) or says why losing is intended.
#![cfg_attr(
    not(test),
    warn(clippy::cast_possible_truncation, clippy::cast_sign_loss)
)]

pub mod api;
mod commands;
mod engine;
pub mod fuzzing;
pub mod group;
pub mod id;
mod info;
pub mod listpack;
pub mod persistence;
pub mod pubsub;
pub mod reply;
mod snapshot;
pub mod stream;
mod table;

pub use api::{
    AddOptions, AutoClaim, ClaimOptions, Delivered, GroupStart, ReadFrom, StreamEntry, StreamError,
    StreamRead, Trim,
};
pub use commands::unknown_command;
pub use engine::{
    ClientId, Compatibility, Config, Context, Engine, FxHasher, Keyspace, Outcome, Stats,
};
pub use id::{IdSpec, StreamId};
pub use persistence::{FsyncPolicy, LogRecovery, PersistenceError, Store};
pub use reply::{EntryReply, Error, Reply};
pub use stream::{NodeLimits, TrimStrategy};
pub use table::{
    arity_fits, command, commands, is_stream_command, is_write_command, CommandInfo, Subcommand,
};

/// The crate's README, whose examples `cargo test --doc` compiles.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
