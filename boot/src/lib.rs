//! PID 1 of the measured guest (`bulwark` runs as `/init` of the initramfs). It mounts the
//! kernel's filesystems, reads the host's configuration from QEMU's `fw_cfg` (untrusted input:
//! size-limited and validated), hands the node the data disk the host names (which the node
//! opens as a sealed disk, [`sealed_disk`], and mounts at `/data`), and powers the VM off when the node stops, anything fails or
//! anything panics. It reaps orphans, never starts a shell, and never exits (the kernel would
//! panic).
//!
//! The network comes up before PID 1 runs: the measured command line says `ip=dhcp`, and the
//! host's DHCP server (QEMU user networking) answers; no per-validator value is measured.
//! The host sees the data disk's ciphertext only; what it hands in at launch is checked by the
//! node like any other input.
//!
//! This crate knows nothing about the validator: the `bulwark` binary calls [`run`] when the
//! kernel starts it as `/init`, handing it the function that runs the node from a home.

pub mod dm;
pub mod ext4;
pub mod image_app;
pub mod launch_port;
pub mod sealed_disk;

pub use sealed_disk::{DataDisk, DiskError};

use nix::mount::{mount, MsFlags};
use nix::sys::reboot::{reboot, RebootMode};
use serde::Deserialize;
use std::io::Read;
use thiserror::Error;

/// Where QEMU's `-fw_cfg name=opt/bulwark/config,file=...` appears in the guest.
pub const HOST_CONFIG: &str = "/sys/firmware/qemu_fw_cfg/by_name/opt/bulwark/config/raw";
/// Largest host configuration read.
pub const MAX_HOST_CONFIG: u64 = 64 * 1024;

/// Why the guest could not boot.
#[derive(Debug, Error)]
pub enum BootError {
    /// A kernel filesystem could not be mounted.
    #[error("mounting {target}: {source}")]
    Mount {
        /// Where.
        target: &'static str,
        /// The error.
        source: nix::Error,
    },
    /// The host configuration could not be read.
    #[error("reading the host configuration: {0}")]
    Read(#[from] std::io::Error),
    /// The host configuration is not what a validator VM accepts.
    #[error("host configuration rejected: {0}")]
    Invalid(String),
    /// The host gave no configuration: there is no validator to run.
    #[error("the host gave no configuration ({HOST_CONFIG})")]
    NoConfiguration,
    /// The node stopped with an error (or could not start from the home on the data disk).
    #[error("the node: {0:#}")]
    Node(anyhow::Error),
}

/// What the host tells the guest (nothing here is measured or trusted).
#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// Format version (1).
    pub version: u32,
    /// The block device (ext4) holding the validator's home.
    pub data_disk: String,
}

impl HostConfig {
    /// Parses and checks untrusted bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, BootError> {
        let c: HostConfig =
            serde_json::from_slice(bytes).map_err(|e| BootError::Invalid(e.to_string()))?;
        if c.version != 1 {
            return Err(BootError::Invalid(format!("version {}", c.version)));
        }
        let disk_ok = c
            .data_disk
            .strip_prefix("/dev/vd")
            .is_some_and(|rest| rest.len() == 1 && rest.bytes().all(|b| b.is_ascii_lowercase()));
        if !disk_ok {
            return Err(BootError::Invalid(format!(
                "data_disk {:?} is not a virtio disk (/dev/vdX)",
                c.data_disk
            )));
        }
        Ok(c)
    }
}

fn mount_fs(source: &str, target: &'static str, fstype: &str) -> Result<(), BootError> {
    let _ = std::fs::create_dir_all(target);
    match mount(
        Some(source),
        target,
        Some(fstype),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        None::<&str>,
    ) {
        // Already mounted (devtmpfs with DEVTMPFS_MOUNT): fine.
        Ok(()) | Err(nix::Error::EBUSY) => Ok(()),
        Err(source) => Err(BootError::Mount { target, source }),
    }
}

/// Reads the host configuration, if the host gave one.
fn host_config() -> Result<Option<HostConfig>, BootError> {
    let file = match std::fs::File::open(HOST_CONFIG) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut bytes = Vec::new();
    file.take(MAX_HOST_CONFIG + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_HOST_CONFIG {
        return Err(BootError::Invalid(format!(
            "larger than {MAX_HOST_CONFIG} bytes"
        )));
    }
    HostConfig::parse(&bytes).map(Some)
}

/// Where the decrypted data volume is mounted: the validator's home.
pub const DATA_DIR: &str = "/data";

fn boot(node: impl FnOnce(&DataDisk) -> anyhow::Result<()>) -> Result<(), BootError> {
    mount_fs("devtmpfs", "/dev", "devtmpfs")?;
    mount_fs("proc", "/proc", "proc")?;
    mount_fs("sysfs", "/sys", "sysfs")?;
    eprintln!(
        "bulwark-init: bulwark {} is PID 1; kernel filesystems mounted",
        env!("CARGO_PKG_VERSION")
    );
    // Ctrl-Alt-Del (the host's `sendkey ctrl-alt-delete`) becomes SIGINT to PID 1: the node
    // stops cleanly and the VM powers off, instead of an immediate reboot.
    if let Err(e) = nix::sys::reboot::set_cad_enabled(false) {
        eprintln!("bulwark-init: Ctrl-Alt-Del stays a hard reboot: {e}");
    }
    let config = host_config()?.ok_or(BootError::NoConfiguration)?;
    eprintln!(
        "bulwark-init: data disk {}; starting the validator",
        config.data_disk
    );
    node(&DataDisk::new(&config.data_disk)).map_err(BootError::Node)
}

/// Writes `bytes` to `path` whole or not at all (a temporary file, synced, then renamed).
/// The host formatted the disk: a temporary file it left there (a symbolic link, say) is
/// removed, never written through, and the new one is created afresh without following links.
pub fn replace_file(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("incoming");
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", tmp.display())),
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}

/// Writes every dirty block to the disks (a host may copy a disk from the moment the guest says
/// it is complete).
pub fn sync_disks() {
    nix::unistd::sync();
}

fn power_off() {
    nix::unistd::sync();
    let _ = nix::mount::umount(DATA_DIR);
    let _ = reboot(RebootMode::RB_POWER_OFF);
}

/// PID 1 inherits orphaned processes. The image starts none, but whatever exits is reaped so
/// that no zombie ever accumulates.
fn reap_orphans() {
    use nix::sys::wait::{waitpid, WaitPidFlag};
    std::thread::spawn(|| loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(nix::sys::wait::WaitStatus::StillAlive) | Err(_) => {
                std::thread::sleep(std::time::Duration::from_secs(1))
            }
            Ok(_) => {}
        }
    });
}

/// Threads whose name starts with this run work whose panics their owner catches (a task of
/// a runtime that closes the one connection it served): PID 1 logs such a panic and keeps the
/// VM up. Any other panic powers the VM off.
pub const CONTAINED_THREAD_PREFIX: &str = "contained-";

/// Whether a panic on the thread named `name` is contained by its owner.
pub fn panic_is_contained(name: Option<&str>) -> bool {
    name.is_some_and(|n| n.starts_with(CONTAINED_THREAD_PREFIX))
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (PID 1 starts with the kernel's 1024,
/// which idle connections can exhaust); returns the limit now in force.
pub fn raise_nofile_limit() -> Result<u64, nix::Error> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(hard.max(soft))
}

/// The soft `RLIMIT_NOFILE` in force: the most descriptors this process may hold.
pub fn nofile_limit() -> Result<u64, nix::Error> {
    let (soft, _) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)?;
    Ok(soft)
}

/// Runs as PID 1: prepares the guest, runs `node` with the validator's home, and powers the
/// VM off when it returns; never returns.
pub fn run(node: impl FnOnce(&DataDisk) -> anyhow::Result<()>) -> ! {
    // A panic powers the VM off instead of leaving a hung guest, unless it happened where its
    // owner contains it (one peer connection's task): one peer must not take the VM down.
    std::panic::set_hook(Box::new(|info| {
        if panic_is_contained(std::thread::current().name()) {
            eprintln!("bulwark-init: contained panic (that task's connection closes): {info}");
            return;
        }
        eprintln!("bulwark-init: panic: {info}; powering off");
        power_off();
    }));
    match raise_nofile_limit() {
        Ok(limit) => eprintln!("bulwark-init: open files limit {limit}"),
        Err(e) => eprintln!("bulwark-init: open files limit not raised: {e}"),
    }
    reap_orphans();
    let status = match boot(node) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("bulwark-init: {e}");
            1
        }
    };
    eprintln!("bulwark-init: powering off (status {status})");
    power_off();
    // reboot only returns on failure, and PID 1 must not exit.
    loop {
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_contained_threads_keep_the_vm_up_on_a_panic() {
        assert!(panic_is_contained(Some("contained-p2p")));
        assert!(panic_is_contained(Some("contained-rpc")));
        assert!(!panic_is_contained(Some("main")));
        assert!(!panic_is_contained(Some("tokio-runtime-worker")));
        assert!(!panic_is_contained(None));
    }

    #[test]
    fn the_open_files_limit_is_raised_to_the_hard_limit() {
        use nix::sys::resource::{getrlimit, Resource};
        let limit = raise_nofile_limit().unwrap();
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!(soft, hard);
        assert_eq!(limit, hard);
    }
}
