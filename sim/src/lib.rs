//! weir-sim: the deterministic simulator of weir.
//!
//! The real `weir-server` node runs on madsim's simulated network and time,
//! with its command log on a `weir_io::SimDisk` whose power loss is tied to
//! the simulated node's kill; workload clients talk to it over RESP; a
//! seeded fault injector crashes, pauses and partitions it; the checkers in
//! [`check`] decide whether what the clients saw keeps weir's promises.
//!
//! The simulation itself (`harness`) exists only with `--cfg madsim`:
//! `cargo xtask sim` builds it that way in its own target directory. The
//! checkers and the RESP client are plain code, unit-tested by plain
//! `cargo test`. See docs/SIMULATION.md.

pub mod check;
pub mod client;
#[cfg(madsim)]
pub mod cluster;
pub mod coverage;
pub mod events;
#[cfg(madsim)]
pub mod harness;
#[cfg(madsim)]
pub mod kafka;
pub mod model;
