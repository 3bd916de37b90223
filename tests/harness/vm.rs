//! Validator VMs booted from a measured image (`target/image`, made by `cargo xtask image`).
//!
//! Each VM gets the image's kernel, initramfs and command line, an ext4 data disk with its
//! home, its host configuration in `fw_cfg`, and QEMU user networking (DHCP; the VMs reach each
//! other through host port forwards at the gateway 10.0.2.2). Serial logs go to files. VMs run
//! under TCG (software emulation): KVM on this kind of machine does not run real guests.

use crate::rpc::RpcClient;
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The line PID 1 prints when the node stopped cleanly and the VM powers off.
pub const CLEAN_POWER_OFF: &str = "powering off (status 0)";

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
    for tool in ["qemu-system-x86_64", "mke2fs"] {
        let found = Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            bail!("{tool} is not installed (apt-get install qemu-system-x86 e2fsprogs)");
        }
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
    let mut c = Command::new("qemu-system-x86_64");
    c.args(["-accel", "tcg", "-cpu", "max", "-m", "384", "-smp", "1"])
        .args(["-nographic", "-no-reboot", "-nodefaults"])
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
        .arg("-drive")
        .arg(format!(
            "file={},format=raw,if=virtio",
            vm.join("data.img").display()
        ))
        .arg("-netdev")
        .arg(format!(
            "user,id=n0,hostfwd=tcp:127.0.0.1:{p2p}-:26656,hostfwd=tcp:127.0.0.1:{rpc}-:26657"
        ))
        .args(["-device", "virtio-net-pci,netdev=n0"])
        .arg("-fw_cfg")
        .arg(format!(
            "name=opt/bulwark/config,file={}",
            vm.join("host.json").display()
        ))
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
    /// Makes a testnet with the image's own binary and boots one VM per validator under TCG.
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
                .replace(&format!("127.0.0.1:{p2p}"), "0.0.0.0:26656")
                .replace(&format!("127.0.0.1:{rpc}"), "0.0.0.0:26657")
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
        for vm in &self.vms {
            send_monitor(&vm.monitor, "sendkey ctrl-alt-delete");
        }
        for vm in self.vms.iter_mut() {
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = vm.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        (0..self.vms.len())
            .filter(|i| self.serial_log(*i).contains(CLEAN_POWER_OFF))
            .count()
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
