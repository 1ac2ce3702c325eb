//! Runs a local Ember environment until interrupted: a real Kubernetes
//! control plane and a PostgreSQL server. Writes `kubeconfig` and an `env`
//! file (KUBECONFIG, DATABASE_URL, ...) into `--dir` for other processes,
//! then waits for SIGINT/SIGTERM and tears everything down.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use ember_testenv::{ControlPlane, Postgres};

#[derive(Debug, Parser)]
#[command(about = "Run a local control plane + PostgreSQL for Ember until interrupted")]
struct Args {
    /// Directory for the generated kubeconfig and env file.
    #[arg(long, env = "EMBER_LOCALENV_DIR", default_value = ".dev")]
    dir: PathBuf,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
    let dir = std::fs::canonicalize(&args.dir)?;

    eprintln!("starting control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok)...");
    let control_plane = ControlPlane::start().await.context("starting the control plane")?;
    eprintln!("starting PostgreSQL...");
    let postgres = tokio::task::spawn_blocking(Postgres::start).await?.context("starting PostgreSQL")?;

    let kubeconfig = dir.join("kubeconfig");
    std::fs::copy(control_plane.kubeconfig(), &kubeconfig).context("copying the kubeconfig")?;
    let env = format!(
        "export KUBECONFIG={}\nexport DATABASE_URL={}\nexport EMBER_PG_PORT={}\nexport EMBER_PG_PASSWORD={}\n",
        kubeconfig.display(),
        postgres.url(),
        postgres.port(),
        postgres.password()
    );
    std::fs::write(dir.join("env"), env).context("writing the env file")?;
    println!("ready: source {}", dir.join("env").display());

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    eprintln!("stopping...");
    let _ = std::fs::remove_file(dir.join("env"));
    drop(postgres);
    drop(control_plane);
    Ok(())
}
