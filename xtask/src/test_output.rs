//! Watches `cargo test` output so that CI's summary names every failed
//! test, with the lines of its output that say how to replay it (a seed, a
//! replay command) and the command that runs it alone.

/// Lines of a failed test's output kept for the summary, at most.
const HINTS_MAX: usize = 6;

/// One failed test: the test binary cargo was running, its name, and the
/// lines of its output that mention a seed or a replay.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Failure {
    pub binary: String,
    pub name: String,
    pub hints: Vec<String>,
}

/// What has been seen of `cargo test`'s stdout so far.
#[derive(Debug, Default)]
pub struct Watch {
    binary: String,
    failures: Vec<Failure>,
    /// The failed test whose captured output is being read.
    reading: Option<String>,
}

impl Watch {
    /// Takes one line of cargo's stdout.
    pub fn line(&mut self, line: &str) {
        let trimmed = line.trim();
        if let Some(binary) = trimmed.strip_prefix("Running ") {
            self.binary = binary.to_string();
            self.reading = None;
        } else if let Some(crate_name) = trimmed.strip_prefix("Doc-tests ") {
            self.binary = format!("doc-tests {crate_name}");
            self.reading = None;
        } else if let Some(name) = trimmed
            .strip_prefix("test ")
            .and_then(|rest| rest.strip_suffix(" ... FAILED"))
        {
            self.failures.push(Failure {
                binary: self.binary.clone(),
                name: name.to_string(),
                hints: Vec::new(),
            });
        } else if let Some(name) = trimmed
            .strip_prefix("---- ")
            .and_then(|rest| rest.strip_suffix(" stdout ----"))
        {
            self.reading = Some(name.to_string());
        } else if trimmed == "failures:" {
            self.reading = None;
        } else if let Some(name) = &self.reading {
            let lower = trimmed.to_lowercase();
            if lower.contains("seed") || lower.contains("replay") {
                let binary = &self.binary;
                if let Some(failure) = self
                    .failures
                    .iter_mut()
                    .find(|failure| &failure.name == name && &failure.binary == binary)
                {
                    if failure.hints.len() < HINTS_MAX {
                        failure.hints.push(trimmed.to_string());
                    }
                }
            }
        }
    }

    /// The failures seen.
    #[cfg(test)]
    pub fn failures(&self) -> &[Failure] {
        &self.failures
    }

    /// The summary appended to a failed step's message (empty without
    /// failed tests, as for a build error).
    pub fn summary(&self) -> String {
        if self.failures.is_empty() {
            return String::new();
        }
        let mut text = format!("; {} failed test(s):", self.failures.len());
        for failure in &self.failures {
            text.push_str(&format!(
                "\n  {} in {}\n    alone: cargo test --workspace {} -- --exact {} --include-ignored",
                failure.name,
                failure.binary,
                target_argument(&failure.binary),
                failure.name
            ));
            for hint in &failure.hints {
                text.push_str(&format!("\n    | {hint}"));
            }
        }
        text
    }
}

/// The `cargo test` argument that selects the binary of a `Running` line:
/// `unittests src/lib.rs (…)` → `--lib`, `tests/name.rs (…)` → `--test
/// name`, doc tests → `--doc`.
fn target_argument(binary: &str) -> String {
    let source = binary.split(" (").next().unwrap_or(binary);
    if binary.starts_with("doc-tests") {
        return "--doc".into();
    }
    if source.ends_with("src/lib.rs") {
        return "--lib".into();
    }
    if source.contains("src/main.rs") || source.contains("src/bin/") {
        return "--bins".into();
    }
    match source
        .rsplit('/')
        .next()
        .and_then(|file| file.strip_suffix(".rs"))
    {
        Some(stem) if source.contains("tests/") => format!("--test {stem}"),
        Some(stem) if source.contains("benches/") => format!("--bench {stem}"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_tests_are_named_with_their_seed_and_the_command_that_runs_them() {
        let output = "\
     Running unittests src/lib.rs (target/debug/deps/weir_log-1)

running 2 tests
test a::passes ... ok
test b::fails ... FAILED

failures:

---- b::fails stdout ----
thread 'b::fails' panicked at src/b.rs:3:5:
seed 42 failed: an acknowledged record was lost
replay: cargo xtask sim --seed 42

failures:
    b::fails

test result: FAILED. 1 passed; 1 failed
     Running tests/crash.rs (target/debug/deps/crash-2)
test crash_under_faults ... FAILED
";
        let mut watch = Watch::default();
        for line in output.lines() {
            watch.line(line);
        }
        assert_eq!(
            watch.failures(),
            &[
                Failure {
                    binary: "unittests src/lib.rs (target/debug/deps/weir_log-1)".into(),
                    name: "b::fails".into(),
                    hints: vec![
                        "seed 42 failed: an acknowledged record was lost".into(),
                        "replay: cargo xtask sim --seed 42".into(),
                    ],
                },
                Failure {
                    binary: "tests/crash.rs (target/debug/deps/crash-2)".into(),
                    name: "crash_under_faults".into(),
                    hints: Vec::new(),
                },
            ]
        );
        let summary = watch.summary();
        assert!(summary.contains("cargo test --workspace --lib -- --exact b::fails"));
        assert!(
            summary.contains("cargo test --workspace --test crash -- --exact crash_under_faults")
        );
        assert!(summary.contains("| replay: cargo xtask sim --seed 42"));
    }

    #[test]
    fn a_step_without_failed_tests_adds_nothing() {
        let mut watch = Watch::default();
        watch.line("error[E0308]: mismatched types");
        assert_eq!(watch.summary(), "");
    }
}
