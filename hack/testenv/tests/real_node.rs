//! The real node: registers, runs a pod from a locally loaded image on the
//! pod bridge, answers cluster DNS, and leaves nothing behind.
#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, UdpSocket};
use std::time::Duration;

use ember_testenv::node::{BRIDGE, GATEWAY, NODE_NAME, PAUSE_IMAGE};
use ember_testenv::{ControlPlane, Nodes, poll};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, PostParams};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_node_runs_pods_and_cleans_up() {
    let cp = ControlPlane::start_with(Nodes::Real).await.unwrap();
    let client = cp.client().await.unwrap();

    let node = Api::<Node>::all(client.clone()).get(NODE_NAME).await.unwrap();
    let annotations = node.metadata.annotations.clone().unwrap_or_default();
    assert!(!annotations.contains_key("kwok.x-k8s.io/node"), "kwok must leave the real node alone");
    let info = node.status.unwrap().node_info.unwrap();
    assert_eq!(info.kubelet_version, "v1.37.2");
    assert!(info.container_runtime_version.starts_with("containerd://2."), "{}", info.container_runtime_version);

    // A pod from an image that exists only in the node's containerd.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "sleeper"},
        "spec": {
            "nodeName": NODE_NAME,
            "containers": [{"name": "c", "image": PAUSE_IMAGE, "imagePullPolicy": "Never"}],
        }
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let running = poll::until_async("pod Running on the real node", Duration::from_secs(90), async || {
        let pod = pods.get("sleeper").await.map_err(|e| ember_testenv::Error::Kube(e.to_string()))?;
        Ok(pod.status.clone().filter(|s| s.phase.as_deref() == Some("Running")).map(|_| pod))
    })
    .await;
    let running = match running {
        Ok(pod) => pod,
        Err(e) => {
            let node = cp.real_node().unwrap();
            panic!(
                "{e}\n--- kubelet ---\n{}\n--- containerd ---\n{}",
                node.log_of("kubelet"),
                node.log_of("containerd")
            );
        }
    };
    let ip: Ipv4Addr = running.status.unwrap().pod_ip.unwrap().parse().unwrap();
    assert_eq!(ip.octets()[..3], GATEWAY.octets()[..3], "pod address {ip} is not on the bridge");
    let containers = cp.real_node().unwrap().ctr(&["containers", "list", "-q"]).unwrap();
    assert!(containers.lines().count() >= 2, "sandbox and container in containerd: {containers}");

    // Cluster DNS on the gateway answers Service names from the API server.
    let answer = resolve("kubernetes.default.svc.cluster.local");
    assert_eq!(answer, Some(Ipv4Addr::new(10, 0, 0, 1)));

    drop(cp);
    assert!(!std::path::Path::new("/sys/class/net").join(BRIDGE).exists(), "the bridge outlived the node");
    let leftovers: Vec<_> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path().join("exe")).ok())
        .filter(|exe| exe.ends_with("containerd-shim-runc-v2") || exe.ends_with("kubelet") || exe.ends_with("pause"))
        .collect();
    assert!(leftovers.is_empty(), "processes outlived the node: {leftovers:?}");
}

/// One DNS A query over UDP to the gateway; the first address answered.
fn resolve(name: &str) -> Option<Ipv4Addr> {
    let mut query = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    let socket = UdpSocket::bind((GATEWAY, 0)).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    for _ in 0..10 {
        socket.send_to(&query, (GATEWAY, 53)).unwrap();
        let mut buffer = [0u8; 512];
        let Ok(n) = socket.recv(&mut buffer) else { continue };
        let answers = u16::from_be_bytes([buffer[6], buffer[7]]);
        if answers > 0 && n >= 4 {
            // An A record ends with its 4 address bytes; with one answer they end the packet.
            return Some(Ipv4Addr::new(buffer[n - 4], buffer[n - 3], buffer[n - 2], buffer[n - 1]));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    None
}
