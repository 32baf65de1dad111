"""The test cluster: the real Kubernetes control plane, built from source, and a node agent.

`controlplane/` is the Go module of the control-plane binary (etcd,
kube-apiserver, kube-controller-manager, kube-scheduler in one multi-call
binary from the official modules); `controlplane.py` starts them, one process
each, with TLS, RBAC and service-account tokens; `agent.py` is the node agent
that runs pods as local processes (the image is not pulled: a pod's command
runs with this machine's Python environment). `make cluster` runs one in the
background (`__main__.py`); the tests get one per session (`fixtures.py`, a pytest plugin).
"""
