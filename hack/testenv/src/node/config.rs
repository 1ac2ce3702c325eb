//! Configuration files of the real node's components: containerd, the CNI
//! network, the kubelet, kube-proxy and CoreDNS. Pure text from a
//! [`NodeLayout`], so what the node runs with is readable and unit-tested.

use std::net::Ipv4Addr;
use std::path::PathBuf;

/// Name the real node registers under.
pub const NODE_NAME: &str = "ember-node-0";
/// The Linux bridge pods attach to. Fixed: one real node per machine.
pub const BRIDGE: &str = "ember0";
/// Pod addresses of the real node; disjoint from kwok's fake 10.244.0.0/16.
pub const POD_SUBNET: &str = "10.89.0.0/24";
/// The bridge's own address: the node's IP, the pods' gateway, where cluster
/// DNS listens and where host-side services (PostgreSQL, the model store)
/// are reached from pods.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 89, 0, 1);
/// Prefix length of [`POD_SUBNET`].
pub const POD_PREFIX: u8 = 24;
/// ClusterIP range (kube-apiserver `--service-cluster-ip-range`).
pub const SERVICE_SUBNET: &str = "10.0.0.0/24";
/// The pod sandbox image containerd runs for every pod, built locally.
pub const PAUSE_IMAGE: &str = "registry.k8s.io/pause:3.10.2";
/// Version of `pause.c` that `hack/build-node.sh` compiles.
pub const PAUSE_VERSION: &str = "3.10.2";
/// Cluster domain of Service names (`<svc>.<ns>.svc.cluster.local`).
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// Where the node's components keep their files, and the ports they use.
#[derive(Debug, Clone)]
pub struct NodeLayout {
    /// Node binaries (`hack/build-node.sh`), with the CNI plugins in `cni/`.
    pub bin: PathBuf,
    /// Root of this node's files.
    pub root: PathBuf,
    /// Cluster CA, trusted by the kubelet for client certificates.
    pub ca_cert: PathBuf,
    /// Admin kubeconfig the node's components talk to the API server with.
    pub kubeconfig: PathBuf,
    pub kubelet_port: u16,
    pub kubelet_healthz_port: u16,
    pub proxy_healthz_port: u16,
    pub proxy_metrics_port: u16,
    pub dns_health_port: u16,
}

impl NodeLayout {
    pub fn containerd_socket(&self) -> PathBuf {
        self.root.join("containerd/containerd.sock")
    }
    pub fn containerd_config(&self) -> PathBuf {
        self.root.join("containerd/config.toml")
    }
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.root.join("cni/net.d")
    }
    pub fn kubelet_config(&self) -> PathBuf {
        self.root.join("kubelet/config.yaml")
    }
    pub fn kubelet_root(&self) -> PathBuf {
        self.root.join("kubelet/root")
    }
    pub fn kube_proxy_config(&self) -> PathBuf {
        self.root.join("kube-proxy/config.yaml")
    }
    pub fn corefile(&self) -> PathBuf {
        self.root.join("coredns/Corefile")
    }
}

/// containerd 2.x (config version 3): state under the node's root, the CRI
/// plugin with runc from the node binaries, the local pause image, CNI
/// from our conf dir, network namespaces under the state dir (so teardown
/// finds them). AppArmor is off: these machines have no profiles loaded.
///
/// `restrict_oom_score_adj`: these VMs withhold CAP_SYS_RESOURCE even from
/// root, so no process may lower its OOM score. The kubelet asks -998 for
/// pod sandboxes and runc then fails with "can't get final child's PID from
/// pipe: EOF" (its init logs "failed to update /proc/self/oom_score_adj:
/// Permission denied"). Restricted, containers get at least containerd's
/// own score, as in rootless setups.
pub fn containerd_toml(layout: &NodeLayout) -> String {
    let root = layout.root.join("containerd");
    format!(
        r#"version = 3
root = "{root}/root"
state = "{root}/state"

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[plugins]
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = '{pause}'

  [plugins.'io.containerd.cri.v1.runtime']
    disable_apparmor = true
    restrict_oom_score_adj = true
    netns_mounts_under_state_dir = true
    enable_unprivileged_ports = true
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = 'io.containerd.runc.v2'
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          BinaryName = '{runc}'
          SystemdCgroup = false
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ['{cni_bin}']
      conf_dir = '{cni_conf}'
      max_conf_num = 1

  [plugins.'io.containerd.grpc.v1.cri']
    stream_server_address = '127.0.0.1'
    stream_server_port = '0'
"#,
        root = root.display(),
        socket = layout.containerd_socket().display(),
        pause = PAUSE_IMAGE,
        runc = layout.bin.join("runc").display(),
        cni_bin = layout.bin.join("cni").display(),
        cni_conf = layout.cni_conf_dir().display(),
    )
}

/// The pod network: one bridge, addresses from [`POD_SUBNET`], and routes
/// only to the pod subnet and the Service range — no default route, so a
/// pod has no way out of this machine. No IP masquerade for the same reason.
pub fn cni_conflist() -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "ember-local",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": true,
                "isDefaultGateway": false,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_SUBNET, "gateway": GATEWAY.to_string()}]],
                    "routes": [{"dst": SERVICE_SUBNET, "gw": GATEWAY.to_string()}]
                }
            },
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    })
    .to_string()
}

/// The kubelet: cgroup v1 allowed (these VMs are hybrid v1), cgroupfs, the
/// CA for client certificates (the API server presents the admin
/// certificate for logs and exec), cluster DNS on the gateway, no host
/// resolv.conf (pods resolve cluster names only), eviction thresholds low
/// enough for a shared development machine.
pub fn kubelet_yaml(layout: &NodeLayout) -> String {
    format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://{socket}
address: {gateway}
port: {port}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: {healthz}
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: {ca}
authorization:
  mode: Webhook
clusterDNS: [{gateway}]
clusterDomain: {domain}
resolvConf: ""
failSwapOn: false
registerNode: true
serializeImagePulls: false
maxPods: 110
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  nodefs.inodesFree: 1%
  imagefs.available: 1%
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
nodeStatusUpdateFrequency: 4s
syncFrequency: 10s
fileCheckFrequency: 0s
"#,
        socket = layout.containerd_socket().display(),
        gateway = GATEWAY,
        port = layout.kubelet_port,
        healthz = layout.kubelet_healthz_port,
        ca = layout.ca_cert.display(),
        domain = CLUSTER_DOMAIN,
    )
}

/// kube-proxy in iptables mode: ClusterIPs of Services turn into the pods'
/// addresses for pods and for host processes (tests) alike. It leaves the
/// conntrack sysctls alone (shared machine) and listens on loopback only.
pub fn kube_proxy_yaml(layout: &NodeLayout) -> String {
    format!(
        r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection:
  kubeconfig: {kubeconfig}
hostnameOverride: {node}
clusterCIDR: {pods}
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:{healthz}
metricsBindAddress: 127.0.0.1:{metrics}
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
"#,
        kubeconfig = layout.kubeconfig.display(),
        node = NODE_NAME,
        pods = POD_SUBNET,
        healthz = layout.proxy_healthz_port,
        metrics = layout.proxy_metrics_port,
    )
}

/// CoreDNS answers the cluster domain from the API server and nothing
/// else: no `forward`, so no query ever leaves the machine.
pub fn corefile(layout: &NodeLayout) -> String {
    format!(
        r#".:53 {{
    bind {gateway}
    errors
    health 127.0.0.1:{health}
    ready
    kubernetes {domain} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }}
    cache 5
}}
"#,
        gateway = GATEWAY,
        health = layout.dns_health_port,
        domain = CLUSTER_DOMAIN,
        kubeconfig = layout.kubeconfig.display(),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn layout() -> NodeLayout {
        NodeLayout {
            bin: PathBuf::from("/bin-node"),
            root: PathBuf::from("/run/node"),
            ca_cert: PathBuf::from("/pki/ca.crt"),
            kubeconfig: PathBuf::from("/pki/admin.kubeconfig"),
            kubelet_port: 10250,
            kubelet_healthz_port: 10248,
            proxy_healthz_port: 10256,
            proxy_metrics_port: 10249,
            dns_health_port: 8080,
        }
    }

    #[test]
    fn pods_have_no_route_and_no_masquerade_off_the_machine() {
        let conf: serde_json::Value = serde_json::from_str(&cni_conflist()).unwrap();
        let bridge = &conf["plugins"][0];
        assert_eq!(bridge["isDefaultGateway"], false);
        assert_eq!(bridge["ipMasq"], false);
        let routes = bridge["ipam"]["routes"].as_array().unwrap();
        assert_eq!(routes.len(), 1);
        assert_eq!(routes[0]["dst"], SERVICE_SUBNET);
        assert!(!cni_conflist().contains("0.0.0.0/0"));
    }

    #[test]
    fn dns_answers_the_cluster_domain_without_forwarding() {
        let text = corefile(&layout());
        assert!(text.contains("kubernetes cluster.local"));
        assert!(text.contains("bind 10.89.0.1"));
        assert!(!text.contains("forward"));
    }

    #[test]
    fn kubelet_runs_on_cgroup_v1_with_cluster_dns_on_the_gateway() {
        let config: serde_yaml::Value = serde_yaml::from_str(&kubelet_yaml(&layout())).unwrap();
        assert_eq!(config["failCgroupV1"], serde_yaml::Value::Bool(false));
        assert_eq!(config["clusterDNS"][0].as_str(), Some("10.89.0.1"));
        assert_eq!(config["containerRuntimeEndpoint"].as_str(), Some("unix:///run/node/containerd/containerd.sock"));
        assert_eq!(config["authentication"]["anonymous"]["enabled"], serde_yaml::Value::Bool(false));
    }

    #[test]
    fn containerd_uses_the_local_pause_image_and_our_runc() {
        let text = containerd_toml(&layout());
        assert!(text.contains("sandbox = 'registry.k8s.io/pause:3.10.2'"));
        assert!(text.contains("BinaryName = '/bin-node/runc'"));
        assert!(text.contains("bin_dirs = ['/bin-node/cni']"));
    }

    #[test]
    fn kube_proxy_config_parses() {
        let config: serde_yaml::Value = serde_yaml::from_str(&kube_proxy_yaml(&layout())).unwrap();
        assert_eq!(config["mode"].as_str(), Some("iptables"));
        assert_eq!(config["clusterCIDR"].as_str(), Some(POD_SUBNET));
    }
}
