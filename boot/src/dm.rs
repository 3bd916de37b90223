//! The few device-mapper ioctls PID 1 needs (`<linux/dm-ioctl.h>`, interface 4): create a
//! device, load its table, resume it, read its status. Written here rather than taken from the
//! `devicemapper` crate, which generates its bindings with bindgen and libclang at build time
//! and brings two dozen crates into the measured binary for these four calls.

use std::fs::File;
use std::os::fd::AsRawFd;

const DM_IOCTL: u64 = 0xfd;
const HEADER: usize = 312;
const TARGET_SPEC: usize = 40;
const VERSION: [u32; 3] = [4, 0, 0];
const DEV_CREATE: u64 = 3;
const DEV_SUSPEND: u64 = 6;
const TABLE_LOAD: u64 = 9;
const TABLE_STATUS: u64 = 12;
const BUFFER: usize = 16 * 1024;
const STATUS_TABLE_FLAG: u32 = 1 << 4;
const QUERY_INACTIVE_TABLE_FLAG: u32 = 1 << 12;
/// The kernel wipes its copies of this call's buffer (it holds keys).
const SECURE_DATA_FLAG: u32 = 1 << 15;

/// A device-mapper call that failed.
#[derive(Debug, thiserror::Error)]
pub enum DmError {
    /// `/dev/mapper/control` could not be opened.
    #[error("opening /dev/mapper/control: {0}")]
    Control(std::io::Error),
    /// The kernel refused a call.
    #[error("device-mapper {call} on {device}: {source}")]
    Call {
        /// The call.
        call: &'static str,
        /// The mapped device's name.
        device: String,
        /// The kernel's error.
        source: std::io::Error,
    },
    /// A name or table line does not fit the call.
    #[error("device-mapper {0}")]
    Invalid(String),
}

/// `_IOWR(0xfd, nr, struct dm_ioctl)`.
const fn request(nr: u64) -> u64 {
    (3 << 30) | ((HEADER as u64) << 16) | (DM_IOCTL << 8) | nr
}

/// One target line of a table: start and length in 512-byte sectors, target type, parameters.
pub struct Target<'a> {
    /// First sector of the mapped device this target covers.
    pub start: u64,
    /// Sectors covered.
    pub sectors: u64,
    /// `crypt`, `integrity`, ...
    pub kind: &'a str,
    /// The target's parameters (for `crypt`, a key: the buffer is wiped after the call).
    pub params: &'a str,
}

/// The device-mapper control device.
pub struct Control {
    file: File,
}

/// A mapped device: its name and device number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapped {
    /// The name it was created under.
    pub name: String,
    /// Major number.
    pub major: u32,
    /// Minor number.
    pub minor: u32,
}

impl Control {
    /// Opens `/dev/mapper/control`, making its node first if devtmpfs has none.
    pub fn open() -> Result<Self, DmError> {
        let _ = std::fs::create_dir_all("/dev/mapper");
        let path = "/dev/mapper/control";
        if !std::path::Path::new(path).exists() {
            // misc major 10; the minor the kernel gave it is in /sys.
            let minor = std::fs::read_to_string("/sys/class/misc/device-mapper/dev")
                .ok()
                .and_then(|s| s.trim().split_once(':').and_then(|(_, m)| m.parse().ok()))
                .unwrap_or(236);
            nix::sys::stat::mknod(
                path,
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::from_bits_truncate(0o600),
                nix::sys::stat::makedev(10, minor),
            )
            .map_err(|e| DmError::Control(e.into()))?;
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(DmError::Control)?;
        Ok(Control { file })
    }

    fn header(name: &str, flags: u32) -> Result<Vec<u8>, DmError> {
        if name.is_empty() || name.len() >= 128 || name.contains('/') {
            return Err(DmError::Invalid(format!("device name {name:?}")));
        }
        let mut b = vec![0u8; BUFFER];
        for (i, v) in VERSION.iter().enumerate() {
            b[i * 4..i * 4 + 4].copy_from_slice(&v.to_ne_bytes());
        }
        b[12..16].copy_from_slice(&(BUFFER as u32).to_ne_bytes()); // data_size
        b[16..20].copy_from_slice(&(HEADER as u32).to_ne_bytes()); // data_start
        b[28..32].copy_from_slice(&flags.to_ne_bytes());
        b[48..48 + name.len()].copy_from_slice(name.as_bytes());
        Ok(b)
    }

    #[allow(unsafe_code)]
    fn call(&self, call: &'static str, nr: u64, name: &str, buf: &mut [u8]) -> Result<(), DmError> {
        // SAFETY: `buf` is a live, writable buffer of `data_size` bytes that starts with a
        // `struct dm_ioctl` laid out as the kernel's interface 4 defines it; the kernel writes
        // only within `data_size`.
        let r = unsafe {
            nix::libc::ioctl(
                self.file.as_raw_fd(),
                request(nr) as nix::libc::Ioctl,
                buf.as_mut_ptr(),
            )
        };
        if r < 0 {
            return Err(DmError::Call {
                call,
                device: name.into(),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// Creates an (inactive) mapped device `name`.
    pub fn create(&self, name: &str) -> Result<Mapped, DmError> {
        let mut b = Self::header(name, 0)?;
        self.call("create", DEV_CREATE, name, &mut b)?;
        let dev = u64::from_ne_bytes(b[40..48].try_into().unwrap_or_default());
        // The kernel's huge_encode_dev: minor's low byte, major, then the minor's high bits.
        let major = ((dev >> 8) & 0xfff) as u32;
        let minor = ((dev & 0xff) | ((dev >> 12) & 0xfff_ff00)) as u32;
        Ok(Mapped {
            name: name.into(),
            major,
            minor,
        })
    }

    /// Loads `targets` as the device's inactive table, then wipes the buffer (it held keys).
    pub fn load(&self, name: &str, targets: &[Target<'_>]) -> Result<(), DmError> {
        let mut b = Self::header(name, SECURE_DATA_FLAG)?;
        let mut at = HEADER;
        for t in targets {
            let spec_len = (TARGET_SPEC + t.params.len() + 1).div_ceil(8) * 8;
            if at + spec_len > BUFFER || t.kind.len() >= 16 {
                b.fill(0);
                return Err(DmError::Invalid(format!("table for {name} does not fit")));
            }
            b[at..at + 8].copy_from_slice(&t.start.to_ne_bytes());
            b[at + 8..at + 16].copy_from_slice(&t.sectors.to_ne_bytes());
            b[at + 20..at + 24].copy_from_slice(&(spec_len as u32).to_ne_bytes()); // next
            b[at + 24..at + 24 + t.kind.len()].copy_from_slice(t.kind.as_bytes());
            let p = at + TARGET_SPEC;
            b[p..p + t.params.len()].copy_from_slice(t.params.as_bytes());
            at += spec_len;
        }
        b[20..24].copy_from_slice(&(targets.len() as u32).to_ne_bytes());
        let r = self.call("table load", TABLE_LOAD, name, &mut b);
        b.fill(0);
        r
    }

    /// Makes the loaded table live (a resume: `DM_DEV_SUSPEND` without the suspend flag).
    pub fn resume(&self, name: &str) -> Result<(), DmError> {
        let mut b = Self::header(name, 0)?;
        self.call("resume", DEV_SUSPEND, name, &mut b)
    }

    /// The status line of the device's first target.
    pub fn status(&self, name: &str) -> Result<String, DmError> {
        self.first_target_text(name, 0)
    }

    /// Whether the loaded, not yet live, table of the device's first target has `word` among
    /// its parameters as the kernel prints them (which include keys: the text never leaves
    /// this call, and both buffers are wiped).
    pub fn inactive_table_has(&self, name: &str, word: &str) -> Result<bool, DmError> {
        let text = zeroize::Zeroizing::new(
            self.first_target_text(name, STATUS_TABLE_FLAG | QUERY_INACTIVE_TABLE_FLAG)?,
        );
        Ok(text.split_whitespace().any(|w| w == word))
    }

    fn first_target_text(&self, name: &str, flags: u32) -> Result<String, DmError> {
        let mut b = Self::header(name, flags | SECURE_DATA_FLAG)?;
        self.call("status", TABLE_STATUS, name, &mut b)?;
        let start = u32::from_ne_bytes(b[16..20].try_into().unwrap_or_default()) as usize;
        let count = u32::from_ne_bytes(b[20..24].try_into().unwrap_or_default());
        if count == 0 || start + TARGET_SPEC > b.len() {
            return Err(DmError::Invalid(format!("{name} has no active table")));
        }
        let text = &b[start + TARGET_SPEC..];
        let end = text.iter().position(|&c| c == 0).unwrap_or(text.len());
        let line = String::from_utf8_lossy(&text[..end]).into_owned();
        b.fill(0);
        Ok(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_match_the_kernel_header() {
        // DM_DEV_CREATE and DM_TABLE_LOAD as <linux/dm-ioctl.h> expands them on x86-64.
        assert_eq!(request(DEV_CREATE), 0xc138_fd03);
        assert_eq!(request(TABLE_LOAD), 0xc138_fd09);
        assert_eq!(request(DEV_SUSPEND), 0xc138_fd06);
        assert_eq!(request(TABLE_STATUS), 0xc138_fd0c);
    }

    #[test]
    fn names_that_do_not_fit_are_refused_before_any_call() {
        assert!(Control::header("", 0).is_err());
        assert!(Control::header(&"x".repeat(128), 0).is_err());
        assert!(Control::header("a/b", 0).is_err());
        let b = Control::header("bulwark-data", 0).unwrap();
        assert_eq!(&b[48..60], b"bulwark-data");
    }
}
