//! The SEV-SNP launch of one validator VM on a real host, with the same device arguments as
//! the TCG runs of [`crate::vm`], and the check of what a would-be SNP host lacks. `cargo
//! xtask qemu --snp` chooses the values (the digest's row, the network's policy and host data)
//! and prints the launch beside the digest; `--snp --check` prints the [`assess`]ment. The
//! SEV features the image's kernel boots with are here too ([`check_guest_features`]): the
//! host gives them, they are in the digest, and `cargo xtask measure` refuses the others.

use crate::vm::{
    data_disk_args, fw_cfg_args, network_args, Forward, GUEST_LAUNCH_PORT, GUEST_P2P_PORT,
    GUEST_RPC_PORT,
};
use anyhow::{bail, Context, Result};
use base64::Engine;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Guest memory of an SNP validator.
const SNP_MEMORY: &str = "2G";
/// The host's `fw_cfg` configuration for the guest (read by PID 1, `boot/`).
pub const HOST_CONFIG_NAME: &str = "opt/bulwark/config";
/// The VCEK (or VLEK) certificate the host hands in (read by the guest's evidence source,
/// `bulwark_attest::source::HOST_CERTIFICATE_NAME`).
pub const HOST_CERTIFICATE_NAME: &str = "opt/bulwark/vcek";

/// The one-liner that reads the host's C-bit position (CPUID 0x8000001F EBX[5:0]) through the
/// cpuid driver; QEMU requires `cbitpos` to equal it.
pub const CBITPOS_ONE_LINER: &str = "CBITPOS=$(( $(dd if=/dev/cpu/0/cpuid bs=16 count=1 skip=$((0x8000001f)) iflag=skip_bytes status=none | od -An -tu4 -j4 -N4) & 63 ))";

/// The C-bit position from CPUID: leaf 0x8000001F exists (`max_extended_leaf`), its EAX says
/// SEV (bit 1), and EBX[5:0] is the position.
pub fn cbitpos_from_cpuid(max_extended_leaf: u32, eax: u32, ebx: u32) -> Option<u32> {
    (max_extended_leaf >= 0x8000_001f && eax & 0b10 != 0).then_some(ebx & 0x3f)
}

/// This host's C-bit position, if its CPU has SEV.
pub fn host_cbitpos() -> Option<u32> {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::__cpuid;
        let max = __cpuid(0x8000_0000).eax;
        if max < 0x8000_001f {
            return None;
        }
        let leaf = __cpuid(0x8000_001f);
        cbitpos_from_cpuid(max, leaf.eax, leaf.ebx)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

/// This CPU's vendor string (CPUID leaf 0: EBX, EDX, ECX).
fn cpu_vendor() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        let r = std::arch::x86_64::__cpuid(0);
        let bytes: Vec<u8> = [r.ebx, r.edx, r.ecx]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        std::env::consts::ARCH.to_string()
    }
}

/// The C-bit position the launch uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cbitpos {
    /// Read from this host's CPUID.
    Host(u32),
    /// Not an SEV host: `$CBITPOS`, set by [`CBITPOS_ONE_LINER`] on the SNP host.
    Variable,
}

/// Everything an SEV-SNP launch of one validator is made of; the caller chooses the values
/// from the published digest's row and the network's genesis.
pub struct SnpLaunch {
    /// The measured image (kernel, initramfs, command line, AmdSev OVMF, measurement.json).
    pub image: PathBuf,
    /// QEMU's `-cpu` model (EPYC-Milan, EPYC-Genoa, EPYC-Turin): its CPUID signature is in
    /// every VMSA, so it picks the digest's row.
    pub cpu_model: &'static str,
    /// `-smp` and the digest's column.
    pub vcpus: u32,
    /// The guest policy.
    pub policy: u64,
    /// HOST_DATA: SHA-256 of the genesis file; `None` for the enrolling launch, which binds
    /// no network yet (the guest makes its identity and publishes its enrollment).
    pub host_data: Option<[u8; 32]>,
    /// The C-bit position.
    pub cbitpos: Cbitpos,
    /// Host port to the guest's P2P port (every interface).
    pub p2p_port: u16,
    /// Host port to the guest's RPC (loopback only).
    pub rpc_port: u16,
}

impl SnpLaunch {
    /// The measured command line, as QEMU is given it (trimmed, as it is measured).
    fn cmdline(&self) -> Result<String> {
        let path = self.image.join("kernel-cmdline");
        Ok(std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .trim()
            .to_string())
    }

    /// The `-object sev-snp-guest` value.
    fn sev_object(&self) -> String {
        let cbitpos = match self.cbitpos {
            Cbitpos::Host(n) => n.to_string(),
            Cbitpos::Variable => "$CBITPOS".into(),
        };
        let mut object = format!(
            "sev-snp-guest,id=sev0,cbitpos={cbitpos},reduced-phys-bits=1,kernel-hashes=on,policy={:#x}",
            self.policy
        );
        if let Some(host_data) = self.host_data {
            object += &format!(
                ",host-data={}",
                base64::engine::general_purpose::STANDARD.encode(host_data)
            );
        }
        object
    }

    /// QEMU's arguments, in order (`$CBITPOS` stands for the variable).
    pub fn args(&self) -> Result<Vec<String>> {
        let image = |f: &str| self.image.join(f).display().to_string();
        let mut a: Vec<String> = [
            "-enable-kvm",
            "-cpu",
            self.cpu_model,
            "-machine",
            "q35,confidential-guest-support=sev0,memory-backend=ram1",
            "-object",
        ]
        .map(String::from)
        .to_vec();
        a.push(format!(
            "memory-backend-memfd,id=ram1,size={SNP_MEMORY},share=true,prealloc=false"
        ));
        a.extend(["-object".into(), self.sev_object()]);
        a.extend([
            "-bios".into(),
            image("OVMF.amdsev.fd"),
            "-kernel".into(),
            image("bzImage"),
            "-initrd".into(),
            image("initramfs.cpio.gz"),
            "-append".into(),
            self.cmdline()?,
        ]);
        a.extend(["-smp".into(), self.vcpus.to_string()]);
        a.extend(["-m", SNP_MEMORY, "-nographic", "-no-reboot"].map(String::from));
        a.extend(data_disk_args(Path::new("data.img")));
        let mut forwards = vec![
            Forward {
                host_addr: None,
                host_port: self.p2p_port,
                guest_port: GUEST_P2P_PORT,
            },
            Forward {
                host_addr: Some(Ipv4Addr::LOCALHOST),
                host_port: self.rpc_port,
                guest_port: GUEST_RPC_PORT,
            },
        ];
        if self.host_data.is_none() {
            // The enrolled guest takes its network's launch inputs here, from the host alone.
            forwards.push(Forward {
                host_addr: Some(Ipv4Addr::LOCALHOST),
                host_port: GUEST_LAUNCH_PORT,
                guest_port: GUEST_LAUNCH_PORT,
            });
        }
        a.extend(network_args(&forwards));
        a.extend(fw_cfg_args(HOST_CONFIG_NAME, Path::new("host.json")));
        a.extend(fw_cfg_args(HOST_CERTIFICATE_NAME, Path::new("vcek.der")));
        match self.host_data {
            None => a.extend(fw_cfg_args("opt/bulwark/enroll", Path::new("enroll.json"))),
            Some(_) => {
                a.extend(fw_cfg_args(
                    "opt/bulwark/genesis.json",
                    Path::new("genesis.json"),
                ));
                a.extend(fw_cfg_args(
                    "opt/bulwark/config.toml",
                    Path::new("config.toml"),
                ));
            }
        }
        Ok(a)
    }

    /// The launch as printed for an operator: what it binds, the digest of its row (`row` in
    /// measurement.json) and the command (`recompute`) that recomputes it independently, what
    /// the host needs, the C-bit one-liner when this is not the SNP host, and the command.
    pub fn render(
        &self,
        row: &str,
        digest: &str,
        recompute: &str,
        genesis: &Path,
    ) -> Result<String> {
        let vcpus = self.vcpus;
        let turin = if self.cpu_model == "EPYC-Turin" {
            ""
        } else {
            "; on 9.1-10.0 a Turin host runs EPYC-Genoa and expects the genoa row"
        };
        let (binds, files) = match self.host_data {
            Some(host_data) => (
                format!(
                    "# HOST_DATA = SHA-256 of {} ({}).\n",
                    genesis.display(),
                    hex(&host_data)
                ),
                "data.img (the validator's disk after its enrolling launch, /dev/vda), host.json ({\"version\":1,\"data_disk\":\"/dev/vda\"}),\n\
                 #   genesis.json (that genesis, byte for byte), config.toml (`bulwark node-config`) and",
            ),
            None => (
                format!("# the enrolling launch: no network yet (no HOST_DATA); the guest makes its identity inside, seals it on\n\
                 #   data.img and prints its enrollment on the console: grep '^bulwark-enrollment: ' console.log | cut -d' ' -f2 | base64 -d > enrollment.json\n\
                 # it then runs on as the validator's launch instance (the genesis names no other): once the genesis is assembled, send it\n\
                 #   with the node's config.toml and your launch token: jq -n --arg token \"$TOKEN\" --rawfile config_toml config.toml --rawfile genesis_json genesis.json '$ARGS.named' | nc -N 127.0.0.1 {GUEST_LAUNCH_PORT}\n\
                 #   (it answers `ok`, or why it refused them). Keep this VM running: a later boot of the disk is another instance.\n"),
                "data.img (an empty ext4 disk, /dev/vda), host.json ({\"version\":1,\"data_disk\":\"/dev/vda\"}),\n\
                 #   enroll.json ({\"moniker\":\"...\",\"chain_name\":\"...\",\"launch_token_sha256\":\"<hex>\"}: TOKEN=$(head -c 32 /dev/urandom | base64);\n\
                 #   printf %s \"$TOKEN\" | sha256sum; keep TOKEN) and",
            ),
        };
        let mut out = format!(
            "# SEV-SNP launch of one validator: image {}, {}, {vcpus} vCPUs, guest policy {:#x},\n\
             {binds}\
             # expected MEASUREMENT (measurement.json .launch_digest.{row}.\"{vcpus}\", guest features 0x1):\n\
             #   {digest}\n\
             # recompute it without this repository: {recompute}\n\
             # host: Linux >= 6.11 with kvm_amd sev_snp=Y, /dev/sev and /dev/kvm, QEMU >= 9.1 (>= 10.1 for EPYC-Turin{turin}),\n\
             #   DebugSwap off; `cargo xtask qemu --snp --check` says what is missing. Never -cpu host: its signature is in no row.\n\
             # run it where {files}\n\
             #   vcek.der (this chip's VCEK from AMD's KDS, README \"SNP host\") are. Peers reach port {}; RPC stays on 127.0.0.1:{}.\n",
            self.image.display(),
            self.cpu_model,
            self.policy,
            self.p2p_port,
            self.rpc_port,
        );
        if self.cbitpos == Cbitpos::Variable {
            out += &format!("# this machine has no SEV: on the SNP host, as root (modprobe cpuid), read its C-bit position (CPUID 0x8000001F EBX[5:0]):\n{CBITPOS_ONE_LINER}\n");
        }
        out += &self.shell()?;
        Ok(out)
    }

    /// The launch as a shell command, one option group per line.
    pub fn shell(&self) -> Result<String> {
        let mut out = String::from("qemu-system-x86_64");
        let args = self.args()?;
        let mut i = 0;
        while i < args.len() {
            let quote = |s: &str| -> Result<String> {
                if s.contains("$CBITPOS") {
                    // Double quotes: the shell substitutes the variable, nothing else here
                    // needs quoting.
                    return Ok(format!("\"{s}\""));
                }
                Ok(shlex::try_quote(s)
                    .map_err(|e| anyhow::anyhow!("cannot quote {s:?}: {e}"))?
                    .into_owned())
            };
            let word = quote(&args[i])?;
            let takes_value = args.get(i + 1).is_some_and(|next| !next.starts_with('-'));
            if takes_value {
                out += &format!(" \\\n  {word} {}", quote(&args[i + 1])?);
                i += 2;
            } else {
                out += &format!(" \\\n  {word}");
                i += 1;
            }
        }
        Ok(out)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What `--snp --check` looked at on this host.
#[derive(Clone, Debug)]
pub struct HostFacts {
    /// `uname -r`.
    pub kernel_release: Option<String>,
    /// `/sys/module/kvm_amd/parameters/sev_snp` (`None`: kvm_amd not loaded).
    pub kvm_amd_sev_snp: Option<String>,
    /// `/dev/kvm` opened read-write (`Err`: why not).
    pub dev_kvm: Result<(), String>,
    /// `/dev/sev` opened read-write (`Err`: why not).
    pub dev_sev: Result<(), String>,
    /// The first line of `qemu-system-x86_64 --version` (`None`: not installed).
    pub qemu_version: Option<String>,
    /// `qemu-system-x86_64 -object sev-snp-guest,help`: its output when it knows the object.
    pub qemu_sev_snp_guest: Option<String>,
    /// The CPU models QEMU knows (`-cpu help`).
    pub qemu_cpu_models: Vec<String>,
    /// The CPU's vendor (CPUID leaf 0).
    pub cpu_vendor: String,
    /// The CPU's C-bit position (`None`: no SEV in CPUID).
    pub cbitpos: Option<u32>,
}

fn open_rw(path: &str) -> Result<(), String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn output(program: &str, args: &[&str]) -> Option<std::process::Output> {
    Command::new(program).args(args).output().ok()
}

impl HostFacts {
    /// Looks at this host.
    pub fn gather() -> Self {
        let stdout = |o: &std::process::Output| String::from_utf8_lossy(&o.stdout).into_owned();
        let qemu = "qemu-system-x86_64";
        HostFacts {
            kernel_release: output("uname", &["-r"]).map(|o| stdout(&o).trim().to_string()),
            kvm_amd_sev_snp: std::fs::read_to_string("/sys/module/kvm_amd/parameters/sev_snp")
                .ok()
                .map(|s| s.trim().to_string()),
            dev_kvm: open_rw("/dev/kvm"),
            dev_sev: open_rw("/dev/sev"),
            qemu_version: output(qemu, &["--version"])
                .filter(|o| o.status.success())
                .and_then(|o| stdout(&o).lines().next().map(str::to_string)),
            qemu_sev_snp_guest: output(qemu, &["-object", "sev-snp-guest,help"])
                .filter(|o| o.status.success())
                .map(|o| stdout(&o)),
            qemu_cpu_models: output(qemu, &["-cpu", "help"])
                .map(|o| {
                    stdout(&o)
                        .lines()
                        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            cpu_vendor: cpu_vendor(),
            cbitpos: host_cbitpos(),
        }
    }
}

/// (major, minor) of a version string's first `N.M`.
pub fn version_of(text: &str) -> Option<(u32, u32)> {
    text.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .find_map(|word| {
            let mut parts = word.split('.');
            let major = parts.next()?.parse().ok()?;
            let minor = parts.next()?.parse().ok()?;
            Some((major, minor))
        })
}

/// One line of `--check`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// What was checked.
    pub item: &'static str,
    /// Whether this host has it.
    pub ok: bool,
    /// What was found, and when missing, what to do.
    pub detail: String,
}

/// What a host with `facts` has and lacks for launching guests with QEMU's `cpu_model`, which
/// needs QEMU `min_qemu` (major, minor) or later.
pub fn assess(facts: &HostFacts, cpu_model: &str, min_qemu: (u32, u32)) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut add = |item, ok, detail: String| out.push(Finding { item, ok, detail });
    match facts.kernel_release.as_deref() {
        Some(release) => match version_of(release) {
            Some(v) if v >= (6, 11) => add("host kernel", true, format!("Linux {release}")),
            _ => add(
                "host kernel",
                false,
                format!("Linux {release}: SEV-SNP hosting needs Linux >= 6.11 (KVM_X86_SNP_VM, KVM_SEV_INIT2)"),
            ),
        },
        None => add("host kernel", false, "uname -r gave nothing".into()),
    }
    match facts.kvm_amd_sev_snp.as_deref() {
        Some("Y") => add("kvm_amd sev_snp", true, "Y".into()),
        Some(other) => add(
            "kvm_amd sev_snp",
            false,
            format!("{other}: enable SEV-SNP (with SMEE, IOMMU and RMP) in the BIOS, update the SEV firmware, and load kvm_amd with sev_snp=1"),
        ),
        None => add(
            "kvm_amd sev_snp",
            false,
            "/sys/module/kvm_amd/parameters/sev_snp does not exist: kvm_amd is not loaded (not an AMD host, or no SEV-SNP in its kernel)".into(),
        ),
    }
    match &facts.dev_kvm {
        Ok(()) => add("/dev/kvm", true, "opened read-write".into()),
        Err(e) => add(
            "/dev/kvm",
            false,
            format!("{e}: QEMU needs KVM (-enable-kvm)"),
        ),
    }
    match &facts.dev_sev {
        Ok(()) => add("/dev/sev", true, "opened read-write".into()),
        Err(e) => add(
            "/dev/sev",
            false,
            format!("{e}: the SEV firmware device (the ccp driver creates it on SEV hosts; run as root or give this user access)"),
        ),
    }
    // Every model needs sev-snp-guest (QEMU 9.1); newer models need a newer QEMU.
    let needed = min_qemu.max((9, 1));
    match &facts.qemu_version {
        None => add(
            "QEMU",
            false,
            format!(
                "qemu-system-x86_64 is not installed (QEMU >= {}.{} is needed)",
                needed.0, needed.1
            ),
        ),
        Some(line) => match version_of(line) {
            Some(v) if v >= needed => add("QEMU", true, line.clone()),
            _ => add(
                "QEMU",
                false,
                format!(
                    "{line}: {} needs QEMU >= {}.{}",
                    cpu_model, needed.0, needed.1
                ),
            ),
        },
    }
    let snp_object_ok = facts.qemu_sev_snp_guest.as_deref().is_some_and(|help| {
        ["kernel-hashes", "host-data", "policy"]
            .iter()
            .all(|p| help.contains(p))
    });
    if snp_object_ok {
        add(
            "QEMU sev-snp-guest",
            true,
            "has kernel-hashes, host-data, policy".into(),
        );
    } else {
        let version = facts.qemu_version.as_deref().unwrap_or("no QEMU");
        add(
            "QEMU sev-snp-guest",
            false,
            format!("{version} lacks -object sev-snp-guest with kernel-hashes, host-data and policy (QEMU >= 9.1 has it)"),
        );
    }
    if facts.qemu_cpu_models.iter().any(|m| m == cpu_model) {
        add("QEMU -cpu", true, format!("knows {}", cpu_model));
    } else {
        add(
            "QEMU -cpu",
            false,
            format!(
                "QEMU does not know {}{}",
                cpu_model,
                if cpu_model == "EPYC-Turin" {
                    " (QEMU >= 10.1; on older QEMU a Turin host launches EPYC-Genoa and expects the genoa row)"
                } else {
                    ""
                }
            ),
        );
    }
    match facts.cbitpos {
        Some(n) => add("C-bit position", true, format!("{n} (CPUID 0x8000001F EBX[5:0]); the launch uses it")),
        None => add(
            "C-bit position",
            false,
            format!(
                "this CPU ({}) reports no SEV in CPUID 0x8000001F: SEV-SNP needs an AMD EPYC (Milan, Genoa, Turin) with SEV enabled",
                facts.cpu_vendor
            ),
        ),
    }
    out
}

/// The guest kernel the table below was read from (`image/pins.toml`'s kernel version): a
/// test of `cargo xtask` fails when the pin moves, so that the table is read again.
pub const GUEST_FEATURES_READ_FROM: &str = "6.12.118-1~deb12u1";

/// SEV features (the VMSA's SEV_FEATURES bits) the pinned guest kernel refuses to boot with.
/// Its decompressor and EFI stub compare the SEV_STATUS MSR, whose bit `n + 2` is SEV_FEATURES
/// bit `n`, with `SNP_FEATURES_IMPL_REQ & ~SNP_FEATURES_PRESENT`
/// (`arch/x86/boot/compressed/sev.c`, `arch/x86/include/asm/msr-index.h`); 6.12 implements only
/// DebugSwap of them (`SNP_FEATURES_PRESENT`) and stops on the others with "Unsupported SEV-SNP
/// features detected". The remaining bits (DebugSwap, PreventHostIBS, BTBIsolation, IBS
/// virtualisation, SMT protection, IBPB on entry) it boots with.
pub const REFUSED_GUEST_FEATURES: &[(u32, &str)] = &[
    (1, "vTOM"),
    (2, "ReflectVC"),
    (3, "RestrictedInjection"),
    (4, "AlternateInjection"),
    (8, "VmplSSS"),
    (9, "SecureTSC"),
    (10, "VmgexitParameter"),
    (11, "reserved bit 11"),
    (13, "reserved bit 13"),
    (14, "VmsaRegisterProtection"),
    (16, "reserved bit 16"),
    (17, "reserved bit 17"),
    (18, "reserved bit 18"),
    (19, "reserved bit 19"),
    (20, "reserved bit 20"),
];

/// Bits 22 and up of SEV_FEATURES (MSR bits 24 and up): reserved, refused by the guest.
const RESERVED_GUEST_FEATURES_FROM: u32 = 22;

/// Checks that the pinned guest kernel boots with SEV features `guest_features` (what the
/// host's KVM puts into the VMSA, and so into the digest); the error says which feature it
/// refuses and why.
pub fn check_guest_features(guest_features: u64) -> Result<()> {
    if guest_features & 1 == 0 {
        bail!(
            "guest features {guest_features:#x}: bit 0 (SNPActive) is not set, and every SEV-SNP guest has it; upstream hosts (Linux >= 6.11, QEMU >= 9.1) give 0x1"
        );
    }
    let mut refused: Vec<String> = REFUSED_GUEST_FEATURES
        .iter()
        .filter(|(bit, _)| guest_features & (1 << bit) != 0)
        .map(|(bit, name)| format!("{name} (bit {bit})"))
        .collect();
    for bit in RESERVED_GUEST_FEATURES_FROM..64 {
        if guest_features & (1 << bit) != 0 {
            refused.push(format!("reserved bit {bit}"));
        }
    }
    if !refused.is_empty() {
        bail!(
            "guest features {guest_features:#x}: the pinned guest kernel (Linux {GUEST_FEATURES_READ_FROM}) cannot boot with {}, which it does not implement: its EFI stub stops with \"Unsupported SEV-SNP features detected\", so that digest can never be observed. The host must not enable them (upstream hosts, Linux >= 6.11 with QEMU >= 9.1, give 0x1)",
            refused.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_features_the_pinned_kernel_refuses_are_refused_with_the_reason() {
        check_guest_features(0x1).unwrap();
        // 6.12 implements DebugSwap (6.1 did not).
        check_guest_features(0x21).unwrap();
        let vtom = check_guest_features(0x3).unwrap_err().to_string();
        assert!(vtom.contains("vTOM (bit 1)"), "{vtom}");
        assert!(vtom.contains("6.12.118-1~deb12u1"), "{vtom}");
        let secure_tsc = check_guest_features(0x201).unwrap_err().to_string();
        assert!(secure_tsc.contains("SecureTSC (bit 9)"), "{secure_tsc}");
        let reserved = check_guest_features(0x1 | 1 << 40).unwrap_err().to_string();
        assert!(reserved.contains("reserved bit 40"), "{reserved}");
        let no_snp = check_guest_features(0x0).unwrap_err().to_string();
        assert!(no_snp.contains("SNPActive"), "{no_snp}");
        // Features that need nothing from the guest: PreventHostIBS, BTBIsolation.
        check_guest_features(0x1 | 1 << 6 | 1 << 7).unwrap();
    }

    #[test]
    fn the_cbitpos_comes_from_cpuid_0x8000001f_ebx_when_the_cpu_has_sev() {
        // Milan and Genoa: EBX[5:0] = 51; EBX[11:6] (physical address reduction) is not it.
        assert_eq!(
            cbitpos_from_cpuid(0x8000_0028, 0x0001_407f, 0x0000_0173),
            Some(51)
        );
        assert_eq!(
            cbitpos_from_cpuid(0x8000_0028, 0x0001_407f, 0x0000_4171),
            Some(49)
        );
        // No SEV bit in EAX, or no such leaf: not an SEV host.
        assert_eq!(
            cbitpos_from_cpuid(0x8000_0028, 0x0000_0001, 0x0000_0173),
            None
        );
        assert_eq!(
            cbitpos_from_cpuid(0x8000_0008, 0x0001_407f, 0x0000_0173),
            None
        );
    }

    /// What `--check` saw on this development machine (an Intel VM with QEMU 10.0 from
    /// bookworm-backports and no SEV).
    fn this_machine() -> HostFacts {
        HostFacts {
            kernel_release: Some("6.18.44-fc-v857".into()),
            kvm_amd_sev_snp: None,
            dev_kvm: Ok(()),
            dev_sev: Err("No such file or directory (os error 2)".into()),
            qemu_version: Some(
                "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)".into(),
            ),
            qemu_sev_snp_guest: Some(
                "sev-snp-guest options:\n  host-data=<string>\n  kernel-hashes=<bool>\n  policy=<uint64>\n".into(),
            ),
            qemu_cpu_models: vec!["EPYC-Milan".into(), "EPYC-Genoa".into()],
            cpu_vendor: "GenuineIntel".into(),
            cbitpos: None,
        }
    }

    fn missing(facts: &HostFacts, cpu_model: &str, min_qemu: (u32, u32)) -> Vec<&'static str> {
        assess(facts, cpu_model, min_qemu)
            .into_iter()
            .filter(|f| !f.ok)
            .map(|f| f.item)
            .collect()
    }

    #[test]
    fn the_check_names_exactly_what_a_host_lacks() {
        let milan = ("EPYC-Milan", (9, 1));
        assert_eq!(
            missing(&this_machine(), milan.0, milan.1),
            ["kvm_amd sev_snp", "/dev/sev", "C-bit position"]
        );
        let findings = assess(&this_machine(), milan.0, milan.1);
        let cbit = findings
            .iter()
            .find(|f| f.item == "C-bit position")
            .unwrap();
        assert!(cbit.detail.contains("GenuineIntel"), "{cbit:?}");
        // Turin needs QEMU 10.1 for its model.
        assert_eq!(
            missing(&this_machine(), "EPYC-Turin", (10, 1)),
            [
                "kvm_amd sev_snp",
                "/dev/sev",
                "QEMU",
                "QEMU -cpu",
                "C-bit position"
            ]
        );
        // Debian bookworm's own QEMU and kernel.
        let bookworm = HostFacts {
            kernel_release: Some("6.1.0-41-amd64".into()),
            qemu_version: Some(
                "QEMU emulator version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u16)".into(),
            ),
            qemu_sev_snp_guest: None,
            ..this_machine()
        };
        let findings = assess(&bookworm, milan.0, milan.1);
        let qemu = findings
            .iter()
            .find(|f| f.item == "QEMU sev-snp-guest")
            .unwrap();
        assert!(
            !qemu.ok && qemu.detail.contains("QEMU emulator version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u16) lacks -object sev-snp-guest"),
            "{qemu:?}"
        );
        assert_eq!(
            missing(&bookworm, milan.0, milan.1),
            [
                "host kernel",
                "kvm_amd sev_snp",
                "/dev/sev",
                "QEMU",
                "QEMU sev-snp-guest",
                "C-bit position"
            ]
        );
        // A host with everything.
        let snp_host = HostFacts {
            kvm_amd_sev_snp: Some("Y".into()),
            dev_sev: Ok(()),
            cpu_vendor: "AuthenticAMD".into(),
            cbitpos: Some(51),
            ..this_machine()
        };
        assert!(missing(&snp_host, "EPYC-Genoa", (9, 1)).is_empty());
        let off = HostFacts {
            kvm_amd_sev_snp: Some("N".into()),
            ..snp_host
        };
        assert_eq!(missing(&off, milan.0, milan.1), ["kvm_amd sev_snp"]);
    }
}
