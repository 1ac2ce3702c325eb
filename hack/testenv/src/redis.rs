//! A throwaway Redis server from the machine's `redis-server` (Debian's
//! `redis-server` package).
//!
//! It listens on a free loopback port with persistence off (no RDB
//! snapshots, no append-only file): what it holds is gone when it stops, as
//! rate-limit buckets may be. It can be stopped and started again on the
//! same port, to test how ember-api rides out a Redis outage.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::process::Supervised;
use crate::{Error, control_plane::free_port, poll};

const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running Redis server. Dropping it stops the server and deletes its dir.
#[derive(Debug)]
pub struct Redis {
    port: u16,
    bin: PathBuf,
    // Declared before `dir` so the server stops before its files go away.
    process: Option<Supervised>,
    dir: tempfile::TempDir,
}

impl Redis {
    /// Starts a server on a free loopback port. Blocking; takes well under a second.
    pub fn start() -> Result<Self, Error> {
        let bin = binary()?;
        let dir = tempfile::Builder::new()
            .prefix("ember-redis-")
            .tempdir()
            .map_err(|source| Error::Io { context: "creating the Redis dir".into(), source })?;
        let mut server = Self { port: free_port()?, bin, process: None, dir };
        server.start_again()?;
        Ok(server)
    }

    /// Starts the server (again) on the same port, empty. Blocks until it answers `PING`.
    pub fn start_again(&mut self) -> Result<(), Error> {
        if self.process.as_mut().is_some_and(Supervised::is_running) {
            return Ok(());
        }
        let mut redis = Command::new(&self.bin);
        redis
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path());
        let log = self.dir.path().join("redis.log");
        self.process = Some(Supervised::spawn("redis-server", redis, &log)?);
        let port = self.port;
        let process = &mut self.process;
        poll::until("Redis answering PING", START_TIMEOUT, || {
            if let Some(p) = process.as_mut() {
                p.ensure_running()?;
            }
            Ok(pong(port).then_some(()))
        })
    }

    /// Stops the server, as an outage would (its contents are lost).
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.terminate(Duration::from_secs(10));
        }
    }

    /// Loopback port of the server.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

/// `redis-server` from `PATH`, else Debian's `/usr/bin`.
fn binary() -> Result<PathBuf, Error> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("redis-server"))
        .find(|candidate| candidate.is_file());
    on_path.or_else(|| Some(PathBuf::from("/usr/bin/redis-server")).filter(|p| p.is_file())).ok_or_else(|| {
        Error::Redis("redis-server not found on PATH or in /usr/bin (Debian: apt-get install redis-server)".into())
    })
}

/// Whether a server on `port` answers an inline `PING` with `+PONG`.
fn pong(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut answer = [0u8; 7];
    stream.read_exact(&mut answer).is_ok() && &answer == b"+PONG\r\n"
}
