//! The ABCI application a measured image carries (`cargo xtask image --app`): the static
//! binary `/bin/abci-app` in the initramfs and `/etc/abci-app.json`, which says how it is
//! started and where the node reaches it. Both are in the initramfs, so the launch measurement
//! covers them; the host's `config.toml` cannot name another application (the node's
//! `proxy_app` comes from here, or is the built-in kvstore when the image carries none).
//!
//! PID 1 starts it with its working directory on the sealed data disk (its data is sealed
//! like the node's), its output on the console, and kills it when the node stops; an
//! application that exits closes the node's connections, so the node stops and the VM powers
//! off.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Where the image keeps the application's binary.
pub const APP_BINARY: &str = "bin/abci-app";
/// Where the image keeps how it is started.
pub const APP_SPEC: &str = "etc/abci-app.json";
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

    /// Starts it with `dir` (created) as its working directory and `HOME`.
    pub fn start(&self, dir: &Path) -> Result<RunningApp> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let child = Command::new(&self.binary)
            .args(&self.spec.args)
            .current_dir(dir)
            .env_clear()
            .env("HOME", dir)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        eprintln!(
            "bulwark-init: started the image's ABCI application (pid {}, {} {}), reached at {}",
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
    fn a_started_application_runs_in_its_directory_and_dies_with_its_guard() {
        let root = image(
            Some("#!/bin/sh\npwd > where\nexec sleep 30\n"),
            Some(r#"{"args":[],"proxy_app":"unix:///x"}"#),
        );
        let bin = root.path().join(APP_BINARY);
        let mut perms = std::fs::metadata(&bin).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(&bin, perms).unwrap();
        let app = ImageApp::load(root.path()).unwrap().unwrap();
        let dir = root.path().join("data/app");
        let running = app.start(&dir).unwrap();
        let pid = running.0.id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !dir.join("where").exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(std::fs::read_to_string(dir.join("where"))
            .unwrap()
            .trim()
            .ends_with("data/app"));
        drop(running);
        assert!(
            !Path::new(&format!("/proc/{pid}/status")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .unwrap()
                    .contains("zombie")
        );
    }
}
