//! Child processes that never outlive the test run.
//!
//! Every server (etcd, kube-apiserver, PostgreSQL, ...) runs in its own
//! process group with its output in a log file. Teardown is explicit on
//! `Drop` (SIGTERM to the group, SIGKILL after a grace period) and implicit
//! when the test process dies: children get `PR_SET_PDEATHSIG`. Linux ties
//! that signal to the *thread* that forked, not the process, and test
//! harnesses run tests on short-lived threads, so all children are forked by
//! one keeper thread that lives as long as the process.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::Error;

/// A running child process in its own process group.
#[derive(Debug)]
pub struct Supervised {
    name: String,
    child: Child,
    log_path: PathBuf,
}

type SpawnJob = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Forks `command` on the keeper thread so `PR_SET_PDEATHSIG` lasts until the process exits.
fn spawn_on_keeper_thread(command: Command) -> std::io::Result<Child> {
    static KEEPER: OnceLock<Mutex<mpsc::Sender<SpawnJob>>> = OnceLock::new();
    let sender = KEEPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        std::thread::Builder::new()
            .name("ember-testenv-keeper".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    let _ = reply.send(command.spawn());
                }
                // The channel lives in a static, so this loop never ends while the process runs.
            })
            .expect("spawning the process keeper thread");
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    sender
        .lock()
        .map_err(|_| std::io::Error::other("process keeper lock poisoned"))?
        .send((command, reply_tx))
        .map_err(|_| std::io::Error::other("process keeper thread is gone"))?;
    reply_rx.recv().map_err(|_| std::io::Error::other("process keeper thread did not answer"))?
}

impl Supervised {
    /// Starts `command` with stdout and stderr appended to `log_path`.
    pub fn spawn(name: &str, mut command: Command, log_path: &Path) -> Result<Self, Error> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(log_path)
            .map_err(|source| Error::Io { context: format!("opening {}", log_path.display()), source })?;
        let log_err = log.try_clone().map_err(|source| Error::Io { context: "cloning a log handle".into(), source })?;
        command.stdin(Stdio::null()).stdout(log).stderr(log_err).process_group(0);
        // SAFETY: the closure only calls prctl(2), which is async-signal-safe
        // and touches no memory of the parent.
        #[allow(unsafe_code)]
        unsafe {
            command.pre_exec(|| nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from));
        }
        let child = spawn_on_keeper_thread(command).map_err(|source| Error::Spawn { name: name.to_owned(), source })?;
        Ok(Self { name: name.to_owned(), child, log_path: log_path.to_owned() })
    }

    /// The process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Fails with the log's tail when the process has exited.
    pub fn ensure_running(&mut self) -> Result<(), Error> {
        if self.is_running() {
            Ok(())
        } else {
            Err(Error::Exited { name: self.name.clone(), log_tail: self.log_tail() })
        }
    }

    /// Last lines of the process log, for error messages.
    pub fn log_tail(&self) -> String {
        tail_of_file(&self.log_path, 4096)
    }

    /// Sends `signal` to the whole process group.
    pub fn signal(&self, signal: Signal) {
        let _ = killpg(Pid::from_raw(self.child.id() as i32), signal);
    }

    /// SIGTERM, then SIGKILL once `grace` has passed; reaps the child.
    pub fn terminate(&mut self, grace: Duration) {
        if !self.is_running() {
            return;
        }
        self.signal(Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !self.is_running() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.signal(Signal::SIGKILL);
        let _ = self.child.wait();
    }

    /// Kills the process group at once, as a crash would.
    pub fn kill(&mut self) {
        self.signal(Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.terminate(Duration::from_secs(5));
    }
}

/// Up to `max_bytes` from the end of a file, lossily decoded.
pub fn tail_of_file(path: &Path, max_bytes: u64) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(max_bytes)));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}
