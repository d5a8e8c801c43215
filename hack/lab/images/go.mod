// The programs of the lab's locally built images (no dependencies): memhog, the workload that
// allocates memory until the kernel OOM-kills it, and pause, the pod sandbox's process.
module oomtuner.dev/hack/lab/images

go 1.25.0
