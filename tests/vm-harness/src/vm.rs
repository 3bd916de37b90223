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

use anyhow::{bail, Context, Result};
use harness::rpc::RpcClient;
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

/// The Debian packages the VMs and their tests need: QEMU, generic OVMF, e2fsprogs (the
/// independent checker of the guest's own ext4 in `boot/tests`) and acpica-tools (`iasl`,
/// for the hostile ACPI table of `tests/vm.rs`).
pub const VM_PACKAGES: [&str; 4] = ["qemu-system-x86", "e2fsprogs", "ovmf", "acpica-tools"];

/// The port a validator listens on for peers inside its VM.
pub const GUEST_P2P_PORT: u16 = 26656;
/// The port a validator serves RPC on inside its VM.
pub const GUEST_RPC_PORT: u16 = 26657;
/// The port an enrolled validator takes its launch inputs on inside its VM (the guest's
/// `bulwark::launch::DEFAULT_LAUNCH_PORT`).
pub const GUEST_LAUNCH_PORT: u16 = 26659;

/// The host port forwarded to the launch port of the validator whose P2P port on the host is
/// `p2p` (beside RPC at `p2p + 1` and metrics at `p2p + 2`).
pub fn launch_port(p2p: u16) -> u16 {
    p2p + 3
}

/// Sends an enrolled guest on host port `port` its launch inputs (the launch token whose
/// SHA-256 its enrolment request named, `config.toml` and `genesis.json`), as `bulwark::launch::LaunchInputs`, retrying until the guest listens or
/// `deadline` passes; the guest's answer (`ok`, or why it refused).
pub fn send_launch_inputs(
    port: u16,
    token: &str,
    config_toml: &[u8],
    genesis_json: &[u8],
    deadline: Instant,
) -> Result<String> {
    use std::io::Read;
    let message = serde_json::to_vec(&serde_json::json!({
        "token": token,
        "config_toml": String::from_utf8_lossy(config_toml),
        "genesis_json": String::from_utf8_lossy(genesis_json),
    }))?;
    loop {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(mut stream) => {
                stream.set_read_timeout(Some(Duration::from_secs(60)))?;
                stream.write_all(&message)?;
                stream.shutdown(std::net::Shutdown::Write)?;
                let mut answer = String::new();
                stream.read_to_string(&mut answer)?;
                // QEMU's user networking accepts for the guest before the guest listens: an
                // empty answer means nobody was there yet.
                if !answer.is_empty() {
                    return Ok(answer);
                }
            }
            Err(e) if Instant::now() > deadline => {
                return Err(e).context("the guest never took a connection");
            }
            Err(_) => {}
        }
        if Instant::now() > deadline {
            bail!("the guest never answered");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

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

/// Which of the two images: the production one (no simulated PSP compiled in; its
/// measurement is the one operators publish, and without an SEV-SNP device it powers off) or
/// the development one (`cargo xtask image --simulated`: the simulated PSP, a measurement of
/// its own), which the TCG runs, the demo and the tests boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    /// `target/image`.
    Production,
    /// `target/image-simulated`.
    Simulated,
}

impl Flavour {
    /// The image directory's name under the target directory.
    pub fn dir_name(self) -> &'static str {
        match self {
            Flavour::Production => "image",
            Flavour::Simulated => "image-simulated",
        }
    }
}

/// The directory of the `flavour` image: under `BULWARK_IMAGES` if set, else the workspace's
/// target directory.
pub fn image_dir(flavour: Flavour) -> PathBuf {
    images_dir().join(flavour.dir_name())
}

/// The simulated image carrying `bulwark-abci-apps`' binary `app` (`cargo xtask test` builds
/// it with `cargo xtask image --simulated --app`).
pub fn app_image_dir(app: &str) -> PathBuf {
    images_dir().join(format!("image-simulated-{app}"))
}

fn images_dir() -> PathBuf {
    std::env::var_os("BULWARK_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(harness::process::target_dir)
}

/// The image's static `bulwark` binary, the initramfs's `/init`, kept beside the image: the
/// host runs it for the ceremony's public steps (`genesis assemble`, `node-config`), so host
/// and guest run the same code.
pub fn image_binary(image: &Path) -> PathBuf {
    image.join("bulwark")
}

/// What a VM run needs that may be missing; the error says what and how to get it.
pub fn check_prerequisites(image: &Path) -> Result<()> {
    for file in [
        "bzImage",
        "initramfs.cpio.gz",
        "kernel-cmdline",
        "measurement.json",
        "bulwark",
    ] {
        if !image.join(file).exists() {
            bail!(
                "no measured image in {} (missing {file}): run `cargo xtask image`",
                image.display()
            );
        }
    }
    let install = VM_PACKAGES.join(" ");
    let qemu_found = Command::new("qemu-system-x86_64")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !qemu_found {
        bail!("qemu-system-x86_64 is not installed (apt-get install --no-install-recommends {install})");
    }
    if !Path::new(UEFI_FIRMWARE).exists() {
        bail!("no generic UEFI firmware at {UEFI_FIRMWARE} (apt-get install --no-install-recommends {install})");
    }
    Ok(())
}

/// The `fw_cfg` name of a launch input (`opt/bulwark/<name>`; the guest's
/// `bulwark::launch`).
pub fn launch_input(name: &str) -> String {
    format!("opt/bulwark/{name}")
}

/// The host configuration PID 1 reads (`bulwark-boot`): the data disk is `/dev/vda`.
pub const HOST_CONFIG_JSON: &str = r#"{"version":1,"data_disk":"/dev/vda"}"#;

/// One boot of one VM: its disk, serial log, monitor socket, `fw_cfg` files and forwards.
#[derive(Clone, Debug)]
pub struct Boot {
    /// The raw data disk (`/dev/vda`).
    pub disk: PathBuf,
    /// Where the serial console goes.
    pub serial: PathBuf,
    /// The human monitor's socket.
    pub monitor: PathBuf,
    /// `fw_cfg` files: (name, file).
    pub fw_cfg: Vec<(String, PathBuf)>,
    /// Host ports forwarded to the guest.
    pub forwards: Vec<Forward>,
    /// Further QEMU arguments: what else a (test's hostile) host hands the guest.
    pub qemu_args: Vec<String>,
}

/// Boots `image` under TCG on the SEV-SNP machine shape (q35, UEFI, the SNP device options)
/// as `boot` says.
pub fn launch(image: &Path, boot: &Boot) -> Result<Child> {
    let cmdline = std::fs::read_to_string(image.join("kernel-cmdline"))
        .with_context(|| format!("reading {}/kernel-cmdline", image.display()))?;
    let mut c = Command::new("qemu-system-x86_64");
    c.args(["-machine", "q35", "-accel", "tcg", "-cpu", "max"])
        .args(["-m", "384", "-smp", "1"])
        .args(["-nographic", "-no-reboot", "-nodefaults"])
        .args(["-bios", UEFI_FIRMWARE])
        .arg("-serial")
        .arg(format!("file:{}", boot.serial.display()))
        .arg("-monitor")
        .arg(format!("unix:{},server,nowait", boot.monitor.display()))
        .arg("-kernel")
        .arg(image.join("bzImage"))
        .arg("-initrd")
        .arg(image.join("initramfs.cpio.gz"))
        .arg("-append")
        .arg(cmdline.trim())
        .args(data_disk_args(&boot.disk))
        .args(network_args(&boot.forwards));
    for (name, file) in &boot.fw_cfg {
        c.args(fw_cfg_args(name, file));
    }
    c.args(&boot.qemu_args);
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting qemu-system-x86_64")
}

/// A VM that runs until it powers off: its serial log once it has, or an error after
/// `timeout` (the VM is killed).
pub fn run_to_power_off(image: &Path, boot: &Boot, timeout: Duration) -> Result<String> {
    let mut vm = Vm {
        child: launch(image, boot)?,
        monitor: boot.monitor.clone(),
        serial: boot.serial.clone(),
    };
    vm.power_off_by(boot, Instant::now() + timeout)
        .with_context(|| format!("waiting {timeout:?} for a power-off"))
}

/// The last lines of a log, for an error message.
pub fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// An empty data disk of 128 MiB: zeros, no filesystem (the guest makes its sealed disk and
/// its own filesystem on it when it enrols).
pub fn empty_data_disk(path: &Path) -> Result<()> {
    let file = std::fs::File::create(path).with_context(|| path.display().to_string())?;
    file.set_len(128 << 20)
        .with_context(|| path.display().to_string())?;
    Ok(())
}

/// The launch digest a real SEV-SNP launch of `image` on EPYC-Milan with one vCPU (the TCG
/// VMs' shape) gets, from its `measurement.json`: what the simulated firmware reports.
pub fn simulated_launch_digest(image: &Path) -> Result<[u8; 48]> {
    let path = image.join("measurement.json");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)
        .with_context(|| path.display().to_string())?;
    let hex = json
        .pointer("/launch_digest/milan/1")
        .and_then(|v| v.as_str())
        .with_context(|| format!("{} has no milan row for 1 vCPU", path.display()))?;
    hex::decode(hex)
        .ok()
        .and_then(|b| b.try_into().ok())
        .with_context(|| format!("{}: {hex:?} is not a digest", path.display()))
}

/// The enrollment (JSON) a guest printed on its console (`bulwark::guest::ENROLLMENT_LINE`).
/// Only a finished line counts: the log is read while the guest writes it, and a line cut
/// at a multiple of four characters is valid base64 of a truncated enrollment.
pub fn enrollment_from_serial(log: &str) -> Result<Vec<u8>> {
    use base64::Engine;
    let line = log
        .split_inclusive('\n')
        .filter_map(|l| l.strip_suffix('\n'))
        .filter_map(|l| {
            l.trim_end_matches('\r')
                .strip_prefix("bulwark-enrollment: ")
        })
        .next_back()
        .context("the console carries no finished enrollment line")?;
    let json = base64::engine::general_purpose::STANDARD
        .decode(line.trim())
        .context("the enrollment line is not base64")?;
    serde_json::from_slice::<serde_json::Value>(&json)
        .context("the enrollment line is not JSON")?;
    Ok(json)
}

/// Runs the image's binary `bin` with `args`; its stdout, or an error with its stderr.
pub fn run_binary(bin: &Path, args: &[&str]) -> Result<Vec<u8>> {
    let out = Command::new(bin)
        .args(args)
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "{} {}: {}",
            bin.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out.stdout)
}

/// The `fw_cfg` files of a boot on a simulated machine: the host configuration, the
/// simulated firmware's chip secret and launch digest, then `inputs` (launch input name, file).
pub fn simulated_machine_inputs(
    host_json: &Path,
    chip: &Path,
    measurement: &Path,
    inputs: &[(&str, PathBuf)],
) -> Vec<(String, PathBuf)> {
    let mut fw_cfg = vec![
        ("opt/bulwark/config".to_string(), host_json.to_path_buf()),
        (launch_input("simulated_chip"), chip.to_path_buf()),
        (
            launch_input("simulated_measurement"),
            measurement.to_path_buf(),
        ),
    ];
    fw_cfg.extend(inputs.iter().map(|(n, f)| (launch_input(n), f.clone())));
    fw_cfg
}

/// The chain name of the VM networks' ceremony.
pub const CHAIN_NAME: &str = "bulwark-vm";

struct Vm {
    child: Child,
    monitor: PathBuf,
    /// This boot's serial log.
    serial: PathBuf,
}

impl Vm {
    /// Waits until the VM has printed its enrollment, by `deadline`: the enrollment's JSON.
    fn enrollment_by(&mut self, boot: &Boot, deadline: Instant) -> Result<Vec<u8>> {
        loop {
            let log = std::fs::read_to_string(&boot.serial).unwrap_or_default();
            if let Ok(enrollment) = enrollment_from_serial(&log) {
                return Ok(enrollment);
            }
            if !matches!(self.child.try_wait(), Ok(None)) || Instant::now() > deadline {
                bail!(
                    "no enrollment on the console; serial log {}:\n{}",
                    boot.serial.display(),
                    tail(&log)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the VM has powered off, by `deadline`; its serial log, or an error with
    /// the log's tail.
    fn power_off_by(&mut self, boot: &Boot, deadline: Instant) -> Result<String> {
        while matches!(self.child.try_wait(), Ok(None)) {
            if Instant::now() > deadline {
                bail!(
                    "the VM did not power off in time; serial log {}:\n{}",
                    boot.serial.display(),
                    tail(&std::fs::read_to_string(&boot.serial).unwrap_or_default())
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(std::fs::read_to_string(&boot.serial).unwrap_or_default())
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
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
    image: PathBuf,
    base: u16,
    vms: Vec<Vm>,
    /// Clones booted by [`VmNetwork::boot_clone`] (the last entries of `vms`).
    clones: usize,
    /// The VMs after the validators that are full nodes: enrolled the same way, not in the
    /// genesis (which admits attested full nodes), launched by [`VmNetwork::launch_full_node`].
    full_nodes: usize,
    /// The genesis the network was assembled with (`bulwark genesis assemble` on the host).
    pub genesis: PathBuf,
    /// How long the enrolment took, from the first launch to the last enrollment printed.
    pub enrolment: Duration,
    /// When the first VM was launched for the run.
    pub started: Instant,
    /// An "application" the host serves on its loopback (10.0.2.2 to the guests) and names in
    /// every VM's config.toml: no guest may ever connect to it.
    decoy_app: std::net::TcpListener,
}

/// Makes hostile launch inputs from the real genesis: the genesis to send, and a word the
/// guest's refusal must contain.
pub type Hostile = fn(&[u8]) -> (Vec<u8>, String);

/// How long an enrolling VM may take under TCG, from launch to its enrollment on the console.
const ENROL_TIMEOUT: Duration = Duration::from_secs(240);

impl VmNetwork {
    /// The genesis ceremony, which launches the network: every VM boots on an empty data disk
    /// to enrol (its identity is made and sealed inside; its enrollment comes back on its
    /// console), the host assembles the genesis from the enrollments with the image's own
    /// binary (`genesis assemble --simulated`, the image's `measurement.json`) and sends each
    /// enrolled VM its configuration and the genesis on its launch port: every VM runs on as
    /// its validator's launch instance. The host never makes or sees a key. The image must be
    /// the simulated flavour (TCG has no SEV-SNP device); each VM's simulated chip is a random
    /// secret of its own, the same at every boot, as a machine's would be.
    pub fn start(image: &Path, validators: usize, timeout_commit_ms: u64) -> Result<Self> {
        Self::start_with(image, validators, timeout_commit_ms, None)
    }

    /// [`VmNetwork::start`], where the host first hands VM 0 hostile launch inputs: `hostile`
    /// makes, from the real genesis's bytes, the genesis to send first and a word its refusal
    /// must contain. The guest must refuse them, say why, and take the real ones after.
    pub fn start_with(
        image: &Path,
        validators: usize,
        timeout_commit_ms: u64,
        hostile: Option<Hostile>,
    ) -> Result<Self> {
        Self::ceremony(image, validators, 0, timeout_commit_ms, hostile, "{}")
    }

    /// [`VmNetwork::start`] with `full_nodes` more VMs (indices from `validators` on), which
    /// enrol like the validators but are left out of the genesis; the genesis admits attested
    /// full nodes and has `app_state`. The validators get their launch inputs and run; each
    /// full node waits, enrolled, until [`VmNetwork::launch_full_node`] sends it its own.
    pub fn start_with_full_nodes(
        image: &Path,
        validators: usize,
        full_nodes: usize,
        timeout_commit_ms: u64,
        app_state: &str,
    ) -> Result<Self> {
        Self::ceremony(
            image,
            validators,
            full_nodes,
            timeout_commit_ms,
            None,
            app_state,
        )
    }

    fn ceremony(
        image: &Path,
        validators: usize,
        full_nodes: usize,
        timeout_commit_ms: u64,
        hostile: Option<Hostile>,
        app_state: &str,
    ) -> Result<Self> {
        check_prerequisites(image)?;
        let bin = image_binary(image);
        // One directory per network: a failed test keeps its logs, and the next network of
        // the same process must not remove them.
        static NETWORKS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NETWORKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("bulwark-vms-{}-{n}", std::process::id());
        let dir = std::env::temp_dir().join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let base = harness::ports::testnet_block(validators + full_nodes)?;
        let digest = simulated_launch_digest(image)?;
        std::fs::write(dir.join("simulated_measurement"), digest)?;
        std::fs::write(dir.join("host.json"), HOST_CONFIG_JSON)?;
        // Enrolment: all VMs at once, each on an empty disk, with the ports they will serve.
        let enrolling = Instant::now();
        let mut vms = Vec::new();
        let mut boots = Vec::new();
        for i in 0..validators + full_nodes {
            let vm = dir.join(format!("node{i}"));
            std::fs::create_dir_all(&vm)?;
            let mut chip = [0u8; 32];
            getrandom(&mut chip)?;
            std::fs::write(vm.join("simulated_chip"), chip)?;
            empty_data_disk(&vm.join("data.img"))?;
            // The launch token: only this host, which launches the VM, can hand it its genesis.
            let mut token = [0u8; 32];
            getrandom(&mut token)?;
            let token = hex::encode(token);
            std::fs::write(vm.join("launch.token"), &token)?;
            std::fs::write(
                vm.join("enroll.json"),
                serde_json::json!({
                    "moniker": format!("node{i}"),
                    "chain_name": CHAIN_NAME,
                    "trust": "simulated",
                    "launch_token_sha256": hex::encode(sha2_256(token.as_bytes())),
                })
                .to_string(),
            )?;
            let boot = Self::boot_of(
                &dir,
                i,
                "",
                &[("enroll", vm.join("enroll.json"))],
                Self::forwards(base + 10 * i as u16),
            );
            vms.push(Vm {
                child: launch(image, &boot)?,
                monitor: boot.monitor.clone(),
                serial: boot.serial.clone(),
            });
            boots.push(boot);
        }
        let deadline = Instant::now() + ENROL_TIMEOUT;
        let mut enrollments = Vec::new();
        for (i, (vm, boot)) in vms.iter_mut().zip(&boots).enumerate() {
            let enrollment = vm
                .enrollment_by(boot, deadline)
                .with_context(|| format!("VM {i} enrolling (at most {ENROL_TIMEOUT:?})"))?;
            let path = dir.join(format!("node{i}/enrollment.json"));
            std::fs::write(&path, enrollment)?;
            // The disk as enrolment left it (the guest wrote every block before it printed
            // its enrollment, and writes nothing until its launch inputs come): a sealed
            // identity and nothing else.
            let copy = Command::new("cp")
                .arg("--sparse=always")
                .arg(&boot.disk)
                .arg(dir.join(format!("node{i}/enrolled.img")))
                .status()?;
            if !copy.success() {
                bail!("copying VM {i}'s enrolled disk failed");
            }
            enrollments.push(path);
        }
        let enrolment = enrolling.elapsed();
        // The genesis, assembled on the host from what the guests published.
        let genesis = dir.join("genesis.json");
        let mut args: Vec<String> = vec![
            "genesis".into(),
            "assemble".into(),
            "--chain-name".into(),
            CHAIN_NAME.into(),
            "--simulated".into(),
            "--measurements".into(),
            image.join("measurement.json").display().to_string(),
            "--out".into(),
            genesis.display().to_string(),
            "--app-state".into(),
            app_state.into(),
        ];
        if full_nodes > 0 {
            args.extend(["--attest-full-nodes".into(), "true".into()]);
        }
        for e in &enrollments[..validators] {
            args.push("--enrollment".into());
            args.push(e.display().to_string());
        }
        run_binary(&bin, &args.iter().map(String::as_str).collect::<Vec<_>>())?;
        // The HOST_DATA of every later boot (a launch for this network).
        let host_data: [u8; 32] = sha2_256(&std::fs::read(&genesis)?);
        std::fs::write(dir.join("host_data"), host_data)?;
        // The network: each enrolled VM gets its configuration and the genesis.
        let decoy_app = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))?;
        decoy_app.set_nonblocking(true)?;
        let hosts_proxy_app = format!("tcp://10.0.2.2:{}", decoy_app.local_addr()?.port());
        let started = Instant::now();
        for i in 0..validators + full_nodes {
            let vm = dir.join(format!("node{i}"));
            // Inside the VM: listen on all interfaces; peers are the host's forwarded ports.
            let mut config_args = vec![
                "node-config".to_string(),
                "--moniker".into(),
                format!("node{i}"),
                "--timeout-commit-ms".into(),
                timeout_commit_ms.to_string(),
            ];
            for j in 0..i {
                config_args.push("--peer".into());
                config_args.push(format!("10.0.2.2:{}", base + 10 * j as u16));
            }
            let config = run_binary(
                &bin,
                &config_args.iter().map(String::as_str).collect::<Vec<_>>(),
            )?;
            // The host names an ABCI application of its own, on the host: the guest must
            // ignore it and run the image's (the measured one, or the built-in kvstore).
            let config = String::from_utf8(config)?.replace(
                "proxy_app = \"kvstore\"",
                &format!("proxy_app = \"{hosts_proxy_app}\""),
            );
            if !config.contains(&hosts_proxy_app) {
                bail!("node-config wrote no proxy_app to replace");
            }
            let config = config.into_bytes();
            std::fs::write(vm.join("config.toml"), &config)?;
            if i >= validators {
                continue;
            }
            let port = launch_port(base + 10 * i as u16);
            let by = Instant::now() + Duration::from_secs(60);
            let token = std::fs::read_to_string(vm.join("launch.token"))?;
            let real = std::fs::read(&genesis)?;
            if let (0, Some(hostile)) = (i, hostile) {
                let (forged, why) = hostile(&real);
                let answer = send_launch_inputs(port, &token, &config, &forged, by)?;
                if !(answer.starts_with("refused: ") && answer.contains(why.as_str())) {
                    bail!("VM 0 answered hostile launch inputs with {answer:?}, not a refusal naming {why:?}");
                }
                // Nor does the real genesis go in without the token.
                let answer = send_launch_inputs(port, "guessed", &config, &real, by)?;
                if !answer.contains("not the launch token") {
                    bail!("VM 0 answered launch inputs without its token with {answer:?}");
                }
            }
            let answer = send_launch_inputs(port, &token, &config, &real, by)
                .with_context(|| format!("VM {i}'s launch inputs (127.0.0.1:{port})"))?;
            if answer.trim() != "ok" {
                bail!("VM {i} refused its launch inputs: {answer}");
            }
        }
        Ok(VmNetwork {
            dir,
            image: image.to_path_buf(),
            base,
            vms,
            clones: 0,
            full_nodes,
            genesis,
            enrolment,
            started,
            decoy_app,
        })
    }

    /// Sends full node `i` (an index after the validators) its launch inputs: its
    /// config.toml, which dials every VM before it, and the genesis. It runs from then on.
    pub fn launch_full_node(&self, i: usize) -> Result<()> {
        let validators = self.vms.len() - self.clones - self.full_nodes;
        if !(validators..validators + self.full_nodes).contains(&i) {
            bail!("VM {i} is no full node of this network");
        }
        let vm = self.vm_dir(i);
        let token = std::fs::read_to_string(vm.join("launch.token"))?;
        let (config, genesis) = (
            std::fs::read(vm.join("config.toml"))?,
            std::fs::read(&self.genesis)?,
        );
        let by = Instant::now() + Duration::from_secs(60);
        let port = launch_port(self.base + 10 * i as u16);
        let answer = send_launch_inputs(port, &token, &config, &genesis, by)
            .with_context(|| format!("full node {i}'s launch inputs (127.0.0.1:{port})"))?;
        if answer.trim() != "ok" {
            bail!("full node {i} refused its launch inputs: {answer}");
        }
        Ok(())
    }

    /// The `proxy_app` the host put in every VM's config.toml: its decoy application.
    pub fn hosts_proxy_app(&self) -> String {
        let port = self.decoy_app.local_addr().map_or(0, |a| a.port());
        format!("tcp://10.0.2.2:{port}")
    }

    /// How many connections reached the host's decoy application so far (each guest must run
    /// its image's application, never the one the host names).
    pub fn decoy_app_connections(&self) -> usize {
        std::iter::from_fn(|| self.decoy_app.accept().ok()).count()
    }

    /// The forwards of a validator whose P2P port on the host is `p2p` (RPC at `p2p + 1`, the
    /// launch port at [`launch_port`]), all on the host's loopback.
    fn forwards(p2p: u16) -> Vec<Forward> {
        let loopback = Some(std::net::Ipv4Addr::LOCALHOST);
        vec![
            Forward {
                host_addr: loopback,
                host_port: p2p,
                guest_port: GUEST_P2P_PORT,
            },
            Forward {
                host_addr: loopback,
                host_port: p2p + 1,
                guest_port: GUEST_RPC_PORT,
            },
            Forward {
                host_addr: loopback,
                host_port: launch_port(p2p),
                guest_port: GUEST_LAUNCH_PORT,
            },
        ]
    }

    /// A boot of VM `i` of the network in `dir` on its own disk (`tag` names its serial log
    /// and monitor: `serial{-tag}.log`), with the VM's simulated chip, the image's launch
    /// digest, the host configuration and `inputs`.
    fn boot_of(
        dir: &Path,
        i: usize,
        tag: &str,
        inputs: &[(&str, PathBuf)],
        forwards: Vec<Forward>,
    ) -> Boot {
        let vm = dir.join(format!("node{i}"));
        let suffix = if tag.is_empty() {
            String::new()
        } else {
            format!("-{tag}")
        };
        let fw_cfg = simulated_machine_inputs(
            &dir.join("host.json"),
            &vm.join("simulated_chip"),
            &dir.join("simulated_measurement"),
            inputs,
        );
        Boot {
            disk: vm.join("data.img"),
            serial: vm.join(format!("serial{suffix}.log")),
            monitor: vm.join(format!("monitor{suffix}.sock")),
            fw_cfg,
            forwards,
            qemu_args: vec![],
        }
    }

    /// A boot of VM `i` of this network, on `disk`, with its chip and `inputs` (for the
    /// attack tests: the host hands a guest another genesis, HOST_DATA or disk). `tag` names
    /// its serial log; with `network` it gets the VM's forwarded ports.
    pub fn boot(
        &self,
        i: usize,
        tag: &str,
        disk: &Path,
        inputs: &[(&str, PathBuf)],
        network: bool,
    ) -> Boot {
        let forwards = if network {
            Self::forwards(self.base + 10 * i as u16)
        } else {
            vec![]
        };
        let mut boot = Self::boot_of(&self.dir, i, tag, inputs, forwards);
        boot.disk = disk.to_path_buf();
        boot
    }

    /// VM `i`'s files: `data.img`, `enrolled.img` (its disk right after enrolment),
    /// `enrollment.json`, `config.toml`, serial logs.
    pub fn vm_dir(&self, i: usize) -> PathBuf {
        self.dir.join(format!("node{i}"))
    }

    /// The image the VMs run.
    pub fn image(&self) -> &Path {
        &self.image
    }

    /// The host addresses (host:port) of the validators' RPC.
    pub fn rpc_addrs(&self) -> Vec<String> {
        (0..self.vms.len())
            .map(|i| harness::process::rpc_addr(self.base, i))
            .collect()
    }

    /// RPC clients for every validator.
    pub fn clients(&self) -> Vec<RpcClient> {
        self.rpc_addrs().iter().map(|a| RpcClient::new(a)).collect()
    }

    /// How many VMs the network has (clones included), running or not.
    pub fn vm_count(&self) -> usize {
        self.vms.len()
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

    /// Stops VM `i` cleanly (Ctrl-Alt-Del; the node stops, the VM powers off); whether it did
    /// within a minute: QEMU exited and this boot's PID 1 said it powers off with status 0.
    pub fn stop_one(&mut self, i: usize) -> bool {
        let vm = &mut self.vms[i];
        for _ in 0..3 {
            if !matches!(vm.child.try_wait(), Ok(None)) {
                break;
            }
            send_monitor(&vm.monitor, "sendkey ctrl-alt-delete");
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline && matches!(vm.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        !matches!(vm.child.try_wait(), Ok(None))
            && std::fs::read_to_string(&vm.serial)
                .unwrap_or_default()
                .contains(CLEAN_POWER_OFF)
    }

    /// Boots VM `i` (stopped) again in the network, on `disk`, with its launch inputs; `tag`
    /// names its serial log (`serial-<tag>.log` in its directory).
    pub fn reboot(&mut self, i: usize, tag: &str, disk: &Path) -> Result<PathBuf> {
        let vm = self.vm_dir(i);
        let boot = self.boot(
            i,
            tag,
            disk,
            &[
                ("config.toml", vm.join("config.toml")),
                ("genesis.json", self.genesis.clone()),
                ("host_data", self.dir.join("host_data")),
            ],
            true,
        );
        let child = launch(&self.image, &boot)?;
        self.vms[i] = Vm {
            child,
            monitor: boot.monitor,
            serial: boot.serial.clone(),
        };
        Ok(boot.serial)
    }

    /// The host's clone: boots `disk` (a copy of VM `of`'s) as one more VM on the same
    /// machine (VM `of`'s chip, so the copy unseals), with ports of its own, dialling only the
    /// validators `peers`; its original never dials it (it dials lower indices only), so the
    /// host keeps the two apart. Returns the clone's RPC address and serial log; stop it with
    /// [`VmNetwork::stop_clone`] before the network stops.
    pub fn boot_clone(
        &mut self,
        of: usize,
        disk: &Path,
        peers: &[usize],
    ) -> Result<(String, PathBuf)> {
        let vm = self.vm_dir(of);
        let port = harness::ports::free_block(10)?;
        let config = std::fs::read_to_string(vm.join("config.toml"))?;
        let dial: Vec<String> = peers
            .iter()
            .map(|j| format!("\"10.0.2.2:{}\"", self.base + 10 * *j as u16))
            .collect();
        // `persistent_peers = [ ... ]`, on one line or several.
        let start = config
            .find("persistent_peers")
            .with_context(|| format!("VM {of}'s config.toml has no persistent_peers"))?;
        let end = config[start..]
            .find(']')
            .map(|e| start + e + 1)
            .with_context(|| format!("VM {of}'s persistent_peers has no end"))?;
        let config = format!(
            "{}persistent_peers = [{}]{}",
            &config[..start],
            dial.join(", "),
            &config[end..]
        );
        let clone_config = vm.join("config-clone.toml");
        std::fs::write(&clone_config, config)?;
        let mut boot = Self::boot_of(
            &self.dir,
            of,
            "clone",
            &[
                ("config.toml", clone_config),
                ("genesis.json", self.genesis.clone()),
                ("host_data", self.dir.join("host_data")),
            ],
            Self::forwards(port),
        );
        boot.disk = disk.to_path_buf();
        let child = launch(&self.image, &boot)?;
        self.vms.push(Vm {
            child,
            monitor: boot.monitor,
            serial: boot.serial.clone(),
        });
        self.clones += 1;
        Ok((format!("127.0.0.1:{}", port + 1), boot.serial))
    }

    /// Stops the clone booted last (Ctrl-Alt-Del); whether it powered off.
    pub fn stop_clone(&mut self) -> bool {
        if self.clones == 0 {
            return false;
        }
        let last = self.vms.len() - 1;
        let stopped = self.stop_one(last);
        self.vms.pop();
        self.clones -= 1;
        stopped
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

    /// Moves what the host sees into `dest` (made if needed): per VM its data disk, its disk
    /// right after enrolment, its enrollment and serial logs, and the network's genesis and
    /// HOST_DATA; removes the rest. Returns the files kept.
    pub fn keep(self, dest: &Path) -> Result<Vec<PathBuf>> {
        let dir = self.dir.clone();
        let vms = self.vms.len();
        drop(self);
        let mut kept = Vec::new();
        let mut keep = |from: &Path, to: &Path| -> Result<()> {
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent)?;
            }
            // A rename across filesystems fails: copy then.
            if std::fs::rename(from, to).is_err() {
                std::fs::copy(from, to)
                    .with_context(|| format!("keeping {} in {}", from.display(), to.display()))?;
            }
            kept.push(to.to_path_buf());
            Ok(())
        };
        for name in ["genesis.json", "host_data"] {
            if dir.join(name).exists() {
                keep(&dir.join(name), &dest.join(name))?;
            }
        }
        for i in 0..vms {
            let node = format!("node{i}");
            for entry in std::fs::read_dir(dir.join(&node))?.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let wanted = name.ends_with(".img") && !name.contains("files")
                    || name.starts_with("serial") && name.ends_with(".log")
                    || name == "enrollment.json";
                if wanted && entry.path().is_file() {
                    keep(&entry.path(), &dest.join(&node).join(&name))?;
                }
            }
        }
        let _ = std::fs::remove_dir_all(dir);
        Ok(kept)
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

/// SHA-256 of `bytes`.
pub fn sha2_256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

/// Fills `buf` from the system's randomness.
fn getrandom(buf: &mut [u8]) -> Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .context("reading /dev/urandom")
}

#[cfg(test)]
mod tests {
    use super::enrollment_from_serial;
    use base64::Engine;

    #[test]
    fn an_enrollment_line_still_being_written_is_not_read() {
        let line = base64::engine::general_purpose::STANDARD.encode(br#"{"node":"abcdef"}"#);
        // Cut at a multiple of four characters: valid base64 of a truncated enrollment.
        let cut = &line[..line.len() / 8 * 4];
        let partial = format!("booting\r\nbulwark-enrollment: {cut}");
        assert!(enrollment_from_serial(&partial).is_err());
        let finished = format!("booting\r\nbulwark-enrollment: {line}\r\nnext");
        assert_eq!(
            enrollment_from_serial(&finished).unwrap(),
            br#"{"node":"abcdef"}"#
        );
    }
}
