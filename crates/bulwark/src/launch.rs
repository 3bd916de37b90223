//! What the host hands a validator VM at launch, through QEMU's `fw_cfg` files
//! (`-fw_cfg name=opt/bulwark/<name>,file=...`, read in the guest under
//! `/sys/firmware/qemu_fw_cfg/by_name/opt/bulwark/<name>/raw`). All of it is untrusted: each
//! file is size-limited when read and checked by whoever uses it. The genesis is bound to the
//! launch by HOST_DATA, which the guest checks in its own report; the configuration (ports,
//! peers, timeouts) can only make the node unreachable.

use crate::home::HomeError;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Where QEMU shows the host's `opt/bulwark/*` files in the guest.
pub const FW_CFG_DIR: &str = "/sys/firmware/qemu_fw_cfg/by_name/opt/bulwark";

/// `opt/bulwark/enroll`: the enrolment request ([`crate::guest::EnrollRequest`], JSON). Its
/// presence makes this boot the enrolling one.
pub const ENROLL: &str = "enroll";
/// `opt/bulwark/config.toml`: the node's configuration, written into the home at start.
pub const CONFIG_TOML: &str = "config.toml";
/// `opt/bulwark/genesis.json`: the network's genesis, written into the home at start; its
/// SHA-256 must be the launch's HOST_DATA.
pub const GENESIS: &str = "genesis.json";
/// `opt/bulwark/host_data`: a simulated launch's HOST_DATA (32 bytes). Development builds only:
/// on hardware HOST_DATA is in the launch itself.
pub const HOST_DATA: &str = "host_data";
/// `opt/bulwark/simulated_chip`: the simulated firmware's chip secret (32 bytes), the same at
/// every boot of one (simulated) machine. Development builds only.
pub const SIMULATED_CHIP: &str = "simulated_chip";
/// `opt/bulwark/simulated_measurement`: the launch digest the simulated firmware reports (48
/// bytes), the one a real launch of the image would get. Development builds only.
pub const SIMULATED_MEASUREMENT: &str = "simulated_measurement";

/// The largest `fw_cfg` file read (a genesis with its enrollments: about 6 KiB a validator).
pub const MAX_INPUT: u64 = 16 << 20;

/// The guest path of `fw_cfg` file `opt/bulwark/<name>`.
pub fn path(name: &str) -> PathBuf {
    Path::new(FW_CFG_DIR).join(name).join("raw")
}

/// The bytes of `fw_cfg` file `opt/bulwark/<name>`, if the host gave it (at most `max`).
pub fn read(name: &str, max: u64) -> Result<Option<Vec<u8>>, HomeError> {
    let path = path(name);
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(HomeError::Io { path, source }),
    };
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| HomeError::Io {
            path: path.clone(),
            source,
        })?;
    if bytes.len() as u64 > max {
        return Err(HomeError::Invalid {
            path,
            reason: format!("larger than {max} bytes"),
        });
    }
    Ok(Some(bytes))
}

/// A fixed-size `fw_cfg` file of exactly `N` bytes, if the host gave it.
pub fn fixed<const N: usize>(name: &str) -> Result<Option<[u8; N]>, HomeError> {
    match read(name, N as u64)? {
        None => Ok(None),
        Some(bytes) => <[u8; N]>::try_from(bytes.as_slice())
            .map(Some)
            .map_err(|_| HomeError::Invalid {
                path: path(name),
                reason: format!("{} bytes, expected {N}", bytes.len()),
            }),
    }
}
