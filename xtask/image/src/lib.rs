//! `cargo xtask image` and `cargo xtask measure`: the measured guest image, built reproducibly
//! from pinned inputs (`image/pins.toml`, `image/patches/`, `image/kernel.config`,
//! `kernel-cmdline`), and its
//! SEV-SNP launch measurement computed with `sev::measurement::snp`.
//!
//! Two flavours: the production image in `target/image/` (no simulated PSP compiled in: the
//! measurement operators publish) and, with `--simulated`, the development image in
//! `target/image-simulated/` (the simulated PSP, for TCG runs, the demo and tests; a
//! measurement of its own). Each holds `bzImage`, `initramfs.cpio.gz`, `kernel-cmdline`,
//! `OVMF.amdsev.fd`, `measurement.json`, `bulwark` (the initramfs's `/init`, for the host's
//! side of the ceremony), `kernel.config` (the kernel's final configuration) and `SHA256SUMS`. Fetched inputs are cached by version in
//! `~/.cache/bulwark/downloads`, the kernel build by the hash of all its inputs in
//! `~/.cache/bulwark/kernel`.

use anyhow::{bail, Context, Result};
use harness::workspace;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use xtask_steps::apt::ensure_packages;
use xtask_steps::cache_dir;
use xtask_steps::step::{step, Step};

pub use vm_harness::vm::Flavour;

#[derive(Deserialize, Debug, Clone)]
struct Pin {
    package: String,
    version: String,
    suite: String,
    /// The .deb's URL in Debian's pool, for when the suite's index no longer lists it.
    pool: String,
    deb_sha256: String,
    file: String,
    file_sha256: String,
}

#[derive(Deserialize, Debug)]
struct Pins {
    kernel: Pin,
    firmware: Pin,
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Downloads the pinned .deb with apt (a private apt configuration for the pin's suite, so the
/// system's sources are untouched), checks its sha256, and returns the pinned file inside it
/// after checking that file's sha256 too.
fn fetch(pin: &Pin) -> Result<Vec<u8>> {
    let downloads = cache_dir().join("downloads");
    std::fs::create_dir_all(&downloads)?;
    let deb = downloads.join(format!("{}_{}_all.deb", pin.package, pin.version));
    if !deb.exists() {
        ensure_packages(&["curl"])?;
        step(
            &format!(
                "image: fetching {} {} from Debian {}",
                pin.package, pin.version, pin.suite
            ),
            &format!("fetch-{}", pin.package),
            |s| download(s, pin, &downloads, &deb),
        )?;
    }
    let deb_bytes = std::fs::read(&deb)?;
    let got = sha256_hex(&deb_bytes);
    if got != pin.deb_sha256 {
        bail!(
            "{}: sha256 {got}, pinned {} — refusing to build from it",
            deb.display(),
            pin.deb_sha256
        );
    }
    let tmp = tempdir("deb")?;
    let out = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&tmp)
        .output()?;
    if !out.status.success() {
        bail!(
            "dpkg-deb -x {}: {}",
            deb.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let bytes = std::fs::read(tmp.join(&pin.file))
        .with_context(|| format!("{} has no {}", deb.display(), pin.file))?;
    let _ = std::fs::remove_dir_all(&tmp);
    let got = sha256_hex(&bytes);
    if got != pin.file_sha256 {
        bail!(
            "{} in {}: sha256 {got}, pinned {}",
            pin.file,
            deb.display(),
            pin.file_sha256
        );
    }
    Ok(bytes)
}

/// Fetches the pinned .deb into `deb`: from the suite's index with a private apt
/// configuration, or from Debian's pool when the index no longer lists it.
fn download(s: &mut Step, pin: &Pin, downloads: &Path, deb: &Path) -> Result<()> {
    let apt = cache_dir().join(format!("apt-{}", pin.suite));
    for d in ["lists/partial", "cache/archives/partial", "etc"] {
        std::fs::create_dir_all(apt.join(d))?;
    }
    let archive = if pin.suite.ends_with("-security") {
        "http://deb.debian.org/debian-security"
    } else {
        "http://deb.debian.org/debian"
    };
    std::fs::write(
        apt.join("etc/sources.list"),
        format!(
            "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {archive} {} main\n",
            pin.suite
        ),
    )?;
    let opts = |c: &mut Command| {
        c.arg("-o")
            .arg(format!(
                "Dir::Etc::SourceList={}",
                apt.join("etc/sources.list").display()
            ))
            .args(["-o", "Dir::Etc::SourceParts=/dev/null"])
            .arg("-o")
            .arg(format!("Dir::State::Lists={}", apt.join("lists").display()))
            .arg("-o")
            .arg(format!("Dir::Cache={}", apt.join("cache").display()))
            .args(["-o", "Debug::NoLocking=1", "-q"]);
    };
    let mut update = Command::new("apt-get");
    opts(&mut update);
    s.run(update.arg("update"))?;
    let mut get = Command::new("apt-get");
    opts(&mut get);
    get.current_dir(downloads)
        .arg("download")
        .arg(format!("{}={}", pin.package, pin.version));
    if s.run(&mut get).is_err() {
        s.note(&format!(
            "the {} index no longer lists {} {}; trying its pool file",
            pin.suite, pin.package, pin.version
        ))?;
        let part = downloads.join(format!("{}.part", pin.package));
        let pooled = s.run(
            Command::new("curl")
                .args(["-fsSL", "--retry", "3", "-o"])
                .arg(&part)
                .arg(&pin.pool),
        );
        if pooled.is_ok() {
            std::fs::rename(&part, deb)?;
        }
    }
    if !deb.exists() {
        let mut policy = Command::new("apt-cache");
        opts(&mut policy);
        let out = policy.arg("policy").arg(&pin.package).output()?;
        bail!(
            "Debian {} no longer has {} {}, in its index or its pool. What it has now:\n{}\nUpdate image/pins.toml deliberately (and republish the measurement).",
            pin.suite,
            pin.package,
            pin.version,
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(())
}

fn tempdir(tag: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("bulwark-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Environment that makes kernel builds reproducible.
const KBUILD_ENV: &[(&str, &str)] = &[
    ("KBUILD_BUILD_TIMESTAMP", "Thu Jan  1 00:00:00 UTC 1970"),
    ("KBUILD_BUILD_USER", "bulwark"),
    ("KBUILD_BUILD_HOST", "bulwark"),
    ("KBUILD_BUILD_VERSION", "1"),
    ("LC_ALL", "C"),
    ("TZ", "UTC"),
];

fn gcc_version() -> String {
    Command::new("gcc")
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default()
}

/// The kernel patches in `image/patches` (name, bytes), in name order.
fn kernel_patches() -> Result<Vec<(String, Vec<u8>)>> {
    let mut patches = Vec::new();
    for entry in std::fs::read_dir(workspace().join("image/patches"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "patch") {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            patches.push((name, std::fs::read(&path)?));
        }
    }
    patches.sort();
    Ok(patches)
}

/// The guest kernel before the move to 6.12 (`image/reference-6.1`: its pin and
/// configuration fragment, no patches), built (or taken from the cache) for benches that
/// compare with it; with its build seconds when built now.
pub fn reference_kernel_6_1() -> Result<(Kernel, Option<f64>)> {
    #[derive(Deserialize)]
    struct Reference {
        kernel: Pin,
    }
    let dir = workspace().join("image/reference-6.1");
    let pin: Reference = toml::from_str(&std::fs::read_to_string(dir.join("pin.toml"))?)
        .context("image/reference-6.1/pin.toml")?;
    let fragment = std::fs::read_to_string(dir.join("kernel.config"))?;
    let source = fetch(&pin.kernel)?;
    kernel(&source, &pin.kernel.version, &fragment, &[])
}

/// A built kernel: the bzImage and the final `.config` it was built with.
pub struct Kernel {
    /// arch/x86/boot/bzImage.
    pub bz_image: Vec<u8>,
    /// The `.config` after `olddefconfig`.
    pub config: String,
}

/// The kernel, built from the pinned source with `image/patches` and `image/kernel.config`,
/// cached by the hash of everything that goes into it. Returns the kernel and the build
/// seconds (None if cached).
fn kernel(
    source_tarball: &[u8],
    version: &str,
    config_fragment: &str,
    patches: &[(String, Vec<u8>)],
) -> Result<(Kernel, Option<f64>)> {
    let mut h = Sha256::new();
    h.update(Sha256::digest(source_tarball));
    h.update(config_fragment.as_bytes());
    for (name, bytes) in patches {
        h.update(name.as_bytes());
        h.update(Sha256::digest(bytes));
    }
    h.update(gcc_version().as_bytes());
    for (k, v) in KBUILD_ENV {
        h.update(k.as_bytes());
        h.update(v.as_bytes());
    }
    let key = hex::encode(h.finalize());
    let cached = cache_dir().join("kernel").join(&key[..16]);
    if let (Ok(bz_image), Ok(config)) = (
        std::fs::read(cached.join("bzImage")),
        std::fs::read_to_string(cached.join("config")),
    ) {
        eprintln!("image: kernel {version} from cache ({})", cached.display());
        return Ok((Kernel { bz_image, config }, None));
    }
    ensure_packages(&[
        "build-essential",
        "flex",
        "bison",
        "bc",
        "libelf-dev",
        "cpio",
        "xz-utils",
        "patch",
    ])?;
    let started = Instant::now();
    let built = step(
        &format!("image: building kernel {version} (cold: a few minutes)"),
        "kernel-build",
        |s| build_kernel(s, source_tarball, patches, config_fragment),
    )?;
    let seconds = started.elapsed().as_secs_f64();
    std::fs::create_dir_all(&cached)?;
    std::fs::write(cached.join("config"), &built.config)?;
    std::fs::write(cached.join("bzImage"), &built.bz_image)?;
    Ok((built, Some(seconds)))
}

/// Every line of `fragment` holds in `final_config`: a `CONFIG_X=v` line is there, and a
/// `# CONFIG_X is not set` line's option is not set to anything (or no longer exists).
fn check_fragment(fragment: &str, final_config: &str) -> Result<()> {
    for line in fragment.lines() {
        if line.starts_with("CONFIG_") {
            if !final_config.lines().any(|l| l == line) {
                bail!("kernel config: {line} did not survive olddefconfig (a missing dependency?)");
            }
        } else if let Some(name) = line
            .strip_prefix("# ")
            .and_then(|l| l.strip_suffix(" is not set"))
        {
            let set = format!("{name}=");
            if final_config.lines().any(|l| l.starts_with(&set)) {
                bail!("kernel config: {name} is set after olddefconfig though image/kernel.config turns it off (something selects it)");
            }
        }
    }
    Ok(())
}

fn build_kernel(
    s: &mut Step,
    source_tarball: &[u8],
    patches: &[(String, Vec<u8>)],
    config_fragment: &str,
) -> Result<Kernel> {
    let dir = tempdir("kernel")?;
    std::fs::write(dir.join("linux.tar.xz"), source_tarball)?;
    s.run(
        Command::new("tar")
            .current_dir(&dir)
            .args(["-xf", "linux.tar.xz"]),
    )?;
    let src = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.is_dir())
        .context("the kernel tarball holds no directory")?;
    for (name, bytes) in patches {
        let path = dir.join(name);
        std::fs::write(&path, bytes)?;
        s.run(
            Command::new("patch")
                .current_dir(&src)
                .args(["-p1", "--forward", "--input"])
                .arg(&path),
        )
        .with_context(|| format!("applying image/patches/{name}"))?;
    }
    let mut make = |args: &[&str]| -> Result<()> {
        let mut c = Command::new("make");
        c.current_dir(&src).args(args);
        for (k, v) in KBUILD_ENV {
            c.env(k, v);
        }
        s.run(&mut c)
    };
    make(&["tinyconfig"])?;
    let mut config = std::fs::OpenOptions::new()
        .append(true)
        .open(src.join(".config"))?;
    config.write_all(config_fragment.as_bytes())?;
    drop(config);
    make(&["olddefconfig"])?;
    let final_config = std::fs::read_to_string(src.join(".config"))?;
    check_fragment(config_fragment, &final_config)?;
    let jobs = format!(
        "-j{}",
        std::thread::available_parallelism().map_or(2, |n| n.get())
    );
    make(&[&jobs, "bzImage"])?;
    let bz_image = std::fs::read(src.join("arch/x86/boot/bzImage"))?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Kernel {
        bz_image,
        config: final_config,
    })
}

/// The static `bulwark` binary of `flavour`, built so that its bytes do not depend on where
/// the checkout is. The production flavour is built without the `simulated-psp` feature.
fn static_bulwark(flavour: Flavour) -> Result<Vec<u8>> {
    let features: &[&str] = match flavour {
        Flavour::Production => &[],
        Flavour::Simulated => &["--features", "simulated-psp"],
    };
    Ok(std::fs::read(static_binary(
        "bulwark",
        "bulwark",
        features,
        &format!("static-build-{}", flavour.dir_name()),
    )?)?)
}

/// A static build of binary `bin` of `package` (release, reproducible paths); its path.
fn static_binary(package: &str, bin: &str, features: &[&str], log: &str) -> Result<PathBuf> {
    let root = workspace().canonicalize()?;
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let target = harness::process::target_dir().join("image-build");
    let flags = format!(
        "-C target-feature=+crt-static -C link-arg=-Wl,--build-id=none --remap-path-prefix={}=/src --remap-path-prefix={home}/.cargo=/cargo --remap-path-prefix={home}/.rustup=/rustup",
        root.display()
    );
    let c_flags = format!(
        "-ffile-prefix-map={}=/src -ffile-prefix-map={home}/.cargo=/cargo",
        root.display()
    );
    step(
        &format!("image: building the static {bin} binary (release)"),
        log,
        |s| {
            s.run(
                harness::cargo()
                    .current_dir(&root)
                    .env("RUSTFLAGS", flags)
                    // The C compiled in (ring's, mimalloc's) names no host path either.
                    .env("CFLAGS", &c_flags)
                    .env("CARGO_TARGET_DIR", &target)
                    .env("SOURCE_DATE_EPOCH", "0")
                    .args([
                        "build",
                        "--release",
                        "--locked",
                        "-p",
                        package,
                        "--bin",
                        bin,
                    ])
                    .args(["--target", "x86_64-unknown-linux-gnu"])
                    .args(features),
            )
        },
    )?;
    Ok(target.join("x86_64-unknown-linux-gnu/release").join(bin))
}

/// A static build of `bin` of `bulwark-abci-apps` (`tendermint-kvstore`, `abci-conformance`),
/// for `--app`.
pub fn static_abci_app(bin: &str) -> Result<PathBuf> {
    static_binary(
        "bulwark-abci-apps",
        bin,
        &[],
        &format!("static-build-{bin}"),
    )
}

/// One entry of the initramfs.
pub enum Entry<'a> {
    /// A directory (0755).
    Dir,
    /// A file.
    File {
        /// Its permission bits.
        mode: u32,
        /// Its bytes.
        data: &'a [u8],
    },
    /// A character device node (0600).
    CharDev {
        /// Its major number.
        major: u32,
        /// Its minor number.
        minor: u32,
    },
}

/// One newc header (and the name, padded to 4 bytes).
fn newc_header(out: &mut Vec<u8>, ino: u32, mode: u32, size: usize, rdev: (u32, u32), name: &str) {
    let fields = [
        ino,
        mode,
        0,
        0,
        1,
        0,
        size as u32,
        0,
        0,
        rdev.0,
        rdev.1,
        name.len() as u32 + 1,
        0,
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08X}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    while out.len() % 4 != 0 {
        out.push(0);
    }
}

/// A newc cpio archive of `entries` (sorted by name, owner 0:0, mtime 0, inode numbers in
/// order): the same entries always give the same bytes.
pub fn cpio(entries: &mut [(&str, Entry<'_>)]) -> Vec<u8> {
    entries.sort_by(|a, b| a.0.cmp(b.0));
    let mut out = Vec::new();
    for (i, (name, entry)) in entries.iter().enumerate() {
        let ino = i as u32 + 1;
        match entry {
            Entry::Dir => newc_header(&mut out, ino, 0o040755, 0, (0, 0), name),
            Entry::CharDev { major, minor } => {
                newc_header(&mut out, ino, 0o020600, 0, (*major, *minor), name)
            }
            Entry::File { mode, data } => {
                newc_header(&mut out, ino, 0o100000 | mode, data.len(), (0, 0), name);
                out.extend_from_slice(data);
                while out.len() % 4 != 0 {
                    out.push(0);
                }
            }
        }
    }
    newc_header(&mut out, 0, 0, 0, (0, 0), "TRAILER!!!");
    out
}

/// gzip with no name and mtime 0.
fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut enc = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(3)
        .write(Vec::new(), flate2::Compression::best());
    enc.write_all(bytes)?;
    Ok(enc.finish()?)
}

/// Where the node reaches an image's application by default.
pub const DEFAULT_APP_PROXY: &str = "unix:///run/abci-app/app.sock";

/// The ABCI application an image carries (`--app`).
pub struct ImageApp {
    /// Its file name, for measurement.json.
    pub name: String,
    /// The static binary.
    pub binary: Vec<u8>,
    /// How PID 1 starts it and the node reaches it (`/etc/abci-app.json`).
    pub spec: bulwark_boot::image_app::AppSpec,
}

impl ImageApp {
    /// Reads `path`, which must be a static x86-64 ELF executable (the image has no libc);
    /// `args` default to `proxy_app`.
    pub fn new(path: PathBuf, args: Vec<String>, proxy_app: String) -> Result<Self> {
        let binary = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        check_static_elf(&binary).with_context(|| format!("--app {}", path.display()))?;
        check_app_proxy(&proxy_app)?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let args = if args.is_empty() {
            vec![proxy_app.clone()]
        } else {
            args
        };
        Ok(ImageApp {
            name,
            binary,
            spec: bulwark_boot::image_app::AppSpec { args, proxy_app },
        })
    }
}

/// Where the node may reach the image's application: a Unix socket at an absolute path, or
/// TCP on a loopback address given literally (a name would be resolved through DNS the host
/// answers; another address would be the host's network).
fn check_app_proxy(proxy: &str) -> Result<()> {
    if let Some(path) = proxy.strip_prefix("unix://") {
        if path.starts_with('/') && path.len() > 1 {
            return Ok(());
        }
        bail!("--app-proxy {proxy}: a Unix socket needs an absolute path");
    }
    let addr: std::net::SocketAddr = proxy
        .strip_prefix("tcp://")
        .and_then(|a| a.parse().ok())
        .with_context(|| {
            format!("--app-proxy {proxy}: not unix:///path or tcp://<loopback IP>:<port>")
        })?;
    if !addr.ip().is_loopback() {
        bail!("--app-proxy {proxy}: TCP only on a loopback address: the application must not be reachable from the host's network");
    }
    Ok(())
}

/// A 64-bit little-endian x86-64 ELF executable with no program interpreter (statically
/// linked).
fn check_static_elf(bytes: &[u8]) -> Result<()> {
    let u16_at = |o: usize| {
        bytes
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u64_at = |o: usize| {
        bytes
            .get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    if bytes.get(..6) != Some(b"\x7fELF\x02\x01".as_slice()) || u16_at(0x12) != Some(62) {
        bail!("not a 64-bit little-endian x86-64 ELF file");
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        bail!("a truncated ELF header");
    };
    for i in 0..usize::from(phnum) {
        let at = usize::try_from(phoff)? + i * usize::from(phentsize);
        match bytes.get(at..at + 4) {
            None => bail!("program header {i} lies outside the file"),
            // PT_INTERP: a dynamic loader the image does not have.
            Some([3, 0, 0, 0]) => bail!(
                "dynamically linked (it names a program interpreter); the image has no libc: build it with `-C target-feature=+crt-static`"
            ),
            Some(_) => {}
        }
    }
    Ok(())
}

/// The initramfs: the static `bulwark` binary as `/init`, the few nodes PID 1 needs before
/// devtmpfs is mounted, and the application, if the image carries one.
pub fn initramfs(bulwark: &[u8], app: Option<(&[u8], &[u8])>) -> Result<Vec<u8>> {
    let mut entries = vec![
        ("dev", Entry::Dir),
        ("dev/console", Entry::CharDev { major: 5, minor: 1 }),
        ("proc", Entry::Dir),
        ("sys", Entry::Dir),
        ("data", Entry::Dir),
        (
            "init",
            Entry::File {
                mode: 0o755,
                data: bulwark,
            },
        ),
    ];
    if let Some((binary, spec)) = app {
        entries.extend([
            ("bin", Entry::Dir),
            ("etc", Entry::Dir),
            ("run", Entry::Dir),
            (
                bulwark_boot::image_app::APP_BINARY,
                Entry::File {
                    mode: 0o755,
                    data: binary,
                },
            ),
            (
                bulwark_boot::image_app::APP_SPEC,
                Entry::File {
                    mode: 0o644,
                    data: spec,
                },
            ),
        ]);
    }
    gzip(&cpio(&mut entries))
}

/// A CPU model for measurements.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum CpuModel {
    /// EPYC-Milan.
    Milan,
    /// EPYC-Genoa.
    Genoa,
    /// EPYC-Turin.
    Turin,
}

impl CpuModel {
    /// The `sev` crate's vCPU type (its CPUID signature goes into every VMSA).
    pub fn sev(self) -> sev::measurement::vcpu_types::CpuType {
        use sev::measurement::vcpu_types::CpuType;
        match self {
            CpuModel::Milan => CpuType::EpycMilan,
            CpuModel::Genoa => CpuType::EpycGenoa,
            CpuModel::Turin => CpuType::EpycTurin,
        }
    }
    /// QEMU's name for the model (and sev-snp-measure's `--vcpu-type`).
    pub fn qemu_model(self) -> &'static str {
        match self {
            CpuModel::Milan => "EPYC-Milan",
            CpuModel::Genoa => "EPYC-Genoa",
            CpuModel::Turin => "EPYC-Turin",
        }
    }

    /// The oldest QEMU (major, minor) that has the model: EPYC-Turin came with 10.1, the others
    /// are older than QEMU's SEV-SNP support (9.1).
    pub fn min_qemu(self) -> (u32, u32) {
        match self {
            CpuModel::Milan | CpuModel::Genoa => (9, 1),
            CpuModel::Turin => (10, 1),
        }
    }

    /// The model's name in `measurement.json`.
    pub fn name(self) -> &'static str {
        match self {
            CpuModel::Milan => "milan",
            CpuModel::Genoa => "genoa",
            CpuModel::Turin => "turin",
        }
    }
}

/// The SNP launch digest (hex) of the image in `dir`, for guest features the pinned kernel
/// boots with (`vm_harness::snp::check_guest_features`).
pub fn launch_digest(dir: &Path, vcpus: u32, cpu: CpuModel, guest_features: u64) -> Result<String> {
    use sev::measurement::snp::{snp_calc_launch_digest, SnpMeasurementArgs};
    use sev::measurement::vmsa::{GuestFeatures, VMMType};
    vm_harness::snp::check_guest_features(guest_features)?;
    let cmdline = std::fs::read_to_string(dir.join("kernel-cmdline"))?;
    let digest = snp_calc_launch_digest(SnpMeasurementArgs {
        vcpus,
        vcpu_type: cpu.sev(),
        ovmf_file: dir.join("OVMF.amdsev.fd"),
        guest_features: GuestFeatures(guest_features),
        kernel_file: Some(dir.join("bzImage")),
        initrd_file: Some(dir.join("initramfs.cpio.gz")),
        append: Some(cmdline.trim_end_matches('\n')),
        ovmf_hash_str: None,
        vmm_type: Some(VMMType::QEMU),
    })
    .map_err(|e| anyhow::anyhow!("measurement: {e:?}"))?;
    Ok(digest.get_hex_ld())
}

/// Where the image of `flavour` is built (`target/image`, `target/image-simulated`).
pub fn image_dir(flavour: Flavour) -> PathBuf {
    vm_harness::vm::image_dir(flavour)
}

/// `cargo xtask image [--simulated]`.
pub fn build(flavour: Flavour) -> Result<()> {
    build_into(flavour, None, &image_dir(flavour))
}

/// The image of `flavour`, carrying `app` if given, in `out`.
pub fn build_into(flavour: Flavour, app: Option<&ImageApp>, out: &Path) -> Result<()> {
    let root = workspace();
    let pins: Pins = toml::from_str(&std::fs::read_to_string(root.join("image/pins.toml"))?)
        .context("image/pins.toml")?;
    let fragment = std::fs::read_to_string(root.join("image/kernel.config"))?;
    let cmdline = std::fs::read_to_string(root.join("kernel-cmdline"))?;
    if cmdline.lines().count() != 1 {
        bail!("kernel-cmdline must be exactly one line");
    }
    let source = fetch(&pins.kernel)?;
    let firmware = fetch(&pins.firmware)?;
    let (built, kernel_seconds) =
        kernel(&source, &pins.kernel.version, &fragment, &kernel_patches()?)?;
    let bz = built.bz_image;
    let binary = static_bulwark(flavour)?;
    check_flavour(flavour, &binary)?;
    let spec = app
        .map(|a| serde_json::to_vec_pretty(&a.spec))
        .transpose()?;
    let init = initramfs(
        &binary,
        app.zip(spec.as_deref())
            .map(|(a, s)| (a.binary.as_slice(), s)),
    )?;
    let _ = std::fs::remove_dir_all(out);
    std::fs::create_dir_all(out)?;
    std::fs::write(out.join("bzImage"), &bz)?;
    std::fs::write(out.join("kernel.config"), &built.config)?;
    std::fs::write(out.join("initramfs.cpio.gz"), &init)?;
    std::fs::write(out.join("kernel-cmdline"), &cmdline)?;
    std::fs::write(out.join("OVMF.amdsev.fd"), &firmware)?;
    std::fs::write(out.join("bulwark"), &binary)?;
    if let Some(app) = app {
        std::fs::write(out.join("abci-app"), &app.binary)?;
    }
    std::fs::set_permissions(
        out.join("bulwark"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    let mut digests = serde_json::Map::new();
    for cpu in CPU_MODELS {
        let mut per = serde_json::Map::new();
        for vcpus in 1..=8u32 {
            per.insert(
                vcpus.to_string(),
                launch_digest(out, vcpus, cpu, 0x1)?.into(),
            );
        }
        digests.insert(cpu.name().into(), per.into());
    }
    let mut inputs = serde_json::json!({
        "bzImage": sha256_hex(&bz),
        "initramfs.cpio.gz": sha256_hex(&init),
        "init (bulwark)": sha256_hex(&binary),
        "kernel-cmdline": sha256_hex(cmdline.as_bytes()),
        "kernel.config (final)": sha256_hex(built.config.as_bytes()),
        "OVMF.amdsev.fd": sha256_hex(&firmware),
        "kernel_source": {"package": pins.kernel.package, "version": pins.kernel.version, "sha256": pins.kernel.file_sha256},
        "firmware": {"package": pins.firmware.package, "version": pins.firmware.version, "sha256": pins.firmware.file_sha256},
    });
    if let Some(app) = app {
        inputs["abci-app"] = serde_json::json!({
            "file": app.name,
            "sha256": sha256_hex(&app.binary),
            "args": app.spec.args,
            "proxy_app": app.spec.proxy_app,
        });
    }
    let measurement = serde_json::json!({
        "flavour": match flavour {
            Flavour::Production => "production",
            Flavour::Simulated => "simulated (development: the simulated PSP is compiled in; never publish for a network that carries value)",
        },
        "guest_features": "0x1",
        "vmm": "qemu",
        "launch_digest": digests,
        "inputs": inputs,
    });
    std::fs::write(
        out.join("measurement.json"),
        serde_json::to_string_pretty(&measurement)? + "\n",
    )?;
    let mut sums = String::new();
    for name in [
        "OVMF.amdsev.fd",
        "abci-app",
        "bulwark",
        "bzImage",
        "initramfs.cpio.gz",
        "kernel-cmdline",
        "kernel.config",
        "measurement.json",
    ] {
        if name == "abci-app" && app.is_none() {
            continue;
        }
        sums += &format!("{}  {name}\n", sha256_hex(&std::fs::read(out.join(name))?));
    }
    std::fs::write(out.join("SHA256SUMS"), &sums)?;
    eprintln!(
        "image: {flavour:?} image in {} (bzImage {} KiB, initramfs {} KiB{})",
        out.display(),
        bz.len() / 1024,
        init.len() / 1024,
        kernel_seconds.map_or(String::new(), |s| format!(", kernel built in {s:.0} s"))
    );
    Ok(())
}

/// `cargo xtask image [--simulated] [--app PATH ...] [--out DIR]`: builds the image and
/// prints its SHA256SUMS.
pub fn build_and_print(flavour: Flavour, app: Option<&ImageApp>, out: &Path) -> Result<()> {
    build_into(flavour, app, out)?;
    print!("{}", std::fs::read_to_string(out.join("SHA256SUMS"))?);
    Ok(())
}

/// Bytes only a build with the simulated PSP contains: the simulated ARK's certificate and
/// the name its VCEKs carry (they are compiled in from `crates/attest/simulated/`).
fn simulated_markers() -> Vec<Vec<u8>> {
    let ark = std::fs::read_to_string(workspace().join("crates/attest/simulated/ark.pem"))
        .unwrap_or_default();
    // A line from the middle of the PEM: base64 of the certificate's own bytes.
    let line = ark.lines().nth(10).unwrap_or_default().as_bytes().to_vec();
    vec![line, b"SIMULATED-SEV-VCEK".to_vec()]
}

/// Refuses a production binary that contains the simulated PSP (a feature switched on by
/// mistake) and a development one that lacks it.
fn check_flavour(flavour: Flavour, binary: &[u8]) -> Result<()> {
    let contains =
        |needle: &[u8]| !needle.is_empty() && binary.windows(needle.len()).any(|w| w == needle);
    let markers = simulated_markers();
    let found = markers.iter().filter(|m| contains(m)).count();
    match flavour {
        Flavour::Production if found > 0 => bail!(
            "the production bulwark binary contains the simulated PSP ({found} of {} markers): refusing to build a production image from it",
            markers.len()
        ),
        Flavour::Simulated if found < markers.len() => {
            bail!("the simulated image's bulwark binary lacks the simulated PSP")
        }
        _ => Ok(()),
    }
}

/// The CPU models, in `measurement.json`'s order.
pub const CPU_MODELS: [CpuModel; 3] = [CpuModel::Milan, CpuModel::Genoa, CpuModel::Turin];

/// The expected launch digest of the image in `dir` for `vcpus` and `cpu`, as its
/// `measurement.json` publishes it.
pub fn published_digest(dir: &Path, vcpus: u32, cpu: CpuModel) -> Result<String> {
    let path = dir.join("measurement.json");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)
        .with_context(|| format!("{}", path.display()))?;
    json.pointer(&format!("/launch_digest/{}/{vcpus}", cpu.name()))
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .with_context(|| {
            format!(
                "{} has no digest for {} with {vcpus} vCPUs",
                path.display(),
                cpu.name()
            )
        })
}

/// The command that recomputes a digest independently of this repository: AMD's
/// `sev-snp-measure` from PyPI, over the same files.
pub fn recompute_command(dir: &Path, vcpus: u32, cpu: CpuModel) -> String {
    format!(
        "pip install sev-snp-measure==0.0.13 && sev-snp-measure --mode snp --vmm-type QEMU --vcpus {vcpus} --vcpu-type {} --guest-features 0x1 --ovmf {d}/OVMF.amdsev.fd --kernel {d}/bzImage --initrd {d}/initramfs.cpio.gz --append \"$(cat {d}/kernel-cmdline)\"",
        cpu.qemu_model(),
        d = dir.display()
    )
}

/// The reference implementation the published digests are checked against: AMD's
/// `sev-snp-measure` from PyPI, at the version the README tells operators to use (0.0.13 is
/// the first that knows EPYC-Turin and this OVMF's SVSM_CAA section).
pub const SEV_SNP_MEASURE: &str = "sev-snp-measure==0.0.13";

/// Recomputes every digest of `measurement.json` with [`SEV_SNP_MEASURE`] (installed into a
/// virtual environment under `target/`) and fails naming each one that differs. One line of
/// progress; pip's and the tool's output go to `target/xtask-logs/sev-snp-measure.log`.
pub fn check_against_reference() -> Result<()> {
    let dir = image_dir(Flavour::Production);
    let cmdline = std::fs::read_to_string(dir.join("kernel-cmdline"))
        .with_context(|| format!("no image in {}: run `cargo xtask image`", dir.display()))?;
    let venv = harness::process::target_dir().join("sev-snp-measure-0.0.13");
    let tool = venv.join("bin/sev-snp-measure");
    let rows = CPU_MODELS.len() * 8;
    let stage = format!("image: recomputing the {rows} published digests with {SEV_SNP_MEASURE}");
    let mismatches = step(&stage, "sev-snp-measure", |s| {
        if !tool.exists() {
            s.run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
            s.run(Command::new(venv.join("bin/pip")).args(["install", "-q", SEV_SNP_MEASURE]))?;
        }
        let mut mismatches = Vec::new();
        for (cpu, vcpus) in CPU_MODELS
            .iter()
            .flat_map(|&c| (1..=8u32).map(move |n| (c, n)))
        {
            let file = |name: &str| dir.join(name).display().to_string();
            let out = Command::new(&tool)
                .args([
                    "--mode",
                    "snp",
                    "--vmm-type",
                    "QEMU",
                    "--guest-features",
                    "0x1",
                ])
                .args([
                    "--vcpus",
                    &vcpus.to_string(),
                    "--vcpu-type",
                    cpu.qemu_model(),
                ])
                .args([
                    "--ovmf",
                    &file("OVMF.amdsev.fd"),
                    "--kernel",
                    &file("bzImage"),
                ])
                .args(["--initrd", &file("initramfs.cpio.gz")])
                .args(["--append", cmdline.trim_end_matches('\n')])
                .output()
                .with_context(|| format!("running {}", tool.display()))?;
            let theirs = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let ours = published_digest(&dir, vcpus, cpu)?;
            s.note(&format!(
                "{} {vcpus}: {theirs} (ours {ours})",
                cpu.qemu_model()
            ))?;
            if !out.status.success() || theirs != ours {
                let err = String::from_utf8_lossy(&out.stderr);
                mismatches.push(format!(
                    "{} {vcpus} vCPUs: measurement.json {ours}, sev-snp-measure {theirs:?} {err}",
                    cpu.qemu_model()
                ));
            }
        }
        Ok(mismatches)
    })?;
    if !mismatches.is_empty() {
        bail!(
            "{} of {rows} digests differ:\n{}",
            mismatches.len(),
            mismatches.join("\n")
        );
    }
    eprintln!("image: all {rows} published digests equal {SEV_SNP_MEASURE}'s");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_is_never_computed_for_guest_features_the_kernel_refuses() {
        let err = launch_digest(Path::new("/nonexistent"), 4, CpuModel::Milan, 0x201)
            .unwrap_err()
            .to_string();
        assert!(err.contains("SecureTSC"), "{err}");
    }

    #[test]
    fn the_guest_feature_table_was_read_from_the_pinned_kernel() {
        let pins: Pins =
            toml::from_str(&std::fs::read_to_string(workspace().join("image/pins.toml")).unwrap())
                .unwrap();
        assert_eq!(
            pins.kernel.version,
            vm_harness::snp::GUEST_FEATURES_READ_FROM,
            "the kernel pin moved: read SNP_FEATURES_IMPL_REQ and SNP_FEATURES_PRESENT in the new source's arch/x86/boot/compressed/sev.c again and update REFUSED_GUEST_FEATURES"
        );
    }

    fn sample(init: &[u8]) -> Vec<(&'static str, Entry<'_>)> {
        vec![
            (
                "init",
                Entry::File {
                    mode: 0o755,
                    data: init,
                },
            ),
            ("dev", Entry::Dir),
            ("dev/console", Entry::CharDev { major: 5, minor: 1 }),
            ("proc", Entry::Dir),
        ]
    }

    #[test]
    fn a_production_binary_with_the_simulated_psp_in_it_is_refused() {
        let markers = simulated_markers();
        assert!(markers.iter().all(|m| !m.is_empty()));
        let mut with = b"ELF ... ".to_vec();
        for m in &markers {
            with.extend_from_slice(m);
            with.extend_from_slice(b" ... ");
        }
        let without = b"ELF ... no simulated root here".to_vec();
        assert!(check_flavour(Flavour::Production, &without).is_ok());
        let err = check_flavour(Flavour::Production, &with).unwrap_err();
        assert!(
            err.to_string().contains("contains the simulated PSP"),
            "{err}"
        );
        assert!(check_flavour(Flavour::Simulated, &with).is_ok());
        assert!(check_flavour(Flavour::Simulated, &without).is_err());
        // Either marker alone is enough to refuse a production binary.
        for m in &markers {
            assert!(check_flavour(Flavour::Production, m).is_err());
        }
    }

    /// A minimal x86-64 ELF header with one program header of type `p_type`.
    fn elf(p_type: u32) -> Vec<u8> {
        let mut b = vec![0u8; 64 + 56];
        b[..6].copy_from_slice(b"\x7fELF\x02\x01");
        b[0x12..0x14].copy_from_slice(&62u16.to_le_bytes());
        b[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        b[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        b[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        b[64..68].copy_from_slice(&p_type.to_le_bytes());
        b
    }

    #[test]
    fn only_a_static_x86_64_executable_can_be_the_images_application() {
        check_static_elf(&elf(1)).unwrap();
        let dynamic = check_static_elf(&elf(3)).unwrap_err().to_string();
        assert!(dynamic.contains("dynamically linked"), "{dynamic}");
        // This very xtask binary is dynamically linked.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(check_static_elf(&me).is_err());
        assert!(check_static_elf(b"#!/bin/sh\n").is_err());
        let mut arm = elf(1);
        arm[0x12] = 183;
        assert!(check_static_elf(&arm).is_err());
        let mut outside = elf(1);
        outside[0x38] = 9;
        assert!(check_static_elf(&outside).is_err());
    }

    #[test]
    fn the_application_is_reached_only_on_a_unix_socket_or_loopback() {
        for good in [
            DEFAULT_APP_PROXY,
            "tcp://127.0.0.1:26658",
            "tcp://[::1]:26658",
        ] {
            check_app_proxy(good).unwrap();
        }
        for bad in [
            "kvstore",
            "unix://",
            "unix://relative.sock",
            "tcp://localhost:26658",
            "tcp://10.0.2.2:26658",
            "tcp://0.0.0.0:26658",
            "127.0.0.1:26658",
        ] {
            assert!(check_app_proxy(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_application_goes_into_the_initramfs_with_its_spec_and_changes_it() {
        let plain = initramfs(b"binary", None).unwrap();
        let with = initramfs(b"binary", Some((b"app", b"{}"))).unwrap();
        assert_ne!(plain, with);
        assert_eq!(with, initramfs(b"binary", Some((b"app", b"{}"))).unwrap());
        assert_ne!(with, initramfs(b"binary", Some((b"app2", b"{}"))).unwrap());
    }

    #[test]
    fn the_same_entries_in_any_order_give_the_same_archive() {
        let mut a = sample(b"#!/bin/true\n");
        let mut b = sample(b"#!/bin/true\n");
        b.reverse();
        assert_eq!(cpio(&mut a), cpio(&mut b));
        assert_eq!(
            initramfs(b"binary", None).unwrap(),
            initramfs(b"binary", None).unwrap(),
            "gzip adds no time or name"
        );
        assert_ne!(
            initramfs(b"binary", None).unwrap(),
            initramfs(b"binarY", None).unwrap()
        );
    }

    #[test]
    fn gnu_cpio_reads_the_archive() {
        // An independent reader: GNU cpio lists what we wrote, with modes and device numbers.
        if Command::new("cpio").arg("--version").output().is_err() {
            ensure_packages(&["cpio"]).unwrap();
        }
        let archive = cpio(&mut sample(b"hello, world"));
        let mut child = Command::new("cpio")
            .args(["-itv", "--quiet"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&archive).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let listing = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = listing.lines().collect();
        assert_eq!(lines.len(), 4, "{listing}");
        assert!(
            lines[0].starts_with("drwxr-xr-x") && lines[0].ends_with(" dev"),
            "{listing}"
        );
        assert!(
            lines[1].starts_with("crw-------")
                && lines[1].contains("5,")
                && lines[1].ends_with(" dev/console"),
            "{listing}"
        );
        assert!(
            lines[2].starts_with("-rwxr-xr-x")
                && lines[2].contains(" 12 ")
                && lines[2].ends_with(" init"),
            "{listing}"
        );
        assert!(lines[3].ends_with(" proc"), "{listing}");
    }
}
