//! The ABCI application a measured image carries (`cargo xtask image --app`): the static
//! binary `/bin/abci-app` in the initramfs and `/etc/abci-app.json`, which says how it is
//! started and where the node reaches it. Both are in the initramfs, so the launch measurement
//! covers them; the host's `config.toml` cannot name another application (the node's
//! `proxy_app` comes from here, or is the built-in kvstore when the image carries none).
//!
//! PID 1 starts it with its working directory on the sealed data disk (its data is sealed
//! like the node's), its output on the console, and kills it when the node stops; an
//! application that exits closes the node's connections, so the node stops and the VM powers
//! off. It runs as [`APP_UID`], never root, with `no_new_privs`: every transaction reaches it,
//! so a bug in it must not reach what only root holds (the SEV-SNP device, from which the
//! sealing key comes; PID 1's memory; the node's files, which it may read but not change).

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Where the image keeps the application's binary.
pub const APP_BINARY: &str = "bin/abci-app";
/// Where the image keeps how it is started.
pub const APP_SPEC: &str = "etc/abci-app.json";
/// The uid and gid the application runs as.
pub const APP_UID: u32 = 1000;
/// Largest `abci-app.json` read.
const MAX_SPEC_BYTES: u64 = 64 << 10;

/// `/etc/abci-app.json`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSpec {
    /// The arguments it is started with.
    pub args: Vec<String>,
    /// Where the node reaches it (`proxy_app`: `unix:///path` or `tcp://127.0.0.1:port`).
    pub proxy_app: String,
}

/// The image's application, under `root` (`/` in the guest).
#[derive(Debug)]
pub struct ImageApp {
    binary: PathBuf,
    /// How it is started and reached.
    pub spec: AppSpec,
}

impl ImageApp {
    /// The application the image under `root` carries, if any. A binary without its spec, or
    /// the reverse, is an error: the image was built wrong.
    pub fn load(root: &Path) -> Result<Option<ImageApp>> {
        let binary = root.join(APP_BINARY);
        let spec_path = root.join(APP_SPEC);
        match (binary.exists(), spec_path.exists()) {
            (false, false) => return Ok(None),
            (true, true) => {}
            _ => bail!(
                "the image carries only one of {APP_BINARY} and {APP_SPEC}: rebuild it with `cargo xtask image --app`"
            ),
        }
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(
            &mut std::io::Read::take(
                std::fs::File::open(&spec_path)
                    .with_context(|| format!("opening {}", spec_path.display()))?,
                MAX_SPEC_BYTES + 1,
            ),
            &mut bytes,
        )?;
        if bytes.len() as u64 > MAX_SPEC_BYTES {
            bail!(
                "{} is larger than {MAX_SPEC_BYTES} bytes",
                spec_path.display()
            );
        }
        let spec: AppSpec =
            serde_json::from_slice(&bytes).with_context(|| format!("{}", spec_path.display()))?;
        Ok(Some(ImageApp { binary, spec }))
    }

    /// Starts it as [`APP_UID`] with `dir` (created, and given to it) as its working
    /// directory and `HOME`; a Unix socket's directory is given to it too.
    pub fn start(&self, dir: &Path) -> Result<RunningApp> {
        use std::os::unix::process::CommandExt;
        let mut own = vec![dir.to_path_buf()];
        if let Some(socket) = self.spec.proxy_app.strip_prefix("unix://") {
            own.extend(Path::new(socket).parent().map(Path::to_path_buf));
        }
        for d in &own {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            std::os::unix::fs::chown(d, Some(APP_UID), Some(APP_UID))
                .with_context(|| format!("giving {} to the application", d.display()))?;
        }
        let mut command = Command::new(&self.binary);
        command
            .args(&self.spec.args)
            .current_dir(dir)
            .env_clear()
            .env("HOME", dir)
            .stdin(Stdio::null())
            .uid(APP_UID)
            .gid(APP_UID);
        #[allow(unsafe_code)]
        // SAFETY: the closure runs in the forked child before exec and only makes one prctl
        // system call, which is async-signal-safe; it touches no memory shared with the parent.
        unsafe {
            command.pre_exec(|| nix::sys::prctl::set_no_new_privs().map_err(std::io::Error::from));
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        eprintln!(
            "bulwark-init: started the image's ABCI application (pid {}, uid {APP_UID}, {} {}), reached at {}",
            child.id(),
            self.binary.display(),
            self.spec.args.join(" "),
            self.spec.proxy_app
        );
        Ok(RunningApp(child))
    }
}

/// A started application; killed when dropped (the node stopped).
#[derive(Debug)]
pub struct RunningApp(Child);

impl Drop for RunningApp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn image(binary: Option<&str>, spec: Option<&str>) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("bin")).unwrap();
        std::fs::create_dir_all(root.path().join("etc")).unwrap();
        if let Some(b) = binary {
            std::fs::write(root.path().join(APP_BINARY), b).unwrap();
        }
        if let Some(s) = spec {
            std::fs::write(root.path().join(APP_SPEC), s).unwrap();
        }
        root
    }

    #[test]
    fn an_image_carries_both_files_or_neither() {
        assert!(ImageApp::load(image(None, None).path()).unwrap().is_none());
        assert!(ImageApp::load(image(Some("x"), None).path()).is_err());
        assert!(ImageApp::load(image(None, Some("{}")).path()).is_err());
        let spec = r#"{"args":["unix:///run/app.sock"],"proxy_app":"unix:///run/app.sock"}"#;
        let app = ImageApp::load(image(Some("x"), Some(spec)).path())
            .unwrap()
            .unwrap();
        assert_eq!(app.spec.proxy_app, "unix:///run/app.sock");
        let unknown = r#"{"args":[],"proxy_app":"kvstore","extra":1}"#;
        assert!(ImageApp::load(image(Some("x"), Some(unknown)).path()).is_err());
    }

    #[test]
    fn a_started_application_runs_unprivileged_in_its_directory_and_dies_with_its_guard() {
        let root = image(
            Some("#!/bin/sh\n{ pwd; id -u; grep NoNewPrivs /proc/self/status; } > where\nexec sleep 30\n"),
            Some(r#"{"args":[],"proxy_app":"unix:///x"}"#),
        );
        let traversable = std::fs::Permissions::from_mode(0o755);
        std::fs::set_permissions(root.path(), traversable.clone()).unwrap();
        std::fs::set_permissions(root.path().join(APP_BINARY), traversable).unwrap();
        let app = ImageApp::load(root.path()).unwrap().unwrap();
        let dir = root.path().join("data/abci-app");
        let running = app.start(&dir).unwrap();
        let pid = running.0.id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !std::fs::read_to_string(dir.join("where")).is_ok_and(|w| w.lines().count() == 3)
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let said = std::fs::read_to_string(dir.join("where")).unwrap();
        let lines: Vec<&str> = said.lines().collect();
        assert!(lines[0].ends_with("data/abci-app"), "{said}");
        assert_eq!(lines[1], APP_UID.to_string(), "{said}");
        assert!(lines[2].ends_with('1'), "{said}");
        drop(running);
        assert!(
            !Path::new(&format!("/proc/{pid}/status")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .unwrap()
                    .contains("zombie")
        );
    }
}
