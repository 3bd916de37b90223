//! The data disk as the guest keeps it: authenticated and encrypted below the filesystem, so
//! the host sees ciphertext only and the kernel parses only blocks the guest wrote.
//!
//! Layout of the host's raw disk:
//!
//! | 4 KiB blocks | what |
//! |---|---|
//! | 0, 1 | two key slots: the disk key wrapped under the sealing key (written and read by the node, opaque here) |
//! | 2.. | dm-integrity (4 KiB blocks, journal, superblock and journal under an HMAC: `journal_mac`, `fix_hmac`) |
//!
//! and on top of the integrity device, dm-crypt with `authenc(hmac(sha256),xts(aes))` and a
//! random IV per write: every 4 KiB sector is AES-XTS encrypted and its HMAC-SHA-256 tag (over
//! sector number, IV and ciphertext) is kept by dm-integrity beside it. A sector the host
//! changed fails its tag, and the read is an I/O error (`EILSEQ`): ext4 remounts read-only
//! (`errors=remount-ro`), the node's next write fails and it stops. The guest formats the
//! filesystem itself ([`crate::ext4`]) when it enrols. What this does not stop: the host
//! putting back an older copy of a sector, or of the whole disk (a rollback: the node's
//! defence is in the network, not here).

use crate::dm::{Control, DmError, Target};
use crate::ext4;
use nix::mount::{mount, MsFlags};
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Bytes of one key slot.
pub const SLOT_BYTES: usize = 4096;
/// Key slots at the start of the raw disk.
pub const SLOTS: usize = 2;
/// Where dm-integrity starts on the raw disk, in 512-byte sectors (after the slots).
const INTEGRITY_START: u64 = (SLOTS * SLOT_BYTES / 512) as u64;
/// dm-integrity's superblock magic.
const INTEGRITY_MAGIC: &[u8; 8] = b"integrt\0";
/// Bytes of key material: AES-256-XTS (64), the sectors' HMAC-SHA-256 key (32), and the
/// HMAC-SHA-256 key of dm-integrity's superblock and journal (32).
pub const KEY_BYTES: usize = 128;
/// dm-crypt's tag per sector: the HMAC (32) and the random IV (16).
const TAG_BYTES: u32 = 48;
const INTEGRITY_NAME: &str = "bulwark-integrity";
const DATA_NAME: &str = "bulwark-data";
/// `MS_NOSYMFOLLOW` from Linux's `<linux/mount.h>` (nix 0.29 has no name for it).
const MS_NOSYMFOLLOW: std::ffi::c_ulong = 256;

/// Why the sealed data disk could not be made or opened.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// Reading or writing the raw disk failed.
    #[error("data disk {disk}: {source}")]
    Io {
        /// The raw disk.
        disk: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The disk holds no integrity superblock where the guest puts one.
    #[error(
        "data disk {0}: not a sealed data disk (no integrity superblock): wiped, or never enrolled"
    )]
    NotSealed(String),
    /// Device-mapper refused the stack.
    #[error(transparent)]
    Dm(#[from] DmError),
    /// dm-integrity read a superblock without its MAC flag (the host cleared it).
    #[error("data disk {0}: the integrity superblock is not authenticated (no fix_hmac): the host changed it")]
    Unauthenticated(String),
    /// The guest's filesystem could not be made.
    #[error(transparent)]
    Format(#[from] ext4::FormatError),
    /// The filesystem could not be mounted: a key that is not this disk's, or blocks the
    /// host changed (their tags fail).
    #[error("data disk: mounting the decrypted volume: {0} (another key, or blocks that fail their authentication)")]
    Mount(nix::Error),
}

fn io(disk: &str) -> impl FnOnce(std::io::Error) -> DiskError + '_ {
    move |source| DiskError::Io {
        disk: disk.into(),
        source,
    }
}

/// The host's raw data disk (a virtio block device).
pub struct DataDisk {
    device: String,
}

impl DataDisk {
    /// The disk at `device`.
    pub fn new(device: &str) -> Self {
        DataDisk {
            device: device.into(),
        }
    }

    /// The raw device's path.
    pub fn device(&self) -> &str {
        &self.device
    }

    fn raw(&self, write: bool) -> Result<File, DiskError> {
        std::fs::OpenOptions::new()
            .read(true)
            .write(write)
            .open(&self.device)
            .map_err(io(&self.device))
    }

    /// The key slots' bytes as the host's disk holds them (untrusted).
    pub fn read_slots(&self) -> Result<[Vec<u8>; SLOTS], DiskError> {
        let file = self.raw(false)?;
        let mut slots: [Vec<u8>; SLOTS] = Default::default();
        for (i, slot) in slots.iter_mut().enumerate() {
            *slot = vec![0; SLOT_BYTES];
            file.read_exact_at(slot, (i * SLOT_BYTES) as u64)
                .map_err(io(&self.device))?;
        }
        Ok(slots)
    }

    /// Writes key slot `index` (at most [`SLOT_BYTES`], zero-padded) and syncs it.
    pub fn write_slot(&self, index: usize, bytes: &[u8]) -> Result<(), DiskError> {
        if index >= SLOTS || bytes.len() > SLOT_BYTES {
            return Err(DiskError::Io {
                disk: self.device.clone(),
                source: std::io::Error::other(format!("slot {index} of {} bytes", bytes.len())),
            });
        }
        let mut block = vec![0u8; SLOT_BYTES];
        block[..bytes.len()].copy_from_slice(bytes);
        let file = self.raw(true)?;
        file.write_all_at(&block, (index * SLOT_BYTES) as u64)
            .and_then(|()| file.sync_all())
            .map_err(io(&self.device))
    }

    /// Whether the disk carries the guest's integrity superblock (it was enrolled).
    pub fn is_sealed(&self) -> Result<bool, DiskError> {
        let mut magic = [0u8; 8];
        self.raw(false)?
            .read_exact_at(&mut magic, INTEGRITY_START * 512)
            .map_err(io(&self.device))?;
        Ok(&magic == INTEGRITY_MAGIC)
    }

    /// Makes a new sealed disk under `key` (everything on the disk is lost), formats the
    /// guest's filesystem on it and mounts it at `at`.
    pub fn create(&self, key: &[u8; KEY_BYTES], at: &Path) -> Result<PathBuf, DiskError> {
        // Whatever the host left where the integrity superblock goes is cleared, so
        // dm-integrity formats a fresh one (with its MAC) instead of adopting the host's.
        let file = self.raw(true)?;
        file.write_all_at(&[0u8; 4096], INTEGRITY_START * 512)
            .and_then(|()| file.sync_all())
            .map_err(io(&self.device))?;
        drop(file);
        let data = self.stack(key)?;
        let mut device = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&data)
            .map_err(io(&self.device))?;
        let bytes = device.seek(SeekFrom::End(0)).map_err(io(&self.device))?;
        // Every sector gets a valid tag before anything reads it, as cryptsetup does: a block
        // the kernel reads before the node wrote it is zeros, never an integrity error, so an
        // error always means a sector the host changed.
        let started = std::time::Instant::now();
        let zeros = vec![0u8; 1 << 20];
        let mut offset = 0u64;
        while offset < bytes {
            let n = zeros.len().min((bytes - offset) as usize);
            device
                .write_all_at(&zeros[..n], offset)
                .map_err(io(&self.device))?;
            offset += n as u64;
        }
        device.sync_all().map_err(io(&self.device))?;
        eprintln!(
            "bulwark-init: the sealed data disk's {} MiB initialised in {:.1} s",
            bytes >> 20,
            started.elapsed().as_secs_f64()
        );
        let mut uuid = [0u8; 16];
        File::open("/dev/urandom")
            .and_then(|f| f.read_exact_at(&mut uuid, 0))
            .map_err(io(&self.device))?;
        ext4::format(bytes / ext4::BLOCK as u64, uuid, |block, b| {
            device.write_all_at(b, block * ext4::BLOCK as u64)
        })?;
        device.sync_all().map_err(io(&self.device))?;
        drop(device);
        mount_volume(&data, at)
    }

    /// Opens the sealed disk under `key` and mounts its filesystem at `at`.
    pub fn open(&self, key: &[u8; KEY_BYTES], at: &Path) -> Result<PathBuf, DiskError> {
        if !self.is_sealed()? {
            return Err(DiskError::NotSealed(self.device.clone()));
        }
        let data = self.stack(key)?;
        mount_volume(&data, at)
    }

    /// dm-integrity on the raw disk after the slots, dm-crypt on top; returns the node of the
    /// decrypted device.
    fn stack(&self, key: &[u8; KEY_BYTES]) -> Result<PathBuf, DiskError> {
        let dm = Control::open()?;
        let journal_key = Zeroizing::new(hex::encode(&key[96..]));
        let integrity_params = Zeroizing::new(format!(
            "{} {INTEGRITY_START} {TAG_BYTES} J 4 block_size:4096 journal_mac:hmac(sha256):{} fix_hmac fix_padding",
            self.device,
            journal_key.as_str()
        ));
        let integrity = dm.create(INTEGRITY_NAME)?;
        // A first table of one block formats or reads the superblock; its status then says
        // how many sectors dm-integrity provides, and the real table covers exactly those.
        // Each table goes live only once the kernel shows it with `fix_hmac`: the superblock
        // it read carries its HMAC flag (a host that cleared it would have the kernel use an
        // unauthenticated superblock, and replay the journal on resume).
        let load = |sectors: u64| -> Result<(), DiskError> {
            dm.load(
                INTEGRITY_NAME,
                &[Target {
                    start: 0,
                    sectors,
                    kind: "integrity",
                    params: &integrity_params,
                }],
            )?;
            if !dm.inactive_table_has(INTEGRITY_NAME, "fix_hmac")? {
                return Err(DiskError::Unauthenticated(self.device.clone()));
            }
            dm.resume(INTEGRITY_NAME)?;
            Ok(())
        };
        load(8)?;
        let status = dm.status(INTEGRITY_NAME)?;
        let provided: u64 = status
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| DmError::Invalid(format!("integrity status {status:?}")))?;
        let sectors = provided / 8 * 8;
        load(sectors)?;
        let crypt_key = Zeroizing::new(hex::encode(&key[..96]));
        let crypt_params = Zeroizing::new(format!(
            "capi:authenc(hmac(sha256),xts(aes))-random {} 0 {}:{} 0 2 integrity:{TAG_BYTES}:aead sector_size:4096",
            crypt_key.as_str(),
            integrity.major,
            integrity.minor
        ));
        let data = dm.create(DATA_NAME)?;
        dm.load(
            DATA_NAME,
            &[Target {
                start: 0,
                sectors,
                kind: "crypt",
                params: &crypt_params,
            }],
        )?;
        dm.resume(DATA_NAME)?;
        let node = PathBuf::from(format!("/dev/mapper/{DATA_NAME}"));
        let _ = std::fs::remove_file(&node);
        nix::sys::stat::mknod(
            &node,
            nix::sys::stat::SFlag::S_IFBLK,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            nix::sys::stat::makedev(u64::from(data.major), u64::from(data.minor)),
        )
        .map_err(|e| io(&self.device)(e.into()))?;
        Ok(node)
    }
}

fn mount_volume(device: &Path, at: &Path) -> Result<PathBuf, DiskError> {
    let _ = std::fs::create_dir_all(at);
    mount(
        Some(device),
        at,
        Some("ext4"),
        MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV
            | MsFlags::MS_NOEXEC
            | MsFlags::from_bits_retain(MS_NOSYMFOLLOW),
        Some("errors=remount-ro"),
    )
    .map_err(DiskError::Mount)?;
    Ok(at.to_path_buf())
}
