//! Debian packages the image and the VMs need, installed when missing (as root): without
//! recommends, and never at the cost of removing an installed package. When the packages apt
//! would remove came from the release's backports (a machine with QEMU 10's `qemu-utils` from
//! bookworm-backports, say), the install is retried from backports too, through a private apt
//! configuration that leaves the system's sources untouched. If apt can still only install
//! them by removing one, nothing is changed and the error names what it would remove.

use crate::step::step;
use anyhow::{bail, Result};
use std::process::Command;

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// `apt-get`, run under an exclusive lock shared by every xtask process: tests run in parallel
/// and each may install what it needs, and a second `apt-get` fails at once on apt's own locks
/// (a fresh CI machine lost its QEMU install to that). apt's lock timeout covers anyone else;
/// a holder that hangs for 15 minutes fails the waiting step with flock's error.
fn apt_get() -> Command {
    let _ = std::fs::create_dir_all(APT_LOCK_DIR);
    let lock = format!("{APT_LOCK_DIR}/bulwark-xtask-apt.lock");
    let mut c = Command::new("flock");
    c.args([
        "-w",
        "900",
        &lock,
        "apt-get",
        "-o",
        "DPkg::Lock::Timeout=600",
    ])
    .env("DEBIAN_FRONTEND", "noninteractive");
    c
}

/// Where [`apt_get`]'s lock file lives.
const APT_LOCK_DIR: &str = "/run/lock";

/// The packages `apt-get install` of `packages` would remove, from its simulation: the
/// names on its "Remv" lines.
fn would_remove(packages: &[&str]) -> Vec<String> {
    Command::new("apt-get")
        .args(["install", "-s", "--no-install-recommends"])
        .args(packages)
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| l.strip_prefix("Remv "))
                .filter_map(|l| l.split_whitespace().next())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Whether the installed version of `package` is a backport (`~bpo` in its version).
fn from_backports(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", package])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("~bpo"))
        .unwrap_or(false)
}

/// The release's codename (`bookworm`), from /etc/os-release.
fn codename() -> Option<String> {
    std::fs::read_to_string("/etc/os-release")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|c| c.trim_matches('"').to_string())
        .filter(|c| !c.is_empty())
}

/// Installs `packages` preferring `<codename>-backports`, with a private source list (the
/// release, its updates, security and backports) and private index and cache directories.
fn install_from_backports(
    s: &mut crate::step::Step,
    packages: &[&str],
) -> Result<std::process::ExitStatus> {
    let Some(codename) = codename() else {
        bail!("cannot tell the Debian release (/etc/os-release has no VERSION_CODENAME)");
    };
    let dir = crate::cache_dir().join(format!("apt-system-{codename}-backports"));
    for d in ["lists/partial", "cache/archives/partial"] {
        std::fs::create_dir_all(dir.join(d))?;
    }
    let keyring = "[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg]";
    std::fs::write(
        dir.join("sources.list"),
        format!(
            "deb {keyring} http://deb.debian.org/debian {codename} main\n\
             deb {keyring} http://deb.debian.org/debian {codename}-updates main\n\
             deb {keyring} http://deb.debian.org/debian-security {codename}-security main\n\
             deb {keyring} http://deb.debian.org/debian {codename}-backports main\n"
        ),
    )?;
    let apt = || {
        let mut c = apt_get();
        c.arg("-o")
            .arg(format!(
                "Dir::Etc::SourceList={}",
                dir.join("sources.list").display()
            ))
            .args(["-o", "Dir::Etc::SourceParts=/dev/null"])
            .arg("-o")
            .arg(format!("Dir::State::Lists={}", dir.join("lists").display()))
            .arg("-o")
            .arg(format!("Dir::Cache={}", dir.join("cache").display()))
            .arg("-q");
        c
    };
    s.run(apt().arg("update"))?;
    s.status(
        apt()
            .args([
                "install",
                "-y",
                "--no-install-recommends",
                "--no-remove",
                "-t",
            ])
            .arg(format!("{codename}-backports"))
            .args(packages),
    )
}

/// Installs (or upgrades to) `packages` from the release's backports, for what only
/// backports has (QEMU 10's `sev-snp-guest` on bookworm): `why` says what needs it.
pub fn ensure_from_backports(packages: &[&str], why: &str) -> Result<()> {
    if packages.iter().all(|p| from_backports(p)) {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "{why} needs {} from backports (apt-get install -t {}-backports {})",
            packages.join(" "),
            codename().unwrap_or_else(|| "<release>".into()),
            packages.join(" ")
        );
    }
    step(
        &format!(
            "apt: installing {} from backports ({why})",
            packages.join(" ")
        ),
        "apt-backports",
        |s| {
            if install_from_backports(s, packages)?.success() {
                Ok(())
            } else {
                bail!("apt-get install -t backports {} failed", packages.join(" "))
            }
        },
    )
}

/// Installs the Debian packages that are missing, or says which are missing and why they
/// cannot be installed here.
pub fn ensure_packages(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing Debian packages: {} (install them: apt-get install --no-install-recommends {})",
            missing.join(" "),
            missing.join(" ")
        );
    }
    step(
        &format!("apt: installing {}", missing.join(" ")),
        "apt",
        |s| {
            let install = |s: &mut crate::step::Step| {
                s.status(
                    apt_get()
                        .args([
                            "install",
                            "-y",
                            "-q",
                            "--no-install-recommends",
                            "--no-remove",
                        ])
                        .args(&missing),
                )
            };
            if install(s)?.success() {
                return Ok(());
            }
            // Package lists may be missing or stale on a fresh machine.
            s.run(apt_get().args(["update", "-q"]))?;
            if install(s)?.success() {
                return Ok(());
            }
            let removed = would_remove(&missing);
            if !removed.is_empty() && removed.iter().any(|p| from_backports(p)) {
                s.note(&format!(
                    "apt would remove {} (from backports); retrying from backports",
                    removed.join(" ")
                ))?;
                if install_from_backports(s, &missing)?.success() {
                    return Ok(());
                }
            }
            if !removed.is_empty() {
                bail!(
                    "installing {} would remove installed packages ({}); refusing — install them by hand if that is what you want",
                    missing.join(" "),
                    removed.join(" ")
                );
            }
            bail!("apt-get install {} failed", missing.join(" "))
        },
    )
}
