//! `cargo xtask qemu --validators N`: validators as VMs booted from `target/image`, through
//! the shared harness (`tests/harness/vm.rs`). The mode is printed: TCG (software emulation)
//! here, because KVM on this kind of machine does not run real guests; `--snp` prints the
//! SEV-SNP launch command for a real host.

use crate::apt::ensure_packages;
use crate::image::image_dir;
use anyhow::{bail, Result};
use harness::rpc::height;
use harness::vm::VmNetwork;
use std::io::Write;
use std::path::Path;
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

/// Installs what VMs need, builds the image (cached parts are reused) and boots one VM per
/// validator under TCG.
pub fn start_vms(validators: usize, timeout_commit_ms: u64) -> Result<VmNetwork> {
    ensure_packages(&["qemu-system-x86", "e2fsprogs"])?;
    crate::image::build()?;
    eprintln!("qemu: mode TCG (software emulation: KVM on this machine does not run real guests), simulated attestation, {validators} validators");
    let net = VmNetwork::start(&image_dir(), validators, timeout_commit_ms)?;
    eprintln!(
        "qemu: serial logs in {}/node*/serial.log",
        net.dir().display()
    );
    Ok(net)
}

pub fn run(args: QemuArgs) -> Result<()> {
    let image = image_dir();
    if args.snp {
        println!("{}", snp_command(&image));
        return Ok(());
    }
    let mut net = start_vms(args.validators, 500)?;
    let mut clients = net.clients();
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
    Ok(())
}
