//go:build tools

// Package tools pins the Kubernetes commands this module builds (the control plane, kubectl,
// and the kubelet of the lab's real node), so that `go mod tidy` keeps their dependencies in
// go.mod and go.sum.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
