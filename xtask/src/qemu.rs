//! `cargo xtask qemu --validators N`: validators as VMs booted from `target/image`.
//!
//! Each VM gets the measured kernel, initramfs and command line, an ext4 data disk with its
//! home, its host configuration in `fw_cfg`, and QEMU user networking (DHCP; the VMs reach each
//! other through host port forwards at the gateway 10.0.2.2). Serial logs go to files. The
//! mode is printed: TCG (software emulation) here, because KVM on this kind of machine does not
//! run real guests; `--snp` prints the SEV-SNP launch command for a real host.

use crate::image::{ensure_packages, image_dir};
use crate::load::RpcClient;
use crate::network::base_port;
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(clap::Args, Clone, Debug)]
pub struct QemuArgs {
    /// How many validator VMs.
    #[arg(long, default_value_t = 4)]
    pub validators: usize,
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 60)]
    pub duration: u64,
    /// Print the summary as one JSON object on the last line.
    #[arg(long)]
    pub json: bool,
    /// Print the SEV-SNP launch command for one validator (QEMU ≥ 9.1 on an SNP host) and exit.
    #[arg(long)]
    pub snp: bool,
}

/// The static binary inside the image (used on the host to make the testnet, so genesis
/// admits exactly its measurement under simulated trust).
fn image_binary() -> PathBuf {
    crate::network::workspace().join("target/image-build/x86_64-unknown-linux-gnu/release/bulwark")
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

fn qemu_command(image: &Path, vm: &Path, p2p: u16, rpc: u16, monitor: &Path) -> Command {
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
        .arg(
            std::fs::read_to_string(image.join("kernel-cmdline"))
                .unwrap_or_default()
                .trim(),
        )
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
    c
}

fn snp_command(image: &Path) -> String {
    format!(
        "qemu-system-x86_64 -enable-kvm -cpu EPYC-v4 -machine q35,confidential-guest-support=sev0,memory-backend=ram1 \\\n  \
-object memory-backend-memfd,id=ram1,size=2G,share=true,prealloc=false \\\n  \
-object sev-snp-guest,id=sev0,cbitpos=51,reduced-phys-bits=1,kernel-hashes=on \\\n  \
-bios {image}/OVMF.amdsev.fd -kernel {image}/bzImage -initrd {image}/initramfs.cpio.gz \\\n  \
-append \"$(cat {image}/kernel-cmdline)\" -smp 4 -m 2G -nographic -no-reboot \\\n  \
-drive file=data.img,format=raw,if=virtio -netdev user,id=n0,hostfwd=tcp::26656-:26656 \\\n  \
-device virtio-net-pci,netdev=n0 -fw_cfg name=opt/bulwark/config,file=host.json\n\
# expected measurement: cargo xtask measure --vcpus 4 --cpu-type <milan|genoa|turin>",
        image = image.display()
    )
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

fn height(client: &mut RpcClient) -> Option<u64> {
    client
        .call("status", Value::Null)
        .ok()?
        .pointer("/sync_info/latest_block_height")?
        .as_str()?
        .parse()
        .ok()
}

/// What a VM run reached.
#[derive(Debug, Default)]
pub struct VmSummary {
    /// The height every validator reached.
    pub height: u64,
}

/// Validator VMs booted from `target/image`, with their data disks and forwarded ports.
pub struct VmNetwork {
    dir: PathBuf,
    base: u16,
    vms: Vec<Vm>,
    pub started: Instant,
}

impl VmNetwork {
    /// Builds the image (cached parts are reused), makes a testnet with the image's own binary,
    /// and boots one VM per validator under TCG.
    pub fn start(validators: usize, timeout_commit_ms: u64) -> Result<Self> {
        ensure_packages(&["qemu-system-x86", "e2fsprogs"])?;
        crate::image::build()?;
        let image = image_dir();
        let bin = image_binary();
        eprintln!("qemu: mode TCG (software emulation: KVM on this machine does not run real guests), simulated attestation, {validators} validators");
        let dir = std::env::temp_dir().join(format!("bulwark-vms-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let base = base_port()?;
        let out = Command::new(&bin)
            .args([
                "testnet",
                "--validators",
                &validators.to_string(),
                "--output",
            ])
            .arg(&dir)
            .args(["--base-port", &base.to_string()])
            .output()?;
        if !out.status.success() {
            bail!("testnet: {}", String::from_utf8_lossy(&out.stderr));
        }
        let started = Instant::now();
        let mut vms = Vec::new();
        for i in 0..validators {
            let vm = dir.join(format!("node{i}"));
            let p2p = base + 10 * i as u16;
            let rpc = p2p + 1;
            let cfg = vm.join("config/config.toml");
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
            let home = dir.join(format!("home{i}"));
            std::fs::rename(&vm, &home)?;
            std::fs::create_dir_all(&vm)?;
            let status = Command::new("mke2fs")
                .args(["-q", "-F", "-t", "ext4", "-d"])
                .arg(&home)
                .arg(vm.join("data.img"))
                .arg("128M")
                .status()
                .context("mke2fs")?;
            if !status.success() {
                bail!("mke2fs failed for node {i}");
            }
            std::fs::write(
                vm.join("host.json"),
                r#"{"version":1,"data_disk":"/dev/vda"}"#,
            )?;
            let monitor = vm.join("monitor.sock");
            let child = qemu_command(&image, &vm, p2p, rpc, &monitor)
                .spawn()
                .context("starting qemu-system-x86_64")?;
            vms.push(Vm { child, monitor });
        }
        eprintln!("qemu: serial logs in {}/node*/serial.log", dir.display());
        Ok(VmNetwork {
            dir,
            base,
            vms,
            started,
        })
    }

    /// The host addresses of the validators' RPC.
    pub fn rpc_addrs(&self) -> Vec<String> {
        (0..self.vms.len())
            .map(|i| format!("127.0.0.1:{}", self.base + 10 * i as u16 + 1))
            .collect()
    }

    /// How many VMs are running.
    pub fn live(&mut self) -> usize {
        self.vms
            .iter_mut()
            .map(|v| v.child.try_wait())
            .filter(|status| matches!(status, Ok(None)))
            .count()
    }

    /// Ctrl-Alt-Del to every VM (SIGINT to PID 1: the node stops cleanly and the VM powers
    /// off); returns how many powered off cleanly.
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
            .filter(|i| {
                std::fs::read_to_string(self.dir.join(format!("node{i}/serial.log")))
                    .map(|l| l.contains("powering off (status 0)"))
                    .unwrap_or(false)
            })
            .count()
    }

    /// Removes the VMs' files (after a successful run; failures keep the logs).
    pub fn clean_up(self) {
        let dir = self.dir.clone();
        drop(self);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Where the serial logs are.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

pub fn run(args: QemuArgs) -> Result<VmSummary> {
    let image = image_dir();
    if args.snp {
        println!("{}", snp_command(&image));
        return Ok(VmSummary::default());
    }
    let mut net = VmNetwork::start(args.validators, 500)?;
    let mut clients: Vec<RpcClient> = net.rpc_addrs().iter().map(|a| RpcClient::new(a)).collect();
    let mut first_commit: Option<f64> = None;
    let mut heights = vec![0u64; args.validators];
    let mut first_height_at: Option<(Instant, u64)> = None;
    while net.started.elapsed() < Duration::from_secs(args.duration) {
        for (i, c) in clients.iter_mut().enumerate() {
            if let Some(h) = height(c) {
                heights[i] = heights[i].max(h);
            }
        }
        let top = heights.iter().copied().max().unwrap_or(0);
        if top > 0 && first_commit.is_none() {
            first_commit = Some(net.started.elapsed().as_secs_f64());
            first_height_at = Some((Instant::now(), top));
        }
        let live = net.live();
        eprint!(
            "\rqemu: {:>5.1}s | VMs up {live}/{} | heights {heights:?} ",
            net.started.elapsed().as_secs_f64(),
            args.validators
        );
        let _ = std::io::stderr().flush();
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!();
    let height = heights.iter().copied().min().unwrap_or(0);
    let rate = first_height_at.map_or(0.0, |(at, h0)| {
        (heights
            .iter()
            .copied()
            .max()
            .unwrap_or(0)
            .saturating_sub(h0)) as f64
            / at.elapsed().as_secs_f64().max(0.001)
    });
    let powered_off = net.stop();
    eprintln!(
        "qemu: every validator reached height {height}; first block {:.1} s after launch; {rate:.2} heights/s; {powered_off}/{} powered off cleanly",
        first_commit.unwrap_or(0.0),
        args.validators
    );
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "validators": args.validators,
                "mode": "tcg",
                "height": height,
                "heights_per_s": (rate * 100.0).round() / 100.0,
                "first_commit_s": first_commit.map(|s| (s * 10.0).round() / 10.0),
                "clean_poweroffs": powered_off,
            })
        );
    }
    if height == 0 {
        bail!(
            "the VMs made no progress (serial logs in {})",
            net.dir().display()
        );
    }
    if powered_off < args.validators {
        bail!(
            "{} VMs did not power off cleanly (serial logs in {})",
            args.validators - powered_off,
            net.dir().display()
        );
    }
    net.clean_up();
    Ok(VmSummary { height })
}
