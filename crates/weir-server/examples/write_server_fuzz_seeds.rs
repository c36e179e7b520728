//! Writes the seed inputs of the server fuzz targets (RESP parser and sessions) to a corpus
//! directory: `cargo run -p weir-server --example write_server_fuzz_seeds -- fuzz/corpus`.

fn main() -> std::io::Result<()> {
    let corpus = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fuzz/corpus".to_string());
    for (target, name, bytes) in weir_server::fuzzing::seed_corpus() {
        let directory = std::path::Path::new(&corpus).join(target);
        std::fs::create_dir_all(&directory)?;
        std::fs::write(directory.join(format!("seed-{name}")), bytes)?;
    }
    Ok(())
}
