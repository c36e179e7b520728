//! Every `select!` in code the simulator runs must be `biased;`.
//!
//! An unbiased `tokio::select!` polls its branches in an order drawn from
//! tokio's thread-local generator, which tokio seeds from a counter shared
//! by the whole process: two simulations of one seed in one process (as
//! madsim's determinism check runs them) then poll in different orders.
//! When two branches are ready together, or when the first one polled
//! arms a timer, the runs part (cluster seed 100003 did, at 87.6 s, in an
//! unbiased `select!` of the metadata wait). Run by `cargo test`.
//!
//! Nor may that code use tokio's `watch` channel: a receiver waits on one
//! of eight wakers picked by the same generator, so a send wakes its
//! waiters in an order that differs between the two runs (the cluster
//! nemesis's clean shutdowns parted cluster seeds 100000 to 100004 so, at
//! the shutdown). `weir_kafka::shutdown::Shutdown` is the signal to use.

use std::path::Path;

/// The directories whose code runs inside the simulation.
const SIMULATED: &[&str] = &[
    "crates/weir-io/src",
    "crates/weir-log/src",
    "crates/weir-stream/src",
    "crates/weir-kafka/src",
    "crates/weir-replication/src",
    "crates/weir-server/src",
    "sim/src",
];

/// `file:line` of each `select!` in `source` whose first token is not
/// `biased;`.
fn unbiased(file: &str, source: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (index, _) in source.match_indices("select! {") {
        let line = source[..index].lines().count().max(1);
        let quoted = source[..index].lines().last().unwrap_or("");
        if quoted.trim_start().starts_with("//") {
            continue;
        }
        let body = source[index + "select! {".len()..].trim_start();
        if !body.starts_with("biased;") {
            found.push(format!("{file}:{line}"));
        }
    }
    found
}

/// `file:line` of each use of tokio's `watch` channel in `source`,
/// outside comments.
fn watch_channels(file: &str, source: &str) -> Vec<String> {
    source
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim_start().starts_with("//"))
        .filter(|(_, line)| {
            line.contains("watch::")
                || line.contains("sync::watch")
                || line.contains("sync::{watch")
        })
        .map(|(index, _)| format!("{file}:{} (a tokio watch channel)", index + 1))
        .collect()
}

/// Every unbiased `select!` and every `watch` channel under the simulated
/// directories of `root`.
fn problems(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for directory in SIMULATED {
        let base = root.join(directory);
        assert!(base.is_dir(), "{directory}: no such directory");
        for file in crate::code_map::rust_files(&base) {
            let path = base.join(&file);
            let source = std::fs::read_to_string(&path)
                .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
            let name = format!("{directory}/{}", file.display());
            found.extend(unbiased(&name, &source));
            found.extend(watch_channels(&name, &source));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_select_the_simulator_runs_is_biased() {
        let problems = problems(crate::code_map::workspace_root());
        assert!(
            problems.is_empty(),
            "unbiased select! or a watch channel (each wakes in an order seeded per \
             process, so one seed's runs in one process differ); write `biased;` \
             first, signal with weir_kafka::shutdown::Shutdown:\n  {}",
            problems.join("\n  ")
        );
    }

    #[test]
    fn an_unbiased_select_is_found_and_a_biased_or_quoted_one_is_not() {
        let source =
            "fn a() {\n    tokio::select! {\n        biased;\n        _ = x => {}\n    }\n}\n\
                      fn b() {\n    tokio::select! {\n        _ = y => {}\n    }\n}\n\
                      // tokio::select! { _ = z => {} }\n";
        assert_eq!(unbiased("f.rs", source), vec!["f.rs:8".to_string()]);
    }

    #[test]
    fn a_watch_channel_is_found_and_a_quoted_one_is_not() {
        let source = "use tokio::sync::watch;\n// tokio::sync::watch::channel\n\
                      let (tx, rx) = tokio::sync::watch::channel(false);\n";
        assert_eq!(
            watch_channels("f.rs", source),
            vec![
                "f.rs:1 (a tokio watch channel)".to_string(),
                "f.rs:3 (a tokio watch channel)".to_string()
            ]
        );
    }
}
