# The pinned Kubernetes release of the local cluster (control plane and
# node), and the linker flags that stamp it into the binaries: without them
# /version reports v0.0.0-master and clients that parse the server version
# (kube-rs, kubectl skew warnings, the node's kubeletVersion) get confused.
# Sourced by hack/build-control-plane.sh and hack/build-node.sh.
K8S_VERSION=v1.37.2

k8s_ldflags() {
  local minor="${K8S_VERSION#v1.}" ld="-s -w" p
  minor="${minor%%.*}"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
    ld+=" -X $p.gitCommit=0000000000000000000000000000000000000000 -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  echo "$ld"
}
