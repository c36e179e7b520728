//! The codecs Kafka compresses a batch's records with, each decompressed
//! under a size limit, so that a small batch cannot expand without bound.
//!
//! - gzip: a gzip stream (members are concatenated if there are several).
//! - snappy: the framing of Java's snappy library that Kafka's Java client
//!   writes (a 16-byte header, then blocks of a big-endian u32 length and a
//!   raw snappy block), or a single raw snappy block, as librdkafka writes
//!   it; both are read, and the Java framing is written.
//! - lz4: one frame of the LZ4 frame format, decoded by the reference C
//!   library that librdkafka and Kafka's Java client use, so that what weir
//!   accepts its consumers can read (a stricter reading than some Rust
//!   decoders'); bytes after the frame are refused.
//! - zstd: a zstd frame.

use std::io::Read;

use super::BatchError;

/// A codec of the batch attributes' bits 0-2.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Compression {
    /// Not compressed.
    #[default]
    None = 0,
    /// gzip.
    Gzip = 1,
    /// snappy.
    Snappy = 2,
    /// LZ4 frames.
    Lz4 = 3,
    /// zstd.
    Zstd = 4,
}

/// Why records did not decompress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompressionError {
    /// The compressed bytes are not valid for the codec.
    Corrupt(String),
    /// They decompress to more than the limit.
    TooLarge {
        /// The limit.
        limit: usize,
    },
}

impl CompressionError {
    /// The batch error this failure of `compression` is.
    pub fn into_batch_error(self, compression: Compression) -> BatchError {
        match self {
            CompressionError::Corrupt(reason) => BatchError::Decompression {
                compression,
                reason,
            },
            CompressionError::TooLarge { limit } => BatchError::UncompressedTooLarge { limit },
        }
    }
}

/// The header of the Java snappy library's framing.
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_BYTES: usize = 16;
/// Uncompressed bytes per block in the Java framing that weir writes, as
/// the Java library does.
const XERIAL_BLOCK_BYTES: usize = 32 * 1024;
/// zstd's compression level for the batches weir encodes (zstd's default).
const ZSTD_LEVEL: i32 = 3;

impl Compression {
    /// The codec named by attribute bits 0-2.
    pub fn from_codec(codec: u16) -> Result<Self, BatchError> {
        match codec {
            0 => Ok(Compression::None),
            1 => Ok(Compression::Gzip),
            2 => Ok(Compression::Snappy),
            3 => Ok(Compression::Lz4),
            4 => Ok(Compression::Zstd),
            codec => Err(BatchError::UnsupportedCompression { codec }),
        }
    }

    /// Its name, as Kafka's `compression.type` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }

    /// Decompresses `input` into `out` (appending), failing if it holds
    /// more than `limit` bytes.
    pub fn decompress(
        self,
        input: &[u8],
        limit: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), CompressionError> {
        let corrupt = |error: std::io::Error| CompressionError::Corrupt(error.to_string());
        match self {
            Compression::None => append_limited(&mut &input[..], limit, out).map_err(corrupt),
            Compression::Gzip => {
                let mut decoder = flate2::read::MultiGzDecoder::new(input);
                append_limited(&mut decoder, limit, out).map_err(corrupt)
            }
            Compression::Snappy => decompress_snappy(input, limit, out),
            Compression::Lz4 => decompress_lz4(input, limit, out),
            Compression::Zstd => {
                let mut decoder =
                    zstd::stream::read::Decoder::with_buffer(input).map_err(corrupt)?;
                append_limited(&mut decoder, limit, out).map_err(corrupt)
            }
        }?;
        if out.len() > limit {
            return Err(CompressionError::TooLarge { limit });
        }
        Ok(())
    }

    /// Compresses `input`, appending to `out`.
    pub fn compress(self, input: &[u8], out: &mut Vec<u8>) -> Result<(), CompressionError> {
        use std::io::Write;
        let failed = |error: std::io::Error| CompressionError::Corrupt(error.to_string());
        match self {
            Compression::None => out.extend_from_slice(input),
            Compression::Gzip => {
                let mut encoder =
                    flate2::write::GzEncoder::new(&mut *out, flate2::Compression::default());
                encoder.write_all(input).map_err(failed)?;
                encoder.finish().map_err(failed)?;
            }
            Compression::Snappy => compress_snappy(input, out)?,
            Compression::Lz4 => {
                let mut encoder = lz4::EncoderBuilder::new()
                    .block_size(lz4::BlockSize::Max64KB)
                    .block_mode(lz4::BlockMode::Independent)
                    .build(&mut *out)
                    .map_err(failed)?;
                encoder.write_all(input).map_err(failed)?;
                let (_, finished) = encoder.finish();
                finished.map_err(failed)?;
            }
            Compression::Zstd => {
                let compressed = zstd::bulk::compress(input, ZSTD_LEVEL).map_err(failed)?;
                out.extend_from_slice(&compressed);
            }
        }
        Ok(())
    }
}

/// Reads `reader` to its end into `out`, stopping one byte past `limit`
/// so that the caller sees an oversize result without reading it all.
fn append_limited(reader: &mut impl Read, limit: usize, out: &mut Vec<u8>) -> std::io::Result<()> {
    let room = limit.saturating_add(1).saturating_sub(out.len()) as u64;
    reader.take(room).read_to_end(out)?;
    Ok(())
}

fn decompress_lz4(input: &[u8], limit: usize, out: &mut Vec<u8>) -> Result<(), CompressionError> {
    let corrupt = |error: std::io::Error| CompressionError::Corrupt(error.to_string());
    let mut decoder = lz4::Decoder::new(input).map_err(corrupt)?;
    append_limited(&mut decoder, limit, out).map_err(corrupt)?;
    if out.len() > limit {
        return Ok(());
    }
    let (rest, finished) = decoder.finish();
    finished.map_err(corrupt)?;
    if !rest.is_empty() {
        return Err(CompressionError::Corrupt(
            "bytes after the lz4 frame".into(),
        ));
    }
    Ok(())
}

fn decompress_snappy(
    input: &[u8],
    limit: usize,
    out: &mut Vec<u8>,
) -> Result<(), CompressionError> {
    if input.len() >= XERIAL_HEADER_BYTES && input.starts_with(XERIAL_MAGIC) {
        let mut rest = &input[XERIAL_HEADER_BYTES..];
        while !rest.is_empty() {
            let Some((length, tail)) = rest.split_first_chunk::<4>() else {
                return Err(CompressionError::Corrupt(
                    "snappy block length cut short".into(),
                ));
            };
            let length = u32::from_be_bytes(*length) as usize;
            let Some(block) = tail.get(..length) else {
                return Err(CompressionError::Corrupt("snappy block cut short".into()));
            };
            decompress_snappy_block(block, limit, out)?;
            rest = &tail[length..];
        }
        Ok(())
    } else {
        decompress_snappy_block(input, limit, out)
    }
}

fn decompress_snappy_block(
    block: &[u8],
    limit: usize,
    out: &mut Vec<u8>,
) -> Result<(), CompressionError> {
    let corrupt = |error: snap::Error| CompressionError::Corrupt(error.to_string());
    let length = snap::raw::decompress_len(block).map_err(corrupt)?;
    if out.len().saturating_add(length) > limit {
        return Err(CompressionError::TooLarge { limit });
    }
    let start = out.len();
    out.resize(start + length, 0);
    let written = snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(corrupt)?;
    out.truncate(start + written);
    Ok(())
}

fn compress_snappy(input: &[u8], out: &mut Vec<u8>) -> Result<(), CompressionError> {
    out.extend_from_slice(XERIAL_MAGIC);
    // Version 1, compatible with version 1.
    out.extend_from_slice(&1u32.to_be_bytes());
    out.extend_from_slice(&1u32.to_be_bytes());
    let mut encoder = snap::raw::Encoder::new();
    for block in input.chunks(XERIAL_BLOCK_BYTES) {
        let compressed = encoder
            .compress_vec(block)
            .map_err(|error| CompressionError::Corrupt(error.to_string()))?;
        let length = u32::try_from(compressed.len()).expect("a block of a batch below 64 MiB");
        out.extend_from_slice(&length.to_be_bytes());
        out.extend_from_slice(&compressed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    #[test]
    fn every_codec_round_trips() {
        let input: Vec<u8> = (0..100_000u32).map(|index| (index % 251) as u8).collect();
        for compression in ALL {
            let mut compressed = Vec::new();
            compression
                .compress(&input, &mut compressed)
                .expect("compress");
            let mut out = Vec::new();
            compression
                .decompress(&compressed, input.len(), &mut out)
                .expect("decompress");
            assert_eq!(out, input, "{compression:?}");
        }
    }

    #[test]
    fn decompression_stops_at_the_limit() {
        let input = vec![0u8; 1 << 20];
        for compression in ALL {
            let mut compressed = Vec::new();
            compression
                .compress(&input, &mut compressed)
                .expect("compress");
            let mut out = Vec::new();
            let error = compression
                .decompress(&compressed, 4096, &mut out)
                .expect_err("over the limit");
            assert_eq!(
                error,
                CompressionError::TooLarge { limit: 4096 },
                "{compression:?}"
            );
            assert!(
                out.len() <= 4097 + 64 * 1024,
                "{compression:?} read {}",
                out.len()
            );
        }
    }

    #[test]
    fn raw_snappy_as_librdkafka_writes_it_is_read() {
        let input = b"abcabcabcabc hello hello hello".repeat(10);
        let raw = snap::raw::Encoder::new()
            .compress_vec(&input)
            .expect("compress");
        let mut out = Vec::new();
        Compression::Snappy
            .decompress(&raw, 1 << 20, &mut out)
            .expect("raw snappy");
        assert_eq!(out, input);
    }

    #[test]
    fn garbage_is_an_error_for_every_codec() {
        for compression in &ALL[1..] {
            let mut out = Vec::new();
            assert!(compression
                .decompress(b"definitely not compressed data", 1 << 20, &mut out)
                .is_err());
        }
    }
}
