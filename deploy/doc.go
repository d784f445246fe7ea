// Package deploy holds the Kubernetes packaging of twc-auth-proxy: plain
// manifests for kustomize (this directory), the build script the
// Dockerfile and CI share (build.sh), the CI step (ci.sh) and the tests
// that decode every manifest and every object the Helm chart renders
// strictly into the Kubernetes API types and check what the deployment
// promises: hardened containers, probes on the metrics port, a Service that
// reaches only the proxy, a grace period longer than the drain, and a
// config the binary itself accepts.
package deploy
