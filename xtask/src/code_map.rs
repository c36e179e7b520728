//! Keeps ARCHITECTURE.md's code map honest: every source file it names
//! exists, and every module of each crate it maps is named there. Run by
//! `cargo test` (this crate's tests), so a renamed, added or removed module
//! fails the build's tests until the map says so.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// One `### \`<directory>\`` section of the code map: the crate's directory
/// and the backquoted names in it.
struct Section {
    directory: String,
    names: BTreeSet<String>,
}

/// The sections of the code map (between `## Code map` and the next `## `).
fn sections(architecture: &str) -> Vec<Section> {
    let map = architecture
        .split("\n## Code map")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .unwrap_or("");
    let mut sections = Vec::new();
    for block in map.split("\n### ").skip(1) {
        let heading = block.lines().next().unwrap_or("");
        let Some(directory) = heading.strip_prefix('`').and_then(|h| h.strip_suffix('`')) else {
            continue;
        };
        let body = block.split_once('\n').map_or("", |(_, body)| body);
        let names = body
            .split('`')
            .skip(1)
            .step_by(2)
            .map(|name| name.trim().to_string())
            .filter(|name| is_path_like(name))
            .collect();
        sections.push(Section {
            directory: directory.trim_end_matches('/').to_string(),
            names,
        });
    }
    sections
}

/// A file (`x.rs`) or a directory (`x/`) name, as the map writes them.
fn is_path_like(name: &str) -> bool {
    let plain = |part: &str| {
        !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
    };
    (name.ends_with(".rs") && name.split('/').all(plain))
        || (name.ends_with('/') && name.trim_end_matches('/').split('/').all(plain))
}

/// The workspace's root directory (xtask's parent), for the source checks.
pub(crate) fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
}

/// Every `.rs` file under `directory`, relative to it.
pub(crate) fn rust_files(directory: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![directory.to_path_buf()];
    while let Some(next) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&next) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                found.push(path.strip_prefix(directory).unwrap_or(&path).to_path_buf());
            }
        }
    }
    found.sort();
    found
}

/// What is wrong with the code map of the tree at `root`: names of files
/// that do not exist, and modules the map does not name.
pub fn problems(root: &Path) -> Vec<String> {
    let architecture = std::fs::read_to_string(root.join("docs/ARCHITECTURE.md"))
        .unwrap_or_else(|error| panic!("docs/ARCHITECTURE.md: {error}"));
    let mut problems = Vec::new();
    for section in sections(&architecture) {
        let base = root.join(&section.directory);
        if !base.is_dir() {
            problems.push(format!("`{}`: no such directory", section.directory));
            continue;
        }
        let files = rust_files(&base);
        let directories: BTreeSet<String> = files
            .iter()
            .filter_map(|file| file.parent())
            .flat_map(|parent| parent.ancestors().map(|a| a.to_string_lossy().into_owned()))
            .filter(|dir| !dir.is_empty())
            .map(|dir| format!("{}/", dir.rsplit('/').next().unwrap_or(&dir)))
            .collect();
        let basenames: BTreeSet<String> = files
            .iter()
            .map(|file| file.to_string_lossy().into_owned())
            .flat_map(|file| {
                let base = file.rsplit('/').next().unwrap_or(&file).to_string();
                let in_src = file.strip_prefix("src/").unwrap_or(&file).to_string();
                [file, base, in_src]
            })
            .collect();
        for name in &section.names {
            let exists = match name.strip_suffix('/') {
                Some(_) => directories.contains(name) || base.join(name).is_dir(),
                None => basenames.contains(name) || base.join(name).is_file(),
            };
            if !exists {
                problems.push(format!(
                    "`{}` names `{name}`, which does not exist",
                    section.directory
                ));
            }
        }
        for file in files.iter().filter(|file| file.starts_with("src")) {
            let module = file.strip_prefix("src").unwrap_or(file);
            let text = module.to_string_lossy();
            let base = text.rsplit('/').next().unwrap_or(&text).to_string();
            let named = match base.as_str() {
                "lib.rs" | "main.rs" if !text.contains('/') => true,
                "mod.rs" => {
                    let parent = text.rsplit('/').nth(1).unwrap_or("");
                    section.names.contains(&format!("{parent}/"))
                }
                _ => section.names.contains(&base) || section.names.contains(text.as_ref()),
            };
            if !named {
                problems.push(format!(
                    "`{}/{}` is not named in the code map of `{}`",
                    section.directory,
                    file.display(),
                    section.directory
                ));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_code_map_names_every_module_and_only_files_that_exist() {
        let problems = problems(crate::code_map::workspace_root());
        assert!(
            problems.is_empty(),
            "docs/ARCHITECTURE.md's code map is out of date:\n  {}",
            problems.join("\n  ")
        );
    }

    #[test]
    fn a_missing_module_and_a_stale_name_are_reported() {
        let root = std::env::temp_dir().join(format!("weir-code-map-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("docs")).unwrap();
        std::fs::create_dir_all(root.join("crates/c/src/part")).unwrap();
        for file in [
            "lib.rs",
            "named.rs",
            "unnamed.rs",
            "part/mod.rs",
            "part/inner.rs",
        ] {
            std::fs::write(root.join("crates/c/src").join(file), "").unwrap();
        }
        std::fs::write(
            root.join("docs/ARCHITECTURE.md"),
            "# A\n\n## Code map\n\n### `crates/c`\n\n- `named.rs`, `gone.rs`.\n- `part/`: `inner.rs`.\n\n## After\n\n`ignored.rs`\n",
        )
        .unwrap();
        let problems = problems(&root);
        let _ = std::fs::remove_dir_all(&root);
        assert_eq!(
            problems,
            vec![
                "`crates/c` names `gone.rs`, which does not exist".to_string(),
                "`crates/c/src/unnamed.rs` is not named in the code map of `crates/c`".to_string(),
            ]
        );
    }
}
