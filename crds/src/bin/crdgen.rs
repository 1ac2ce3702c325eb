//! Writes Ember's CRD YAML (and its kustomization) into a directory,
//! `config/crd/` by default. Run from the repository root:
//! `cargo run -p ember-crds --bin crdgen`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = std::env::args_os().nth(1).map(PathBuf::from).unwrap_or_else(|| PathBuf::from("config/crd"));
    std::fs::create_dir_all(&out_dir)?;
    for (name, yaml) in ember_crds::crd_yaml::rendered_files()? {
        std::fs::write(out_dir.join(&name), yaml)?;
        println!("wrote {}", out_dir.join(&name).display());
    }
    std::fs::write(out_dir.join("kustomization.yaml"), ember_crds::crd_yaml::kustomization())?;
    Ok(())
}
