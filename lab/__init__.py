"""The lab: a real two-cluster Kubernetes control plane for tests and the demo (see lab/hclab)."""
