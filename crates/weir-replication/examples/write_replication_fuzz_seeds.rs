//! Writes the seed inputs of this crate's fuzz targets to a corpus
//! directory: `cargo run -p weir-replication --example
//! write_replication_fuzz_seeds -- fuzz/corpus` (what `cargo xtask
//! fuzz-seed` runs).

fn main() -> std::io::Result<()> {
    let corpus = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fuzz/corpus".to_string());
    for (target, name, bytes) in weir_replication::fuzzing::seed_corpus() {
        let directory = std::path::Path::new(&corpus).join(target);
        std::fs::create_dir_all(&directory)?;
        std::fs::write(directory.join(format!("seed-{name}")), bytes)?;
    }
    Ok(())
}
