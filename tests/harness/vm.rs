//! Validator VMs booted from a measured image (`target/image`, made by `cargo xtask image`).
//!
//! Each VM gets the image's kernel, initramfs and command line, an ext4 data disk with its
//! home, its host configuration in `fw_cfg`, and QEMU user networking (DHCP; the VMs reach each
//! other through host port forwards at the gateway 10.0.2.2). Serial logs go to files. VMs run
//! under TCG (software emulation): KVM on this kind of machine does not run real guests.
//!
//! The machine has the SEV-SNP launch's shape, everything but the encryption: q35, UEFI
//! firmware loaded with `-bios` that boots the kernel through its EFI stub (a generic OVMF:
//! the AmdSev build in the image only direct-boots under SEV), and the virtio device options an
//! SEV-SNP guest needs ([`VIRTIO_OPTIONS`]). `cargo xtask qemu --snp` prints its launch with the
//! same device arguments ([`data_disk_args`], [`network_args`], [`fw_cfg_args`]).

use crate::rpc::RpcClient;
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The line PID 1 prints when the node stopped cleanly and the VM powers off.
pub const CLEAN_POWER_OFF: &str = "powering off (status 0)";

/// The options on every virtio device: modern-only, and with VIRTIO_F_ACCESS_PLATFORM, which a
/// guest under SEV requires of every device (Linux refuses devices without it: "device must
/// provide VIRTIO_F_ACCESS_PLATFORM"). QEMU offers that bit only with `iommu_platform=on`, and
/// `-drive if=virtio` cannot carry it.
pub const VIRTIO_OPTIONS: &str = "disable-legacy=on,iommu_platform=on";

/// The generic UEFI firmware the TCG VMs boot (Debian's `ovmf` package).
pub const UEFI_FIRMWARE: &str = "/usr/share/ovmf/OVMF.fd";

/// The Debian packages the VMs need: QEMU, `mke2fs` for the data disks, generic OVMF.
pub const VM_PACKAGES: [&str; 3] = ["qemu-system-x86", "e2fsprogs", "ovmf"];

/// The port a validator listens on for peers inside its VM.
pub const GUEST_P2P_PORT: u16 = 26656;
/// The port a validator serves RPC on inside its VM.
pub const GUEST_RPC_PORT: u16 = 26657;

/// The data disk (raw) as a virtio-blk PCI device with [`VIRTIO_OPTIONS`]; it is the guest's
/// `/dev/vda`.
pub fn data_disk_args(file: &Path) -> Vec<String> {
    vec![
        "-drive".into(),
        format!("if=none,id=d0,file={},format=raw", file.display()),
        "-device".into(),
        format!("virtio-blk-pci,drive=d0,{VIRTIO_OPTIONS}"),
    ]
}

/// A host port forwarded to a port of the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forward {
    /// The host address to bind (`None`: every interface).
    pub host_addr: Option<std::net::Ipv4Addr>,
    /// The host port.
    pub host_port: u16,
    /// The guest port.
    pub guest_port: u16,
}

/// QEMU user networking (the guest gets its address by DHCP) with `forwards`, on a virtio-net
/// PCI device with [`VIRTIO_OPTIONS`] and no option ROM (the firmware has its own driver).
pub fn network_args(forwards: &[Forward]) -> Vec<String> {
    let mut netdev = "user,id=n0".to_string();
    for f in forwards {
        let addr = f.host_addr.map(|a| a.to_string()).unwrap_or_default();
        netdev += &format!(",hostfwd=tcp:{addr}:{}-:{}", f.host_port, f.guest_port);
    }
    vec![
        "-netdev".into(),
        netdev,
        "-device".into(),
        format!("virtio-net-pci,netdev=n0,{VIRTIO_OPTIONS},romfile="),
    ]
}

/// A file for the guest under `fw_cfg` name `name` (`/sys/firmware/qemu_fw_cfg/by_name/...`).
pub fn fw_cfg_args(name: &str, file: &Path) -> Vec<String> {
    vec![
        "-fw_cfg".into(),
        format!("name={name},file={}", file.display()),
    ]
}

/// The image's directory: `BULWARK_IMAGE`, or the workspace's `target/image`.
pub fn image_dir() -> PathBuf {
    std::env::var_os("BULWARK_IMAGE")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::process::target_dir().join("image"))
}

/// The static binary inside the image, beside it in the build tree (the host uses it to make
/// the testnet, so genesis admits exactly its measurement under simulated trust).
pub fn image_binary() -> PathBuf {
    crate::process::target_dir().join("image-build/x86_64-unknown-linux-gnu/release/bulwark")
}

/// What a VM run needs that may be missing; the error says what and how to get it.
pub fn check_prerequisites(image: &Path) -> Result<()> {
    for file in ["bzImage", "initramfs.cpio.gz", "kernel-cmdline"] {
        if !image.join(file).exists() {
            bail!(
                "no measured image in {} (missing {file}): run `cargo xtask image`",
                image.display()
            );
        }
    }
    if !image_binary().exists() {
        bail!(
            "the image's static binary {} is missing: run `cargo xtask image`",
            image_binary().display()
        );
    }
    let install = VM_PACKAGES.join(" ");
    for tool in ["qemu-system-x86_64", "mke2fs"] {
        let found = Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            bail!("{tool} is not installed (apt-get install --no-install-recommends {install})");
        }
    }
    if !Path::new(UEFI_FIRMWARE).exists() {
        bail!("no generic UEFI firmware at {UEFI_FIRMWARE} (apt-get install --no-install-recommends {install})");
    }
    Ok(())
}

struct Vm {
    child: Child,
    monitor: PathBuf,
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn qemu_command(image: &Path, vm: &Path, p2p: u16, rpc: u16, monitor: &Path) -> Result<Command> {
    let cmdline = std::fs::read_to_string(image.join("kernel-cmdline"))
        .with_context(|| format!("reading {}/kernel-cmdline", image.display()))?;
    let loopback = Some(std::net::Ipv4Addr::LOCALHOST);
    let mut c = Command::new("qemu-system-x86_64");
    c.args(["-machine", "q35", "-accel", "tcg", "-cpu", "max"])
        .args(["-m", "384", "-smp", "1"])
        .args(["-nographic", "-no-reboot", "-nodefaults"])
        .args(["-bios", UEFI_FIRMWARE])
        .arg("-serial")
        .arg(format!("file:{}", vm.join("serial.log").display()))
        .arg("-monitor")
        .arg(format!("unix:{},server,nowait", monitor.display()))
        .arg("-kernel")
        .arg(image.join("bzImage"))
        .arg("-initrd")
        .arg(image.join("initramfs.cpio.gz"))
        .arg("-append")
        .arg(cmdline.trim())
        .args(data_disk_args(&vm.join("data.img")))
        .args(network_args(&[
            Forward {
                host_addr: loopback,
                host_port: p2p,
                guest_port: GUEST_P2P_PORT,
            },
            Forward {
                host_addr: loopback,
                host_port: rpc,
                guest_port: GUEST_RPC_PORT,
            },
        ]))
        .args(fw_cfg_args("opt/bulwark/config", &vm.join("host.json")))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    Ok(c)
}

/// One command to a VM's human monitor: its banner is read first, and the connection stays open
/// until QEMU has taken the command.
fn send_monitor(socket: &Path, command: &str) {
    use std::io::Read;
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(socket) else {
        return;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 4096];
    let _ = s.read(&mut buf);
    let _ = s.write_all(format!("{command}\n").as_bytes());
    std::thread::sleep(Duration::from_millis(300));
    let _ = s.read(&mut buf);
}

/// One human-monitor command and its answer: the banner is read first, then the answer up to
/// the next prompt (or `timeout`).
fn monitor_query(socket: &Path, command: &str, timeout: Duration) -> Result<String> {
    use std::io::Read;
    let mut s = std::os::unix::net::UnixStream::connect(socket)
        .with_context(|| format!("connecting to the monitor {}", socket.display()))?;
    s.set_read_timeout(Some(Duration::from_millis(100)))?;
    let read_until_prompt = |s: &mut std::os::unix::net::UnixStream| {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        let mut buf = [0u8; 8192];
        while Instant::now() < deadline && !String::from_utf8_lossy(&got).contains("(qemu) ") {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
        }
        String::from_utf8_lossy(&got).into_owned()
    };
    read_until_prompt(&mut s);
    s.write_all(format!("{command}\n").as_bytes())?;
    let answer = read_until_prompt(&mut s);
    // The answer starts after the echoed command line (the monitor redraws it as typed).
    Ok(answer
        .split_once("\r\n")
        .map_or(answer.as_str(), |(_, rest)| rest)
        .to_string())
}

/// What a VM's virtio device negotiated, as QEMU's monitor shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtioDevice {
    /// QEMU's name for the device kind (`virtio-blk`, `virtio-net`).
    pub kind: String,
    /// Whether the guest's driver accepted VIRTIO_F_ACCESS_PLATFORM (QEMU calls it
    /// VIRTIO_F_IOMMU_PLATFORM), which the guest requires under SEV.
    pub access_platform: bool,
}

/// Validator VMs booted from the image, with their data disks and forwarded ports. Dropping it
/// kills the VMs that still run; [`VmNetwork::clean_up`] also removes their files.
pub struct VmNetwork {
    dir: PathBuf,
    base: u16,
    vms: Vec<Vm>,
    /// When the first VM was launched.
    pub started: Instant,
}

impl VmNetwork {
    /// Makes a testnet with the image's own binary and boots one VM per validator under TCG
    /// (q35, UEFI, the SNP device options).
    pub fn start(image: &Path, validators: usize, timeout_commit_ms: u64) -> Result<Self> {
        check_prerequisites(image)?;
        let bin = image_binary();
        let dir = std::env::temp_dir().join(format!("bulwark-vms-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let base = crate::ports::testnet_block(validators)?;
        let homes = crate::process::testnet(&bin, &dir, validators, base, &[])?;
        let started = Instant::now();
        let mut vms = Vec::new();
        for (i, home) in homes.iter().enumerate() {
            let vm = dir.join(format!("node{i}"));
            let p2p = base + 10 * i as u16;
            let rpc = p2p + 1;
            let cfg = home.join("config/config.toml");
            // Inside the VM: listen on all interfaces; peers are the host's forwarded ports.
            let text = std::fs::read_to_string(&cfg)?
                .replace(
                    &format!("127.0.0.1:{p2p}"),
                    &format!("0.0.0.0:{GUEST_P2P_PORT}"),
                )
                .replace(
                    &format!("127.0.0.1:{rpc}"),
                    &format!("0.0.0.0:{GUEST_RPC_PORT}"),
                )
                .replace("127.0.0.1:", "10.0.2.2:")
                .replace(
                    "timeout_commit_ms = 1000",
                    &format!("timeout_commit_ms = {timeout_commit_ms}"),
                );
            std::fs::write(&cfg, text)?;
            // The disk holds only the home: config, genesis, keys, data.
            let disk_home = dir.join(format!("home{i}"));
            std::fs::rename(home, &disk_home)?;
            std::fs::create_dir_all(&vm)?;
            let out = Command::new("mke2fs")
                .args(["-q", "-F", "-t", "ext4", "-d"])
                .arg(&disk_home)
                .arg(vm.join("data.img"))
                .arg("128M")
                .output()
                .context("running mke2fs")?;
            if !out.status.success() {
                bail!(
                    "mke2fs failed for node {i}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::fs::write(
                vm.join("host.json"),
                r#"{"version":1,"data_disk":"/dev/vda"}"#,
            )?;
            let monitor = vm.join("monitor.sock");
            let child = qemu_command(image, &vm, p2p, rpc, &monitor)?
                .spawn()
                .context("starting qemu-system-x86_64")?;
            vms.push(Vm { child, monitor });
        }
        Ok(VmNetwork {
            dir,
            base,
            vms,
            started,
        })
    }

    /// The host addresses (host:port) of the validators' RPC.
    pub fn rpc_addrs(&self) -> Vec<String> {
        (0..self.vms.len())
            .map(|i| crate::process::rpc_addr(self.base, i))
            .collect()
    }

    /// RPC clients for every validator.
    pub fn clients(&self) -> Vec<RpcClient> {
        self.rpc_addrs().iter().map(|a| RpcClient::new(a)).collect()
    }

    /// How many VMs are running.
    pub fn live(&mut self) -> usize {
        self.vms
            .iter_mut()
            .map(|v| matches!(v.child.try_wait(), Ok(None)))
            .filter(|&up| up)
            .count()
    }

    /// Ctrl-Alt-Del to every VM (SIGINT to PID 1: the node stops cleanly and the VM powers
    /// off); returns how many powered off cleanly within 30 s.
    pub fn stop(&mut self) -> usize {
        // A key press can be lost while an emulated guest is busy (a loaded host, TCG): one
        // that is still running after a while gets it again, up to three times.
        for _ in 0..3 {
            for vm in self.vms.iter_mut() {
                if matches!(vm.child.try_wait(), Ok(None)) {
                    send_monitor(&vm.monitor, "sendkey ctrl-alt-delete");
                }
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline
                && self
                    .vms
                    .iter_mut()
                    .any(|vm| matches!(vm.child.try_wait(), Ok(None)))
            {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        (0..self.vms.len())
            .filter(|i| self.serial_log(*i).contains(CLEAN_POWER_OFF))
            .count()
    }

    /// VM `i`'s virtio devices and whether its guest negotiated ACCESS_PLATFORM with each.
    pub fn virtio_devices(&self, i: usize) -> Result<Vec<VirtioDevice>> {
        let monitor = &self.vms[i].monitor;
        let timeout = Duration::from_secs(5);
        let listing = monitor_query(monitor, "info virtio", timeout)?;
        let mut devices = Vec::new();
        for line in listing.lines() {
            let Some((path, kind)) = line.trim().split_once(" [") else {
                continue;
            };
            if !path.starts_with("/machine/") {
                continue;
            }
            let status = monitor_query(monitor, &format!("info virtio-status {path}"), timeout)?;
            let guest_features = status
                .split_once("Guest features:")
                .and_then(|(_, rest)| rest.split_once("Host features:"))
                .map(|(guest, _)| guest.to_string())
                .with_context(|| format!("no guest features in the status of {path}: {status}"))?;
            devices.push(VirtioDevice {
                kind: kind.trim_end_matches(']').to_string(),
                access_platform: guest_features.contains("VIRTIO_F_IOMMU_PLATFORM"),
            });
        }
        Ok(devices)
    }

    /// VM `i`'s serial console so far.
    pub fn serial_log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.join(format!("node{i}/serial.log"))).unwrap_or_default()
    }

    /// Removes the VMs' files (after a successful run; failures keep the logs).
    pub fn clean_up(self) {
        let dir = self.dir.clone();
        drop(self);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Where the VMs' files and serial logs are.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
