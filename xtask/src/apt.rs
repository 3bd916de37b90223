//! Debian packages the image and the VMs need, installed when missing (as root): without
//! recommends, and never at the cost of removing an installed package. If apt could only
//! install them by removing one, nothing is changed and the error names what it would remove.

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
                    Command::new("apt-get")
                        .env("DEBIAN_FRONTEND", "noninteractive")
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
            s.run(Command::new("apt-get").args(["update", "-q"]))?;
            if install(s)?.success() {
                return Ok(());
            }
            let removed = would_remove(&missing);
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
