//! Runs a local Ember environment until interrupted: a real Kubernetes
//! control plane with a real node (or kwok nodes only), a PostgreSQL server
//! and a model store. Writes `kubeconfig` and an `env` file (KUBECONFIG,
//! DATABASE_URL, ...) into `--dir` for other processes, then waits for
//! SIGINT/SIGTERM and tears everything down.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use ember_testenv::node::GATEWAY;
use ember_testenv::{ControlPlane, ModelStore, Nodes, Postgres};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum NodeKind {
    /// A real node (containerd, kubelet, kube-proxy, CoreDNS) plus the kwok GPU node; needs root.
    Real,
    /// kwok nodes only: pods turn Ready without running.
    Kwok,
}

#[derive(Debug, Parser)]
#[command(about = "Run a local cluster + PostgreSQL + model store for Ember until interrupted")]
struct Args {
    /// Directory for the generated kubeconfig and env file.
    #[arg(long, env = "EMBER_LOCALENV_DIR", default_value = ".dev")]
    dir: PathBuf,
    /// Which nodes the cluster gets.
    #[arg(long, value_enum, default_value = "real")]
    nodes: NodeKind,
    /// Directory of OCI image archives (`*.oci.tar`) to load into the real node.
    #[arg(long, env = "EMBER_IMAGES_DIR")]
    images: Option<PathBuf>,
    /// Directory of model files to serve on the node's gateway (the model store).
    #[arg(long)]
    model_dir: Option<PathBuf>,
    /// Port of the model store on the gateway address.
    #[arg(long, default_value_t = 18070)]
    model_store_port: u16,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
    let dir = std::fs::canonicalize(&args.dir)?;

    let nodes = match args.nodes {
        NodeKind::Real => Nodes::Real,
        NodeKind::Kwok => Nodes::Kwok,
    };
    eprintln!("starting the cluster (etcd, kube-apiserver, controller-manager, scheduler, kwok, {nodes:?} node)...");
    let control_plane = ControlPlane::start_with(nodes).await.context("starting the cluster")?;
    if let (Some(node), Some(images)) = (control_plane.real_node(), &args.images) {
        for entry in std::fs::read_dir(images).with_context(|| format!("reading {}", images.display()))? {
            let path = entry?.path();
            if path.to_string_lossy().ends_with(".oci.tar") {
                eprintln!("loading {} into the node", path.display());
                node.import_image(&path)?;
            }
        }
    }
    eprintln!("starting PostgreSQL...");
    let postgres = tokio::task::spawn_blocking(move || match nodes {
        Nodes::Real => Postgres::start_for_pods(),
        Nodes::Kwok => Postgres::start(),
    })
    .await?
    .context("starting PostgreSQL")?;
    let store = match (&args.model_dir, nodes) {
        (Some(model_dir), Nodes::Real) => {
            Some(ModelStore::serve(model_dir, (GATEWAY, args.model_store_port).into()).await?)
        }
        _ => None,
    };

    let kubeconfig = dir.join("kubeconfig");
    std::fs::copy(control_plane.kubeconfig(), &kubeconfig).context("copying the kubeconfig")?;
    let mut env = format!(
        "export KUBECONFIG={}\nexport DATABASE_URL={}\nexport EMBER_PG_PORT={}\nexport EMBER_PG_PASSWORD={}\nexport EMBER_GATEWAY={GATEWAY}\n",
        kubeconfig.display(),
        postgres.url(),
        postgres.port(),
        postgres.password()
    );
    if let Some(store) = &store {
        env.push_str(&format!("export EMBER_MODEL_STORE=http://{}\n", store.address()));
    }
    std::fs::write(dir.join("env"), env).context("writing the env file")?;
    println!("ready: source {}", dir.join("env").display());

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    eprintln!("stopping...");
    let _ = std::fs::remove_file(dir.join("env"));
    drop(store);
    drop(postgres);
    drop(control_plane);
    Ok(())
}
