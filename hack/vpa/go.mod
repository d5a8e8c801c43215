// Wrapper module that builds the Vertical Pod Autoscaler recommender from
// k8s.io/autoscaler/vertical-pod-autoscaler. go install refuses that module
// (its go.mod has replace lines), so we build from here.
module oomtuner.dev/hack/vpa

go 1.26.0

require k8s.io/autoscaler/vertical-pod-autoscaler v1.8.1 // indirect
