//go:build tools

// Package tools pins the VPA recommender so `go mod tidy` keeps its dependencies.
package tools

import _ "k8s.io/autoscaler/vertical-pod-autoscaler/pkg/recommender"
