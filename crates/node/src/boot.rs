//! PID 1 of the measured guest (`bulwark` runs as `/init` of the initramfs). It mounts the
//! kernel's filesystems, reads the host's configuration from QEMU's `fw_cfg` (untrusted input:
//! size-limited and validated), and powers the VM off when it is done or anything fails. It
//! never starts a shell, and it never exits (the kernel would panic).
//!
//! This step boots and powers off; bringing up the network, the data disk and the node from
//! the host configuration comes next (the image issue).

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
}

/// What the host tells the guest (nothing here is measured or trusted).
#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// Format version (1).
    pub version: u32,
    /// The guest's IPv4 address with prefix, e.g. `10.0.2.15/24`.
    pub address: String,
    /// The default gateway.
    pub gateway: std::net::Ipv4Addr,
    /// The block device holding the validator's home.
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
        let (ip, prefix) = c
            .address
            .split_once('/')
            .ok_or_else(|| BootError::Invalid("address needs a /prefix".into()))?;
        ip.parse::<std::net::Ipv4Addr>()
            .map_err(|e| BootError::Invalid(format!("address: {e}")))?;
        match prefix.parse::<u8>() {
            Ok(p) if (1..=32).contains(&p) => {}
            _ => return Err(BootError::Invalid(format!("prefix {prefix}"))),
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

fn boot() -> Result<(), BootError> {
    mount_fs("devtmpfs", "/dev", "devtmpfs")?;
    mount_fs("proc", "/proc", "proc")?;
    mount_fs("sysfs", "/sys", "sysfs")?;
    eprintln!(
        "bulwark-init: bulwark {} is PID 1; kernel filesystems mounted",
        env!("CARGO_PKG_VERSION")
    );
    match host_config()? {
        None => eprintln!("bulwark-init: the host gave no configuration ({HOST_CONFIG})"),
        Some(c) => eprintln!(
            "bulwark-init: host configuration: address {}, gateway {}, data disk {}",
            c.address, c.gateway, c.data_disk
        ),
    }
    eprintln!(
        "bulwark-init: starting the node inside the guest is the next step of the image issue"
    );
    Ok(())
}

/// Runs as PID 1 and powers the VM off; never returns.
pub fn run() -> ! {
    let status = match boot() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("bulwark-init: {e}");
            1
        }
    };
    eprintln!("bulwark-init: powering off (status {status})");
    nix::unistd::sync();
    let _ = reboot(RebootMode::RB_POWER_OFF);
    // reboot only returns on failure, and PID 1 must not exit.
    loop {
        std::thread::park();
    }
}
