//! Long steps (apt, the kernel build, the static build, mke2fs) print one line each: the stage,
//! its elapsed time and the path of its full log under `target/xtask-logs/`. Their output goes
//! to that log; a failure prints the log's last 40 lines and its path.

use anyhow::{bail, Context, Result};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Lines of a failed step's log shown.
const FAILURE_TAIL: usize = 40;

/// Where step logs go.
pub fn log_dir() -> PathBuf {
    harness::process::target_dir().join("xtask-logs")
}

/// A running step: commands run inside it write to its log.
pub struct Step {
    log: PathBuf,
}

impl Step {
    /// Runs `cmd` with its stdout and stderr appended to the step's log.
    pub fn run(&mut self, cmd: &mut Command) -> Result<()> {
        let status = self.status(cmd)?;
        if !status.success() {
            bail!("{} failed with {status}", describe(cmd));
        }
        Ok(())
    }

    /// Runs `cmd` like [`Step::run`] and returns its exit status, whatever it is.
    pub fn status(&mut self, cmd: &mut Command) -> Result<std::process::ExitStatus> {
        let mut log = self.append()?;
        writeln!(log, "$ {}", describe(cmd))?;
        let err = log.try_clone()?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .status()
            .with_context(|| format!("running {}", describe(cmd)))
    }

    /// Adds a line of its own to the log.
    pub fn note(&mut self, line: &str) -> Result<()> {
        writeln!(self.append()?, "{line}")?;
        Ok(())
    }

    fn append(&self) -> Result<std::fs::File> {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))
    }
}

fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The last `n` lines of a file.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs `body` as the step `stage` (logged to `target/xtask-logs/<log>.log`) and prints one
/// line for it: on a terminal it counts the seconds while it runs.
pub fn step<T>(stage: &str, log: &str, body: impl FnOnce(&mut Step) -> Result<T>) -> Result<T> {
    std::fs::create_dir_all(log_dir())?;
    let path = log_dir().join(format!("{log}.log"));
    std::fs::write(&path, "")?;
    let started = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let ticker = std::io::stderr().is_terminal().then(|| {
        let (done, stage) = (done.clone(), stage.to_string());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                eprint!("\r{stage} ... {:.0} s", started.elapsed().as_secs_f64());
                let _ = std::io::stderr().flush();
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    });
    if ticker.is_none() {
        eprint!("{stage} ... ");
    }
    let mut s = Step { log: path.clone() };
    let result = body(&mut s);
    done.store(true, Ordering::Relaxed);
    if let Some(t) = ticker {
        let _ = t.join();
        eprint!("\r{stage} ... ");
    }
    let elapsed = started.elapsed().as_secs_f64();
    match &result {
        Ok(_) => eprintln!("done in {elapsed:.0} s (log: {})", path.display()),
        Err(e) => {
            eprintln!("FAILED after {elapsed:.0} s: {e:#}");
            eprintln!("--- last {FAILURE_TAIL} lines of {} ---", path.display());
            eprintln!("{}", tail(&path, FAILURE_TAIL));
            eprintln!("--- full log: {} ---", path.display());
        }
    }
    result
}
