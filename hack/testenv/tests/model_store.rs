//! The local model store serves a directory's files and their digests, and
//! nothing else.
#![allow(clippy::unwrap_used)]

use ember_testenv::ModelStore;

#[tokio::test]
async fn serves_files_and_digests_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("model.safetensors"), b"weights").unwrap();
    std::fs::create_dir(dir.path().join("private")).unwrap();
    std::fs::write(dir.path().join("private/secret"), b"secret").unwrap();
    let store = ModelStore::serve(dir.path(), "127.0.0.1:0".parse().unwrap()).await.unwrap();

    let body = reqwest::get(store.url("model.safetensors")).await.unwrap();
    assert_eq!(body.status(), 200);
    assert_eq!(body.bytes().await.unwrap().as_ref(), b"weights");
    // `echo -n weights | sha256sum`
    let digest = "9a129038d9a00aed0cf6a7ea059ca50a813449061ab87848cf1a13eafdf33b2c";
    assert_eq!(store.sha256("model.safetensors"), Some(digest));
    let served = reqwest::get(store.url("model.safetensors.sha256")).await.unwrap().text().await.unwrap();
    assert_eq!(served, format!("{digest}  model.safetensors\n"));

    for path in ["private/secret", "private", "..%2Fetc%2Fpasswd", "missing", ""] {
        let status = reqwest::get(store.url(path)).await.unwrap().status();
        assert_eq!(status, 404, "GET /{path}");
    }
}
