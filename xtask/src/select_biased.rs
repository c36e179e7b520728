//! Every `select!` in code the simulator runs must be `biased;`.
//!
//! An unbiased `tokio::select!` polls its branches in an order drawn from
//! tokio's thread-local generator, which tokio seeds from a counter shared
//! by the whole process: two simulations of one seed in one process (as
//! madsim's determinism check runs them) then poll in different orders.
//! When two branches are ready together, or when the first one polled
//! arms a timer, the runs part (cluster seed 100003 did, at 87.6 s, in an
//! unbiased `select!` of the metadata wait). Run by `cargo test`.

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

/// Every unbiased `select!` under the simulated directories of `root`.
fn problems(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for directory in SIMULATED {
        let base = root.join(directory);
        assert!(base.is_dir(), "{directory}: no such directory");
        for file in crate::code_map::rust_files(&base) {
            let path = base.join(&file);
            let source = std::fs::read_to_string(&path)
                .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
            found.extend(unbiased(
                &format!("{directory}/{}", file.display()),
                &source,
            ));
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
            "unbiased select! (polls in an order seeded per process, so one seed's \
             runs in one process differ); write `biased;` first:\n  {}",
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
}
