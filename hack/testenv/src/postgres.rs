//! A throwaway PostgreSQL server from the machine's binaries.
//!
//! `initdb` into a temp dir, then `postgres` on a free loopback port with
//! SCRAM authentication (what production uses) and durability switched off
//! (tests do not survive power loss anyway). Several servers can run side by
//! side, which is how tests exercise sharding across database servers.
//! The server can be stopped and started again on the same port and data, to
//! test how Ember rides out a database outage.
//!
//! PostgreSQL refuses to run as root; when the tests run as root (CI
//! containers), the server runs as `nobody` on a data dir owned by it.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::Supervised;
use crate::{Error, control_plane::free_port, poll};

/// Superuser name of every fixture server.
pub const SUPERUSER: &str = "postgres";
const UNPRIVILEGED_UID: u32 = 65534;
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running PostgreSQL server. Dropping it stops the server and deletes its data.
#[derive(Debug)]
pub struct Postgres {
    port: u16,
    password: String,
    bin: PathBuf,
    data_dir: PathBuf,
    log_path: PathBuf,
    // Declared before `dir` so the server stops before its files go away.
    process: Option<Supervised>,
    dir: tempfile::TempDir,
}

impl Postgres {
    /// Initialises a fresh cluster and starts it on loopback. Blocking;
    /// takes a few seconds.
    pub fn start() -> Result<Self, Error> {
        Self::start_listening(false)
    }

    /// Like [`Postgres::start`], but also on the real node's gateway and
    /// open to its pods (SCRAM still required): the database of a local
    /// cluster whose operator and API run as pods.
    pub fn start_for_pods() -> Result<Self, Error> {
        Self::start_listening(true)
    }

    fn start_listening(for_pods: bool) -> Result<Self, Error> {
        let bin = binaries_dir()?;
        let dir = tempfile::Builder::new()
            .prefix("ember-pg-")
            .tempdir()
            .map_err(|source| io("creating the PostgreSQL dir", source))?;
        // The server may run as `nobody`, which must be able to enter the dir.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .map_err(|source| io("opening up the PostgreSQL dir", source))?;
        let data_dir = dir.path().join("data");
        let socket_dir = dir.path().join("socket");
        let password = random_password()?;
        let password_file = dir.path().join("pwfile");
        std::fs::write(&password_file, &password).map_err(|source| io("writing the password file", source))?;
        for path in [&socket_dir, &data_dir] {
            std::fs::create_dir_all(path).map_err(|source| io("creating PostgreSQL dirs", source))?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
                .map_err(|source| io("setting PostgreSQL dir permissions", source))?;
        }
        if running_as_root() {
            for path in [&socket_dir, &data_dir, &password_file] {
                std::os::unix::fs::chown(path, Some(UNPRIVILEGED_UID), Some(UNPRIVILEGED_UID))
                    .map_err(|source| io("handing PostgreSQL dirs to nobody", source))?;
            }
        }

        let mut initdb = unprivileged(bin.join("initdb"));
        initdb.args([
            "--pgdata".as_ref(),
            data_dir.as_os_str(),
            "--username".as_ref(),
            SUPERUSER.as_ref(),
            "--pwfile".as_ref(),
            password_file.as_os_str(),
            "--auth=scram-sha-256".as_ref(),
            "--encoding=UTF8".as_ref(),
            "--locale=C.UTF-8".as_ref(),
            "--no-sync".as_ref(),
            "--no-instructions".as_ref(),
        ]);
        let output = initdb.output().map_err(|source| Error::Spawn { name: "initdb".into(), source })?;
        if !output.status.success() {
            return Err(Error::Postgres(format!(
                "initdb failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        let listen = if for_pods { format!("127.0.0.1,{}", crate::node::GATEWAY) } else { "127.0.0.1".to_owned() };
        let conf = format!(
            "listen_addresses = '{listen}'\nunix_socket_directories = '{}'\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 300\npassword_encryption = 'scram-sha-256'\n",
            socket_dir.display()
        );
        append(&data_dir.join("postgresql.conf"), &conf)?;
        if for_pods {
            append(
                &data_dir.join("pg_hba.conf"),
                &format!("host all all {} scram-sha-256\n", crate::node::POD_SUBNET),
            )?;
        }

        let mut server = Self {
            port: free_port()?,
            password,
            bin,
            log_path: dir.path().join("postgres.log"),
            data_dir,
            process: None,
            dir,
        };
        server.start_again()?;
        Ok(server)
    }

    /// Starts the server (again) on the same port and data. Blocks until it accepts connections.
    pub fn start_again(&mut self) -> Result<(), Error> {
        if self.process.as_mut().is_some_and(Supervised::is_running) {
            return Ok(());
        }
        let mut postgres = unprivileged(self.bin.join("postgres"));
        postgres.arg("-D").arg(&self.data_dir).arg("-p").arg(self.port.to_string());
        self.process = Some(Supervised::spawn("postgres", postgres, &self.log_path)?);
        let (bin, port) = (self.bin.clone(), self.port);
        let process = &mut self.process;
        poll::until("PostgreSQL accepting connections", START_TIMEOUT, || {
            if let Some(p) = process.as_mut() {
                p.ensure_running()?;
            }
            let ready = Command::new(bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
                .status()
                .map_err(|source| Error::Spawn { name: "pg_isready".into(), source })?;
            Ok(ready.success().then_some(()))
        })
    }

    /// Stops the server (fast shutdown), keeping its data, to simulate an outage.
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            // SIGINT is PostgreSQL's "fast" shutdown: no waiting for clients.
            process.signal(nix::sys::signal::Signal::SIGINT);
            process.terminate(Duration::from_secs(10));
        }
    }

    /// Loopback port of the server.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Superuser password (random per server).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// Connection URL of the superuser for `database`.
    pub fn url_for(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}:{}@127.0.0.1:{}/{database}", self.password, self.port)
    }

    /// Connection URL of the superuser for the `postgres` database.
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// Directory holding data, socket and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

fn io(context: &str, source: std::io::Error) -> Error {
    Error::Io { context: context.to_owned(), source }
}

fn running_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A command that drops to `nobody` when we are root.
fn unprivileged(program: PathBuf) -> Command {
    let mut command = Command::new(program);
    if running_as_root() {
        command.uid(UNPRIVILEGED_UID).gid(UNPRIVILEGED_UID);
        // Root's HOME is unreadable for nobody; libpq and initdb look there.
        command.env("HOME", "/tmp");
    }
    command
}

fn append(path: &Path, text: &str) -> Result<(), Error> {
    use std::io::Write;
    let context = format!("appending to {}", path.display());
    let mut file = std::fs::File::options().append(true).open(path).map_err(|source| io(&context, source))?;
    file.write_all(text.as_bytes()).map_err(|source| io(&context, source))
}

/// 32 hex characters (128 bits) from the kernel's CSPRNG.
fn random_password() -> Result<String, Error> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|source| io("reading /dev/urandom", source))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Where `initdb`/`postgres`/`pg_isready` live: `$EMBER_PG_BIN`, then
/// `pg_config --bindir`, then the newest `/usr/lib/postgresql/*/bin`, then PATH.
pub fn binaries_dir() -> Result<PathBuf, Error> {
    let has_server = |dir: &Path| dir.join("postgres").is_file() && dir.join("initdb").is_file();
    if let Some(dir) = std::env::var_os("EMBER_PG_BIN").map(PathBuf::from) {
        return if has_server(&dir) {
            Ok(dir)
        } else {
            Err(Error::Postgres(format!("EMBER_PG_BIN={} has no postgres/initdb", dir.display())))
        };
    }
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if output.status.success() && has_server(&dir) {
            return Ok(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, dir)| has_server(dir))
        .collect();
    versions.sort();
    if let Some((_, dir)) = versions.pop() {
        return Ok(dir);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .find(|dir| has_server(dir))
        .ok_or_else(|| {
            Error::Postgres("no PostgreSQL server binaries found (install postgresql, or set EMBER_PG_BIN)".into())
        })
}
