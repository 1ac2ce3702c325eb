//! The `/docs` page's script renders the whole description: run by Node
//! on a minimal DOM (`support/page_harness.js`) with the document
//! ember-api serves, it shows every operation and every schema, and no
//! error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use serde_json::Value;

#[test]
fn the_page_renders_every_operation_and_schema_of_the_description() {
    let document = ember_api::openapi::document();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, document.to_string()).unwrap();
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new("node")
        .arg(here.join("tests/support/page_harness.js"))
        .arg(here.join("src/openapi/page.js"))
        .arg(&file)
        .output()
        .expect("node runs (it is part of the machine's toolchain)");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let rendered: Value = serde_json::from_slice(&output.stdout).unwrap();
    let operations: usize =
        document["paths"].as_object().unwrap().values().map(|item| item.as_object().unwrap().len()).sum();
    let schemas = document["components"]["schemas"].as_object().unwrap().len();
    assert_eq!(rendered["error"], Value::Null, "{rendered}");
    assert_eq!(rendered["title"], "Ember API");
    assert_eq!(rendered["operations"], operations, "{rendered}");
    assert_eq!(rendered["schemas"], schemas, "{rendered}");
}
