//! The guest's own filesystem, checked by e2fsprogs (an independent implementation): a
//! volume `bulwark_boot::ext4::format` writes is one `e2fsck -fn` finds nothing wrong with.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use bulwark_boot::ext4::{format, BLOCK};
use std::os::unix::fs::FileExt;
use std::process::Command;

fn formatted(blocks: u64) -> (tempfile_path::Dir, std::path::PathBuf) {
    let dir = tempfile_path::Dir::new();
    let image = dir.0.join("volume.img");
    let file = std::fs::File::create(&image).unwrap();
    file.set_len(blocks * BLOCK as u64).unwrap();
    format(blocks, *b"bulwark-ext4-tst", |block, bytes| {
        file.write_all_at(bytes, block * BLOCK as u64)
    })
    .unwrap();
    (dir, image)
}

mod tempfile_path {
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new() -> Self {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let p = std::env::temp_dir().join(format!(
                "bulwark-ext4-{}-{}",
                std::process::id(),
                N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn e2fsck(image: &std::path::Path) -> (i32, String) {
    let out = Command::new("e2fsck")
        .args(["-fn"])
        .arg(image)
        .output()
        .expect("e2fsck (e2fsprogs) runs");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn e2fsck_finds_nothing_wrong_with_volumes_of_many_sizes() {
    // One partial group, exactly one group, several groups with superblock copies, and a last
    // group too small to keep.
    // And 128 groups plus a dropped last one: the descriptors shrink to one block again.
    for blocks in [
        2048,
        20_000,
        32_768,
        3 * 32_768 + 5_000,
        9 * 32_768 + 100,
        128 * 32_768 + 100,
    ] {
        let (_dir, image) = formatted(blocks);
        let (code, report) = e2fsck(&image);
        assert_eq!(code, 0, "{blocks} blocks: e2fsck says\n{report}");
    }
}

#[test]
fn the_volume_has_a_journal_and_an_empty_root_with_lost_and_found() {
    let (_dir, image) = formatted(20_000);
    let out = Command::new("dumpe2fs")
        .arg("-h")
        .arg(&image)
        .output()
        .unwrap();
    let header = String::from_utf8_lossy(&out.stdout);
    assert!(header.contains("has_journal"), "{header}");
    assert!(header.contains("extent"), "{header}");
    assert!(
        header.contains("Block size:               4096"),
        "{header}"
    );
    let out = Command::new("debugfs")
        .args(["-R", "ls -l /"])
        .arg(&image)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains("lost+found"), "{listing}");
}

#[test]
fn a_planted_flaw_is_what_e2fsck_reports() {
    // The oracle can fail: group 0's block bitmap (block 2, after the superblock and one
    // descriptor block) cleared, so the metadata and journal blocks look free.
    let (_dir, image) = formatted(20_000);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&image)
        .unwrap();
    file.write_all_at(&[0u8; BLOCK], 2 * BLOCK as u64).unwrap();
    let (code, report) = e2fsck(&image);
    assert_ne!(code, 0, "{report}");
}
