//! The one rule by which both engines read bytes they are about to judge.
//!
//! Recovery decides from what it reads where a log ends, what is a torn
//! tail and what is corruption, and it cuts files on that decision. A read
//! that returns a flipped bit while the disk holds good data must not be
//! judged: it would cut acknowledged records as a torn tail. Bytes that
//! [`AGREEING_READS`] reads return alike are taken to be what the storage
//! holds: a fault flips a random bit, so two faulty reads that agree are
//! already rare, and three are beyond the simulator's reach. Two agreeing
//! reads were not enough: the stream engine's regression test, at a 50 %
//! read-fault rate, still cut acknowledged records once in 300 seeds with
//! two. The reads that agree need not be consecutive: at high fault rates
//! three clean reads in a row are rare, three among sixteen are not.

use std::io;

use crate::{File, OpenMode, Storage};

/// Reads that must return the same bytes.
pub const AGREEING_READS: usize = 3;
/// The most reads made to get them.
pub const AGREEMENT_READS_MAX: usize = 16;

/// Reads `length` bytes at `offset` (fewer at the end of the file) until
/// [`AGREEING_READS`] reads have returned the same bytes. A failed read is
/// retried. Fails when the storage never answers the same way often
/// enough: bytes it cannot read reliably are not judged.
pub fn read_agreed(file: &dyn File, offset: u64, length: usize) -> io::Result<Vec<u8>> {
    agree(|| {
        let mut bytes = vec![0; length];
        let read = file.read_at(&mut bytes, offset)?;
        bytes.truncate(read);
        Ok(bytes)
    })
}

/// Reads the whole file `name` by the same rule, or `None` if it does not
/// exist.
pub fn read_whole_file_agreed(storage: &dyn Storage, name: &str) -> io::Result<Option<Vec<u8>>> {
    let file = match storage.open_file(name, OpenMode::Existing) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    agree(|| {
        let length = usize::try_from(file.len()?)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "file too large to read"))?;
        let mut bytes = vec![0; length];
        let read = file.read_at(&mut bytes, 0)?;
        bytes.truncate(read);
        Ok(bytes)
    })
    .map(Some)
}

fn agree(mut read: impl FnMut() -> io::Result<Vec<u8>>) -> io::Result<Vec<u8>> {
    // Each distinct answer and how often it came.
    let mut answers: Vec<(Vec<u8>, usize)> = Vec::new();
    let mut last_error = None;
    for _ in 0..AGREEMENT_READS_MAX {
        match read() {
            Ok(bytes) => {
                let index = match answers.iter().position(|(seen, _)| *seen == bytes) {
                    Some(index) => index,
                    None => {
                        answers.push((bytes, 0));
                        answers.len() - 1
                    }
                };
                answers[index].1 += 1;
                if answers[index].1 == AGREEING_READS {
                    return Ok(answers.swap_remove(index).0);
                }
            }
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{AGREEMENT_READS_MAX} reads did not return the same bytes {AGREEING_READS} times"
            ),
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Faults, SimDisk};

    #[test]
    fn agreed_reads_see_the_stored_bytes_through_frequent_flips() {
        let disk = SimDisk::new(7);
        let storage = disk.root();
        let file = storage.open_file("f", OpenMode::CreateNew).expect("create");
        let data: Vec<u8> = (0..64u8).collect();
        file.write_at(&data, 0).expect("write");
        disk.set_faults(Faults {
            read_corruption: 0.5,
            ..Faults::default()
        });
        for _ in 0..200 {
            match read_agreed(file.as_ref(), 0, 64) {
                Ok(bytes) => assert_eq!(bytes, data),
                Err(error) => assert_eq!(error.kind(), io::ErrorKind::InvalidData),
            }
        }
    }

    #[test]
    fn a_short_file_reads_short_and_a_missing_one_is_none() {
        let disk = SimDisk::new(1);
        let storage = disk.root();
        let file = storage.open_file("f", OpenMode::CreateNew).expect("create");
        file.write_at(b"abc", 0).expect("write");
        assert_eq!(read_agreed(file.as_ref(), 1, 10).expect("read"), b"bc");
        assert_eq!(
            read_whole_file_agreed(&storage, "f").expect("read"),
            Some(b"abc".to_vec())
        );
        assert_eq!(read_whole_file_agreed(&storage, "g").expect("read"), None);
    }
}
