//! The same test bodies against the real file system and the simulated disk
//! (faults off), so that `SimStorage` cannot drift from `OsStorage`.

use std::io::ErrorKind;
use std::sync::Arc;

use weir_io::{
    read_whole_file, write_file_atomically, DirEntry, EntryKind, OpenMode, OsStorage, SimStorage,
    Storage,
};

/// Runs `body` against a fresh `OsStorage` in a temporary directory and a
/// fresh `SimStorage`.
fn check(body: impl Fn(Arc<dyn Storage>)) {
    let directory = tempfile::tempdir().expect("temporary directory");
    body(Arc::new(OsStorage::open(directory.path()).expect("open")));
    body(Arc::new(SimStorage::new(7)));
}

fn names(storage: &dyn Storage) -> Vec<String> {
    storage
        .list()
        .expect("list")
        .into_iter()
        .map(|entry| entry.name)
        .collect()
}

#[test]
fn files_read_back_what_was_written_including_gaps() {
    check(|storage| {
        let file = storage.open_file("a", OpenMode::CreateNew).expect("create");
        assert_eq!(file.len().expect("len"), 0);
        file.write_at(b"hello", 0).expect("write");
        file.write_at(b"world", 10).expect("write past the end");
        assert_eq!(file.len().expect("len"), 15);
        let mut buffer = [0xff; 20];
        let read = file.read_at(&mut buffer, 0).expect("read");
        assert_eq!(read, 15, "a read stops at the end of the file");
        assert_eq!(&buffer[..15], b"hello\0\0\0\0\0world");
        assert_eq!(file.read_at(&mut buffer, 100).expect("read past end"), 0);
        let error = file.read_exact_at(&mut buffer, 0).expect_err("short");
        assert_eq!(error.kind(), ErrorKind::UnexpectedEof);
        file.write_at(b"J", 0).expect("overwrite");
        let mut head = [0; 5];
        file.read_exact_at(&mut head, 0).expect("read");
        assert_eq!(&head, b"Jello");
        file.sync().expect("sync");
    });
}

#[test]
fn set_len_truncates_and_extends_with_zeros() {
    check(|storage| {
        let file = storage.open_file("a", OpenMode::CreateNew).expect("create");
        file.write_at(b"0123456789", 0).expect("write");
        file.set_len(4).expect("truncate");
        assert_eq!(file.len().expect("len"), 4);
        file.set_len(6).expect("extend");
        let mut buffer = [0xff; 6];
        file.read_exact_at(&mut buffer, 0).expect("read");
        assert_eq!(&buffer, b"0123\0\0");
    });
}

#[test]
fn open_modes_distinguish_missing_and_existing_files() {
    check(|storage| {
        let error = storage
            .open_file("a", OpenMode::Existing)
            .expect_err("missing");
        assert_eq!(error.kind(), ErrorKind::NotFound);
        storage
            .open_file("a", OpenMode::CreateIfMissing)
            .expect("create");
        storage
            .open_file("a", OpenMode::CreateIfMissing)
            .expect("open");
        storage.open_file("a", OpenMode::Existing).expect("open");
        let error = storage
            .open_file("a", OpenMode::CreateNew)
            .expect_err("exists");
        assert_eq!(error.kind(), ErrorKind::AlreadyExists);
    });
}

#[test]
fn two_handles_on_one_file_see_each_others_writes() {
    check(|storage| {
        let writer = storage.open_file("a", OpenMode::CreateNew).expect("create");
        let reader = storage.open_file("a", OpenMode::Existing).expect("open");
        writer.write_at(b"shared", 0).expect("write");
        let mut buffer = [0; 6];
        reader.read_exact_at(&mut buffer, 0).expect("read");
        assert_eq!(&buffer, b"shared");
    });
}

#[test]
fn listing_is_sorted_and_typed() {
    check(|storage| {
        storage.open_file("b", OpenMode::CreateNew).expect("create");
        storage.create_dir("a").expect("mkdir");
        storage.open_file("c", OpenMode::CreateNew).expect("create");
        assert_eq!(
            storage.list().expect("list"),
            [
                DirEntry {
                    name: "a".into(),
                    kind: EntryKind::Directory
                },
                DirEntry {
                    name: "b".into(),
                    kind: EntryKind::File
                },
                DirEntry {
                    name: "c".into(),
                    kind: EntryKind::File
                },
            ]
        );
        assert!(storage.exists("a").expect("exists"));
        assert!(!storage.exists("z").expect("exists"));
        let error = storage.create_dir("a").expect_err("exists");
        assert_eq!(error.kind(), ErrorKind::AlreadyExists);
    });
}

#[test]
fn rename_replaces_the_target_file() {
    check(|storage| {
        let old = storage
            .open_file("old", OpenMode::CreateNew)
            .expect("create");
        old.write_at(b"new content", 0).expect("write");
        let target = storage
            .open_file("target", OpenMode::CreateNew)
            .expect("create");
        target.write_at(b"stale", 0).expect("write");
        storage.rename("old", "target").expect("rename");
        assert_eq!(names(storage.as_ref()), ["target"]);
        let bytes = read_whole_file(storage.as_ref(), "target").expect("read");
        assert_eq!(bytes.as_deref(), Some(&b"new content"[..]));
        let error = storage.rename("missing", "x").expect_err("missing");
        assert_eq!(error.kind(), ErrorKind::NotFound);
    });
}

#[test]
fn a_removed_file_stays_readable_through_an_open_handle() {
    check(|storage| {
        let file = storage.open_file("a", OpenMode::CreateNew).expect("create");
        file.write_at(b"still here", 0).expect("write");
        storage.remove_file("a").expect("remove");
        assert!(names(storage.as_ref()).is_empty());
        let mut buffer = [0; 10];
        file.read_exact_at(&mut buffer, 0).expect("read");
        assert_eq!(&buffer, b"still here");
        let error = storage.remove_file("a").expect_err("gone");
        assert_eq!(error.kind(), ErrorKind::NotFound);
    });
}

#[test]
fn subdirectories_nest_and_remove() {
    check(|storage| {
        let child = storage.open_or_create_dir("child").expect("mkdir");
        let grandchild = child.open_or_create_dir("grandchild").expect("mkdir");
        grandchild
            .open_file("f", OpenMode::CreateNew)
            .expect("create");
        child.open_file("g", OpenMode::CreateNew).expect("create");
        child.sync_dir().expect("sync");
        let error = storage.remove_dir("child").expect_err("not empty");
        assert_ne!(error.kind(), ErrorKind::NotFound);
        let error = storage.open_dir("missing").expect_err("missing");
        assert_eq!(error.kind(), ErrorKind::NotFound);
        storage.remove_dir_all("child").expect("remove all");
        assert!(names(storage.as_ref()).is_empty());
        storage.sync_dir().expect("sync");
    });
}

#[test]
fn views_show_the_whole_file() {
    check(|storage| {
        let file = storage.open_file("a", OpenMode::CreateNew).expect("create");
        assert!(file.view().expect("view of empty file").is_empty());
        file.write_at(&[7; 5000], 0).expect("write");
        let view = file.view().expect("view");
        assert_eq!(view.len(), 5000);
        assert!(view.iter().all(|byte| *byte == 7));
    });
}

#[test]
fn atomic_writes_replace_whole_files() {
    check(|storage| {
        write_file_atomically(storage.as_ref(), "meta", b"first").expect("write");
        write_file_atomically(storage.as_ref(), "meta", b"second, longer").expect("write");
        let bytes = read_whole_file(storage.as_ref(), "meta").expect("read");
        assert_eq!(bytes.as_deref(), Some(&b"second, longer"[..]));
        assert_eq!(names(storage.as_ref()), ["meta"]);
        assert_eq!(
            read_whole_file(storage.as_ref(), "none").expect("read"),
            None
        );
    });
}

#[test]
fn bad_names_are_rejected() {
    check(|storage| {
        for name in ["", ".", "..", "a/b", "nul\0", &"x".repeat(256)] {
            let error = storage
                .open_file(name, OpenMode::CreateIfMissing)
                .expect_err(name);
            assert_eq!(error.kind(), ErrorKind::InvalidInput, "{name:?}");
            let error = storage.create_dir(name).expect_err(name);
            assert_eq!(error.kind(), ErrorKind::InvalidInput, "{name:?}");
        }
    });
}

#[test]
fn vectored_writes_land_back_to_back_however_many_parts() {
    check(|storage| {
        let file = storage.open_file("a", OpenMode::CreateNew).expect("create");
        file.write_vectored_at(&[b"head", b"", b"-", b"tail"], 3)
            .expect("write");
        let mut buffer = [0; 12];
        file.read_exact_at(&mut buffer, 0).expect("read");
        assert_eq!(&buffer, b"\0\0\0head-tail");
        // More parts than one pwritev takes.
        let parts: Vec<Vec<u8>> = (0..3000u32)
            .map(|index| index.to_le_bytes().to_vec())
            .collect();
        let slices: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        file.write_vectored_at(&slices, 100).expect("write many");
        let mut many = vec![0; 4 * 3000];
        file.read_exact_at(&mut many, 100).expect("read");
        assert_eq!(many, parts.concat());
    });
}

#[test]
fn allocating_space_changes_neither_length_nor_content() {
    check(|storage| {
        let file = storage.open_file("a", OpenMode::CreateNew).expect("create");
        file.write_at(b"abc", 0).expect("write");
        file.allocate(3, 1 << 20).expect("allocate");
        assert_eq!(file.len().expect("len"), 3);
        file.write_at(b"def", 3).expect("write");
        let mut buffer = [0; 6];
        file.read_exact_at(&mut buffer, 0).expect("read");
        assert_eq!(&buffer, b"abcdef");
        assert_eq!(file.len().expect("len"), 6);
    });
}
