//! The weir node: a single-node server that serves the stream engine
//! ([`weir_stream`]) over the Redis protocol, so that unmodified Redis
//! clients and tools work against it.
//!
//! - [`resp`]: the incremental, zero-copy RESP2/RESP3 request parser, with
//!   named limits;
//! - [`node`]: the shared state (keyspace and command log, clients,
//!   statistics) behind one lock;
//! - [`connection`]: one task per client: read, run a batch of requests,
//!   write; blocked reads and pub/sub without extra threads;
//! - [`commands`], [`admin`], [`table`]: the commands the server itself
//!   answers, and the command table; [`session`]: what both need (a
//!   connection's session, a command's response), importing neither;
//! - [`server`]: the listener, the timer, graceful shutdown;
//! - [`config`]: settings from defaults, a TOML file and flags;
//! - [`inspect`]: offline checks of a data directory.
//!
//! Networking and timers come from `tokio`, which is `madsim-tokio`: the
//! same code runs on real tokio, and under madsim's deterministic
//! simulator when built with `--cfg madsim`.

pub mod admin;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod connection;
pub mod fuzzing;
pub mod inspect;
pub mod node;
pub mod resp;
pub mod server;
pub mod session;
pub mod table;

pub use config::Settings;
pub use node::{Node, StartError};
