//go:build tools

// Package tools pins the CNI plugins the lab's real node uses (bridge, host-local, loopback,
// portmap), so that `go mod tidy` keeps their dependencies in go.mod and go.sum.
package tools

import (
	_ "github.com/containernetworking/plugins/plugins/ipam/host-local"
	_ "github.com/containernetworking/plugins/plugins/main/bridge"
	_ "github.com/containernetworking/plugins/plugins/main/loopback"
	_ "github.com/containernetworking/plugins/plugins/meta/portmap"
)
