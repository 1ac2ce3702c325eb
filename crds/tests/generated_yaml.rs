//! The CRD YAML committed in `config/crd/` is exactly what the types generate.
//! Fix a failure with `cargo run -p ember-crds --bin crdgen`.
#![allow(clippy::unwrap_used)]

use std::path::Path;

#[test]
fn committed_crds_match_the_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/crd");
    for (name, generated) in ember_crds::crd_yaml::rendered_files().unwrap() {
        let committed = std::fs::read_to_string(dir.join(&name)).unwrap_or_default();
        assert!(committed == generated, "config/crd/{name} is out of date: run `cargo run -p ember-crds --bin crdgen`");
    }
    let kustomization = std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap_or_default();
    assert_eq!(kustomization, ember_crds::crd_yaml::kustomization(), "config/crd/kustomization.yaml is out of date");
}
