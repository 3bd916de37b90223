//! What the host hands a validator VM: at launch, through QEMU's `fw_cfg` files
//! (`-fw_cfg name=opt/bulwark/<name>,file=...`, read in the guest under
//! `/sys/firmware/qemu_fw_cfg/by_name/opt/bulwark/<name>/raw`), and, to the enrolling boot that
//! runs on as the validator's launch instance, its network's inputs on the launch port
//! ([`receive`]). All of it is untrusted: each input is size-limited when read and checked by
//! whoever uses it. A later boot's genesis is bound to its launch by HOST_DATA, which the guest
//! checks in its own report; the configuration (ports, peers, timeouts) can only make the node
//! unreachable.

use crate::home::{HomeError, MAX_CONFIG_FILE};
use serde::Deserialize;
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

/// The TCP port an enrolled guest takes its network's launch inputs on, unless its enrolment
/// request names another.
pub const DEFAULT_LAUNCH_PORT: u16 = 26659;

/// The largest message on the launch port: both inputs at their limits, JSON-escaped to twice
/// their size (a text file's newlines and quotes).
const MAX_LAUNCH_MESSAGE: u64 = 2 * (MAX_INPUT + MAX_CONFIG_FILE) + 1024;

/// What the host sends an enrolled guest on the launch port: one JSON object, then it closes
/// its side of the connection; the guest answers one line, `ok` or `refused: <why>`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchInputs {
    /// The launch token whose SHA-256 the enrolment request named: only whoever launched the
    /// VM knows it (the port is reachable by anyone on the host's loopback).
    pub token: String,
    /// The node's `config.toml`.
    pub config_toml: String,
    /// The network's `genesis.json`.
    pub genesis_json: String,
}

impl LaunchInputs {
    /// Whether the token is the one whose SHA-256 the enrolment request named.
    pub fn check_token(&self, token_sha256: &[u8; 32]) -> Result<(), HomeError> {
        use sha2::Digest;
        let got: [u8; 32] = sha2::Sha256::digest(self.token.as_bytes()).into();
        // Hashes compared: timing tells nothing about the token itself.
        if got != *token_sha256 {
            return Err(HomeError::Invalid {
                path: PathBuf::from("token"),
                reason: "not the launch token this VM was enrolled with".into(),
            });
        }
        Ok(())
    }

    /// The inputs as the `config/` files they become, each within its size limit.
    pub fn files(self) -> Result<Vec<(&'static str, Vec<u8>)>, HomeError> {
        let mut files = Vec::new();
        for (name, text, max) in [
            (CONFIG_TOML, self.config_toml, MAX_CONFIG_FILE),
            (GENESIS, self.genesis_json, MAX_INPUT),
        ] {
            if text.len() as u64 > max {
                return Err(HomeError::Invalid {
                    path: PathBuf::from(name),
                    reason: format!("larger than {max} bytes"),
                });
            }
            files.push((name, text.into_bytes()));
        }
        Ok(files)
    }
}

/// Waits on TCP `port` for launch inputs that `take` accepts (`bulwark_boot::launch_port`:
/// size-limited, whole within its deadline, every sender answered).
pub fn receive<T>(
    port: u16,
    take: impl FnMut(LaunchInputs) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    use bulwark_boot::launch_port;
    launch_port::receive(port, MAX_LAUNCH_MESSAGE, launch_port::READ_TIMEOUT, take)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;
    use std::net::TcpStream;
    use std::time::Duration;

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// Sends `message` to the launch port, retrying until it listens; its answer.
    fn send(port: u16, message: &[u8]) -> String {
        for _ in 0..200 {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                s.write_all(message).unwrap();
                s.shutdown(std::net::Shutdown::Write).unwrap();
                let mut answer = String::new();
                s.read_to_string(&mut answer).unwrap();
                return answer;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the launch port never listened");
    }

    #[test]
    fn the_launch_port_answers_every_sender_and_takes_only_what_its_checks_accept() {
        let port = free_port();
        let receiver = std::thread::spawn(move || {
            receive(port, |inputs| {
                inputs.check_token(
                    &sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(
                        b"secret",
                    ))
                    .into(),
                )?;
                let files = inputs.files()?;
                anyhow::ensure!(
                    files[1].1 == b"{\"chain_id\":\"real\"}",
                    "genesis: not ours"
                );
                Ok(files)
            })
        });
        let with_token = |token: &str, config: &str, genesis: &str| {
            serde_json::json!({"token": token, "config_toml": config, "genesis_json": genesis})
                .to_string()
                .into_bytes()
        };
        let inputs = |config: &str, genesis: &str| with_token("secret", config, genesis);
        let refusals = [
            (b"not json".to_vec(), "not the expected JSON"),
            (
                br#"{"token":"secret","config_toml":"","genesis_json":"","host_data":"00"}"#
                    .to_vec(),
                "unknown field",
            ),
            (
                br#"{"config_toml":"","genesis_json":"{\"chain_id\":\"real\"}"}"#.to_vec(),
                "missing field `token`",
            ),
            (
                with_token("guessed", "", "{\"chain_id\":\"real\"}"),
                "not the launch token",
            ),
            (inputs("", "{\"chain_id\":\"forged\"}"), "genesis: not ours"),
            (
                inputs(&"#".repeat(MAX_CONFIG_FILE as usize + 1), "{}"),
                "larger than",
            ),
            (vec![b' '; MAX_LAUNCH_MESSAGE as usize + 1], "larger than"),
        ];
        for (message, why) in refusals {
            let answer = send(port, &message);
            assert!(answer.starts_with("refused: "), "{answer}");
            assert!(answer.contains(why), "expected {why:?}: {answer}");
            assert!(!receiver.is_finished());
        }
        assert_eq!(
            send(
                port,
                &inputs("moniker = \"v\"\n", "{\"chain_id\":\"real\"}")
            ),
            "ok\n"
        );
        let files = receiver.join().unwrap().unwrap();
        assert_eq!(files[0], (CONFIG_TOML, b"moniker = \"v\"\n".to_vec()));
        assert_eq!(files[1].0, GENESIS);
        // Port 0 is refused, not bound at random.
        assert!(receive(0, |_| Ok(())).is_err());
    }
}
