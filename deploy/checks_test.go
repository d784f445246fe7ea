package deploy

import (
	"crypto/rand"
	"encoding/base64"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"
)

// sidecarName is the proxy's container name in every pod.
const sidecarName = "twc-auth-proxy"

// defaultShutdownTimeout is the binary's default shutdown_timeout.
const defaultShutdownTimeout = 20 * time.Second

// expect says what a bundle must have beyond what every pod must.
type expect struct {
	pdb             bool // a PodDisruptionBudget covers each Deployment
	promAnnotations bool // prometheus.io scrape annotations on the pod
	checksums       bool // config and secret checksums on the pod
	// The Secret holds placeholders: --check-config gets the secrets
	// through the environment instead.
	secretsFromEnv bool
}

// secretKeys are the config's secret files and the variables that win
// over them.
var secretKeys = []struct {
	path []string
	env  string
}{
	{[]string{"auth", "client_secret_file"}, "TWC_AUTH_PROXY_CLIENT_SECRET"},
	{[]string{"session", "secret_file"}, "TWC_AUTH_PROXY_SESSION_SECRET"},
	{[]string{"service_account", "password_file"}, "TWC_AUTH_PROXY_SERVICE_PASSWORD"},
}

// checkBundle checks every Deployment of b, the Services, PDBs and
// ServiceMonitors around it, and runs the binary's --check-config on the
// config its sidecar mounts, with the files its volumes would hold.
func checkBundle(t *testing.T, b *bundle, want expect) {
	t.Helper()
	if len(b.deployments) == 0 {
		t.Fatalf("%s: no Deployment", b.name)
	}
	for _, d := range b.deployments {
		t.Run(d.Name, func(t *testing.T) { checkDeployment(t, b, d, want) })
	}
	for _, s := range b.services {
		if len(s.Spec.Selector) == 0 {
			t.Errorf("Service %s: no selector", s.Name)
			continue
		}
		if len(deploymentsSelectedBy(b, s.Spec.Selector)) == 0 {
			t.Errorf("Service %s: selects no pod of a Deployment", s.Name)
		}
	}
	checkServiceMonitors(t, b)
	checkObjectNames(t, b)
}

// checkObjectNames checks every name against the API server's rules: a
// Service's is a DNS-1035 label (at most 63 characters), the others' DNS
// subdomains.
func checkObjectNames(t *testing.T, b *bundle) {
	t.Helper()
	for _, s := range b.services {
		for _, msg := range validation.IsDNS1035Label(s.Name) {
			t.Errorf("Service %q: %s", s.Name, msg)
		}
	}
	names := map[string]string{}
	for _, d := range b.deployments {
		names[d.Name] = "Deployment"
	}
	for n := range b.configMaps {
		names[n] = "ConfigMap"
	}
	for n := range b.secrets {
		names[n] = "Secret"
	}
	for _, p := range b.pdbs {
		names[p.Name] = "PodDisruptionBudget"
	}
	for _, m := range b.serviceMonitors {
		names[m.Name] = "ServiceMonitor"
	}
	for n, kind := range names {
		for _, msg := range validation.IsDNS1123Subdomain(n) {
			t.Errorf("%s %q: %s", kind, n, msg)
		}
	}
}

func checkDeployment(t *testing.T, b *bundle, d *appsv1.Deployment, want expect) {
	pod := &d.Spec.Template
	spec := &pod.Spec
	if d.Spec.Selector == nil || !subset(d.Spec.Selector.MatchLabels, pod.Labels) || len(d.Spec.Selector.MatchExpressions) > 0 {
		t.Errorf("selector %v does not match the pod's labels %v", d.Spec.Selector, pod.Labels)
	}
	if spec.HostNetwork || spec.HostPID || spec.HostIPC {
		t.Error("pod shares a host namespace")
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Error("automountServiceAccountToken is not false: the pod needs no Kubernetes API token")
	}
	all := append(slices.Clone(spec.InitContainers), spec.Containers...)
	for i := range all {
		checkContainer(t, spec, &all[i])
	}
	sidecar := findContainer(spec.Containers, sidecarName)
	if sidecar == nil {
		t.Fatalf("no %s container", sidecarName)
	}

	cfgPath := configPath(t, sidecar)
	cfgText := mountedFile(t, b, spec, sidecar, cfgPath)
	var cfg map[string]any
	if err := yaml.Unmarshal([]byte(cfgText), &cfg); err != nil {
		t.Fatalf("%s: %v", cfgPath, err)
	}

	// Both listeners bind every address (the Service, the kubelet and
	// Prometheus come from outside the pod), on ports the container declares.
	proxyPort := listenPort(t, cfg, "listen")
	metricsPort := listenPort(t, cfg, "metrics_listen")
	declared := map[int32]bool{}
	for _, p := range sidecar.Ports {
		declared[p.ContainerPort] = true
	}
	for _, p := range []int32{proxyPort, metricsPort} {
		if !declared[p] {
			t.Errorf("sidecar does not declare port %d of its config", p)
		}
	}
	checkProbe(t, "liveness", sidecar.LivenessProbe, sidecar, "/healthz", metricsPort)
	checkProbe(t, "readiness", sidecar.ReadinessProbe, sidecar, "/readyz", metricsPort)

	// The dashboard is reachable only through the proxy: the other
	// containers declare no ports, and the proxy reaches them on loopback.
	others := 0
	for _, c := range spec.Containers {
		if c.Name == sidecarName {
			continue
		}
		others++
		if len(c.Ports) > 0 {
			t.Errorf("container %s declares ports %v: only the proxy's should be reachable", c.Name, c.Ports)
		}
	}
	if others > 0 {
		u, err := url.Parse(str(cfg, "upstream"))
		if err != nil || !isLoopback(u.Hostname()) {
			t.Errorf("upstream %q: want the dashboard on the pod's loopback", str(cfg, "upstream"))
		}
	}

	// The kubelet must not kill a proxy that is still draining. The proxy
	// reads a shutdown_timeout of 0 as its default.
	shutdown := defaultShutdownTimeout
	if s := str(cfg, "shutdown_timeout"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("shutdown_timeout %q: %v", s, err)
		}
		if d != 0 {
			shutdown = d
		}
	}
	var preStop time.Duration
	if l := sidecar.Lifecycle; l != nil && l.PreStop != nil && l.PreStop.Sleep != nil {
		preStop = time.Duration(l.PreStop.Sleep.Seconds) * time.Second
	}
	// The kubelet sends SIGTERM to each container once its own preStop hook
	// ends, in no order: a dashboard without the proxy's preStop sleep
	// stops at once, and the proxy, kept serving by its sleep while the pod
	// leaves the endpoints, answers those requests 502.
	for _, c := range spec.Containers {
		if c.Name == sidecarName {
			continue
		}
		var sleep time.Duration
		if l := c.Lifecycle; l != nil && l.PreStop != nil && l.PreStop.Sleep != nil {
			sleep = time.Duration(l.PreStop.Sleep.Seconds) * time.Second
		}
		if sleep < preStop {
			t.Errorf("container %s: preStop sleep %v, want at least the proxy's %v: it would stop while the proxy still forwards to it", c.Name, sleep, preStop)
		}
	}
	if g := spec.TerminationGracePeriodSeconds; g == nil {
		t.Error("terminationGracePeriodSeconds unset (default 30s): set it above shutdown_timeout")
	} else if grace := time.Duration(*g) * time.Second; grace <= shutdown+preStop {
		t.Errorf("terminationGracePeriodSeconds %v, want more than shutdown_timeout %v + preStop sleep %v", grace, shutdown, preStop)
	}

	// Secrets are files of a mounted Secret, never inline in the ConfigMap.
	for _, inline := range [][]string{{"auth", "client_secret"}, {"session", "secret"}, {"service_account", "password"}} {
		if _, ok := lookup(cfg, inline...); ok {
			t.Errorf("config has %s inline: secrets belong in the Secret", strings.Join(inline, "."))
		}
	}
	for _, k := range secretKeys {
		file := str(cfg, k.path...)
		if file == "" {
			if k.path[0] != "service_account" || isTrue(cfg, "service_account", "enabled") {
				t.Errorf("config has no %s", strings.Join(k.path, "."))
			}
			continue
		}
		vol := volumeFor(spec, sidecar, file)
		if vol == nil || vol.Secret == nil {
			t.Errorf("%s %s: not in a Secret volume of the sidecar", strings.Join(k.path, "."), file)
			continue
		}
		if s := b.secrets[vol.Secret.SecretName]; s != nil {
			if _, ok := secretData(s)[path.Base(file)]; !ok {
				t.Errorf("%s %s: Secret %s has no key %s", strings.Join(k.path, "."), file, s.Name, path.Base(file))
			}
		}
	}

	// Services that select the pod reach the sidecar, and nothing else.
	reachesProxy := false
	for _, s := range b.services {
		if !subset(s.Spec.Selector, pod.Labels) {
			continue
		}
		for _, sp := range s.Spec.Ports {
			c, port := resolveTarget(spec, sp.TargetPort, sp.Port)
			switch {
			case c == nil:
				t.Errorf("Service %s port %s: target %s is no container port", s.Name, sp.Name, sp.TargetPort.String())
			case c.Name != sidecarName:
				t.Errorf("Service %s port %s reaches container %s, not the proxy", s.Name, sp.Name, c.Name)
			case port == proxyPort:
				reachesProxy = true
			}
		}
	}
	if !reachesProxy {
		t.Error("no Service reaches the proxy's port")
	}

	if want.pdb {
		covered := false
		for _, p := range b.pdbs {
			if p.Spec.Selector != nil && subset(p.Spec.Selector.MatchLabels, pod.Labels) {
				covered = true
				if p.Spec.MinAvailable == nil && p.Spec.MaxUnavailable == nil {
					t.Errorf("PodDisruptionBudget %s sets neither minAvailable nor maxUnavailable", p.Name)
				}
				if m := p.Spec.MaxUnavailable; m != nil && m.Type == intstr.Int && m.IntVal < 1 {
					t.Errorf("PodDisruptionBudget %s: maxUnavailable %d blocks every drain", p.Name, m.IntVal)
				}
			}
		}
		if !covered {
			t.Error("no PodDisruptionBudget covers the pods")
		}
	}
	if want.promAnnotations {
		a := pod.Annotations
		if a["prometheus.io/scrape"] != "true" || a["prometheus.io/port"] != strconv.Itoa(int(metricsPort)) || a["prometheus.io/path"] != "/metrics" {
			t.Errorf("prometheus.io annotations %v: want scrape true, port %d, path /metrics", a, metricsPort)
		}
	}
	if want.checksums {
		hex := regexp.MustCompile(`^[0-9a-f]{64}$`)
		for _, k := range []string{"checksum/twc-auth-proxy-config", "checksum/twc-auth-proxy-secret"} {
			if !hex.MatchString(pod.Annotations[k]) {
				t.Errorf("pod annotation %s = %q, want a sha256", k, pod.Annotations[k])
			}
		}
	}

	checkConfigRuns(t, b, spec, sidecar, cfgPath, want.secretsFromEnv)
}

// checkContainer checks the hardening every container must have, with the
// pod's securityContext as the default where Kubernetes uses it.
func checkContainer(t *testing.T, pod *corev1.PodSpec, c *corev1.Container) {
	t.Helper()
	sc := c.SecurityContext
	if sc == nil {
		t.Errorf("container %s: no securityContext", c.Name)
		return
	}
	psc := pod.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	if v := first(sc.RunAsNonRoot, psc.RunAsNonRoot); v == nil || !*v {
		t.Errorf("container %s: runAsNonRoot is not true", c.Name)
	}
	if v := first(sc.RunAsUser, psc.RunAsUser); v != nil && *v == 0 {
		t.Errorf("container %s: runAsUser 0", c.Name)
	}
	if v := sc.ReadOnlyRootFilesystem; v == nil || !*v {
		t.Errorf("container %s: readOnlyRootFilesystem is not true", c.Name)
	}
	if v := sc.AllowPrivilegeEscalation; v == nil || *v {
		t.Errorf("container %s: allowPrivilegeEscalation is not false", c.Name)
	}
	if v := sc.Privileged; v != nil && *v {
		t.Errorf("container %s: privileged", c.Name)
	}
	if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
		t.Errorf("container %s: capabilities %v, want drop [ALL] and none added", c.Name, sc.Capabilities)
	}
	seccomp := sc.SeccompProfile
	if seccomp == nil {
		seccomp = psc.SeccompProfile
	}
	if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("container %s: seccompProfile %v, want RuntimeDefault", c.Name, seccomp)
	}
	r := c.Resources
	if r.Requests.Cpu().IsZero() || r.Requests.Memory().IsZero() || r.Limits.Memory().IsZero() {
		t.Errorf("container %s: resources %v, want cpu and memory requests and a memory limit", c.Name, r)
	}
	if !strings.Contains(c.Image, ":") || strings.HasSuffix(c.Image, ":latest") {
		t.Errorf("container %s: image %q, want a pinned tag", c.Name, c.Image)
	}
}

func checkProbe(t *testing.T, kind string, p *corev1.Probe, c *corev1.Container, wantPath string, wantPort int32) {
	t.Helper()
	if p == nil || p.HTTPGet == nil {
		t.Errorf("%s probe: want an HTTP GET of %s on port %d", kind, wantPath, wantPort)
		return
	}
	port := containerPort(c, p.HTTPGet.Port)
	if p.HTTPGet.Path != wantPath || port != wantPort {
		t.Errorf("%s probe: GET %s on port %s (%d), want %s on the metrics port %d", kind, p.HTTPGet.Path, p.HTTPGet.Port.String(), port, wantPath, wantPort)
	}
}

func checkServiceMonitors(t *testing.T, b *bundle) {
	for _, sm := range b.serviceMonitors {
		var svcs []*corev1.Service
		for _, s := range b.services {
			if subset(sm.Spec.Selector.MatchLabels, s.Labels) {
				svcs = append(svcs, s)
			}
		}
		if len(svcs) != 1 {
			t.Errorf("ServiceMonitor %s selects %d Services, want 1", sm.Name, len(svcs))
			continue
		}
		if len(sm.Spec.Endpoints) == 0 {
			t.Errorf("ServiceMonitor %s: no endpoints", sm.Name)
		}
		for _, ep := range sm.Spec.Endpoints {
			if ep.Path != "/metrics" {
				t.Errorf("ServiceMonitor %s: path %q, want /metrics", sm.Name, ep.Path)
			}
			var sp *corev1.ServicePort
			for i := range svcs[0].Spec.Ports {
				if ep.Port != "" && svcs[0].Spec.Ports[i].Name == ep.Port {
					sp = &svcs[0].Spec.Ports[i]
				}
			}
			if sp == nil {
				t.Errorf("ServiceMonitor %s: Service %s has no port %q", sm.Name, svcs[0].Name, ep.Port)
				continue
			}
			for _, d := range deploymentsSelectedBy(b, svcs[0].Spec.Selector) {
				spec := &d.Spec.Template.Spec
				c, port := resolveTarget(spec, sp.TargetPort, sp.Port)
				cfg := sidecarConfig(t, b, d)
				if c == nil || c.Name != sidecarName || cfg == nil || port != listenPort(t, cfg, "metrics_listen") {
					t.Errorf("ServiceMonitor %s: Service %s port %s does not reach the proxy's metrics port", sm.Name, svcs[0].Name, sp.Name)
				}
			}
		}
	}
}

// checkConfigRuns runs the binary's own --check-config on the config the
// sidecar mounts, with the files its volumes would hold (podConfig), and
// wants it accepted.
func checkConfigRuns(t *testing.T, b *bundle, spec *corev1.PodSpec, sidecar *corev1.Container, cfgPath string, secretsFromEnv bool) {
	t.Helper()
	cfgText, env := podConfig(t, b, spec, sidecar, cfgPath, secretsFromEnv)
	runCheckConfig(t, cfgText, env, true)
}

// podConfig writes the config and the files of the sidecar's ConfigMap and
// Secret volumes into a directory and returns the config with its paths
// pointed there. A Secret volume whose Secret b lacks (existingSecret) holds
// what the chart asks of it: a test value under each key the config names
// in that volume, where Kubernetes allows the name as a key. With
// secretsFromEnv the Secret holds placeholders, and env carries the secrets
// instead.
func podConfig(t *testing.T, b *bundle, spec *corev1.PodSpec, sidecar *corev1.Container, cfgPath string, secretsFromEnv bool) (cfgText string, env map[string]string) {
	t.Helper()
	dir := t.TempDir()
	orig := mountedFile(t, b, spec, sidecar, cfgPath)
	var origCfg map[string]any
	if err := yaml.Unmarshal([]byte(orig), &origCfg); err != nil {
		t.Fatal(err)
	}
	cfgText = orig
	for i, m := range sidecar.VolumeMounts {
		vol := volumeNamed(spec, m.Name)
		files := volumeFiles(b, vol)
		if files == nil && vol != nil && vol.Secret != nil {
			files = existingSecretFiles(t, origCfg, m.MountPath)
		}
		if files == nil {
			continue
		}
		local := filepath.Join(dir, strconv.Itoa(i))
		if err := os.MkdirAll(local, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, data := range files {
			if err := os.WriteFile(filepath.Join(local, name), data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		cfgText = strings.ReplaceAll(cfgText, strings.TrimSuffix(m.MountPath, "/")+"/", local+"/")
	}
	env = map[string]string{}
	if secretsFromEnv {
		for _, k := range secretKeys {
			env[k.env] = testSessionKey(t)
		}
	}
	return cfgText, env
}

// existingSecretFiles is a Secret made outside the chart, as the chart
// documents it: a test value under each key the config's secret files name
// in mountPath. A name Kubernetes refuses as a key (validation.IsConfigMapKey)
// is in no Secret, so its file is missing.
func existingSecretFiles(t *testing.T, cfg map[string]any, mountPath string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	for _, k := range secretKeys {
		file := str(cfg, k.path...)
		if file == "" || path.Dir(file) != path.Clean(mountPath) || len(validation.IsConfigMapKey(path.Base(file))) > 0 {
			continue
		}
		files[path.Base(file)] = []byte(testSessionKey(t))
	}
	return files
}

// runCheckConfig runs twc-auth-proxy --check-config on cfgText with only
// the TWC_AUTH_PROXY_* variables of env, and wants success or failure.
func runCheckConfig(t *testing.T, cfgText string, env map[string]string, wantOK bool) string {
	t.Helper()
	out, err := checkConfig(t, cfgText, env)
	if ok := err == nil; ok != wantOK {
		t.Errorf("twc-auth-proxy --check-config: ok=%v, want %v: %v\n%s\nconfig:\n%s", ok, wantOK, err, out, cfgText)
	}
	return out
}

// checkConfig runs twc-auth-proxy --check-config on cfgText with only the
// TWC_AUTH_PROXY_* variables of env; err is its exit status.
func checkConfig(t *testing.T, cfgText string, env map[string]string) (out string, err error) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(file, []byte(cfgText), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(proxyBinary(t), "--config", file, "--check-config")
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TWC_AUTH_PROXY_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	b, err := cmd.CombinedOutput()
	return string(b), err
}

func testSessionKey(t *testing.T) string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(b)
}

// configPath is the file the sidecar's --config names.
func configPath(t *testing.T, c *corev1.Container) string {
	t.Helper()
	args := append(slices.Clone(c.Command), c.Args...)
	for i, a := range args {
		if (a == "--config" || a == "-config") && i+1 < len(args) {
			return args[i+1]
		}
		if v, ok := strings.CutPrefix(a, "--config="); ok {
			return v
		}
	}
	t.Fatalf("container %s: no --config in %v", c.Name, args)
	return ""
}

// mountedFile is the content of file as container c sees it, from the
// ConfigMap or Secret in b that its volume holds.
func mountedFile(t *testing.T, b *bundle, spec *corev1.PodSpec, c *corev1.Container, file string) string {
	t.Helper()
	vol := volumeFor(spec, c, file)
	if vol == nil {
		t.Fatalf("%s: in no volume of container %s", file, c.Name)
	}
	data, ok := volumeFiles(b, vol)[path.Base(file)]
	if !ok {
		t.Fatalf("%s: volume %s holds no %s", file, vol.Name, path.Base(file))
	}
	return string(data)
}

// volumeFor is the volume container c mounts file from (directly in the
// mount's directory: the only layout used here).
func volumeFor(spec *corev1.PodSpec, c *corev1.Container, file string) *corev1.Volume {
	for _, m := range c.VolumeMounts {
		if path.Dir(file) == path.Clean(m.MountPath) && m.SubPath == "" {
			return volumeNamed(spec, m.Name)
		}
	}
	return nil
}

func volumeNamed(spec *corev1.PodSpec, name string) *corev1.Volume {
	for i := range spec.Volumes {
		if spec.Volumes[i].Name == name {
			return &spec.Volumes[i]
		}
	}
	return nil
}

// volumeFiles is what a ConfigMap or Secret volume holds, when b has the
// object; nil otherwise.
func volumeFiles(b *bundle, v *corev1.Volume) map[string][]byte {
	switch {
	case v == nil:
		return nil
	case v.ConfigMap != nil:
		cm := b.configMaps[v.ConfigMap.Name]
		if cm == nil {
			return nil
		}
		out := map[string][]byte{}
		for k, d := range cm.Data {
			out[k] = []byte(d)
		}
		for k, d := range cm.BinaryData {
			out[k] = d
		}
		return out
	case v.Secret != nil:
		if s := b.secrets[v.Secret.SecretName]; s != nil {
			return secretData(s)
		}
	}
	return nil
}

func sidecarConfig(t *testing.T, b *bundle, d *appsv1.Deployment) map[string]any {
	spec := &d.Spec.Template.Spec
	c := findContainer(spec.Containers, sidecarName)
	if c == nil {
		return nil
	}
	var cfg map[string]any
	if err := yaml.Unmarshal([]byte(mountedFile(t, b, spec, c, configPath(t, c))), &cfg); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// listenPort is the port of a listen key; the host must be empty or a
// wildcard, since probes and Services come from outside the pod.
func listenPort(t *testing.T, cfg map[string]any, key string) int32 {
	t.Helper()
	addr := str(cfg, key)
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%s %q: %v", key, addr, err)
	}
	if host != "" && host != "0.0.0.0" && host != "::" {
		t.Errorf("%s %q binds %s only: the Service, probes and Prometheus could not reach it", key, addr, host)
	}
	n, err := strconv.ParseInt(port, 10, 32)
	if err != nil {
		t.Fatalf("%s %q: %v", key, addr, err)
	}
	return int32(n)
}

// resolveTarget finds the container and port a Service's targetPort names
// (a missing targetPort means the Service port's number).
func resolveTarget(spec *corev1.PodSpec, target intstr.IntOrString, port int32) (*corev1.Container, int32) {
	if target.Type == intstr.Int && target.IntVal == 0 {
		target = intstr.FromInt32(port)
	}
	for i := range spec.Containers {
		c := &spec.Containers[i]
		if p := containerPort(c, target); p != 0 {
			return c, p
		}
	}
	return nil, 0
}

// containerPort is the declared port of c that p names, 0 if none.
func containerPort(c *corev1.Container, p intstr.IntOrString) int32 {
	for _, cp := range c.Ports {
		if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return cp.ContainerPort
		}
	}
	return 0
}

func deploymentsSelectedBy(b *bundle, sel map[string]string) []*appsv1.Deployment {
	var out []*appsv1.Deployment
	for _, d := range b.deployments {
		if len(sel) > 0 && subset(sel, d.Spec.Template.Labels) {
			out = append(out, d)
		}
	}
	return out
}

func findContainer(cs []corev1.Container, name string) *corev1.Container {
	for i := range cs {
		if cs[i].Name == name {
			return &cs[i]
		}
	}
	return nil
}

func subset(sel, labels map[string]string) bool {
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func first[T any](vs ...*T) *T {
	for _, v := range vs {
		if v != nil {
			return v
		}
	}
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func lookup(m map[string]any, keys ...string) (any, bool) {
	var v any = m
	for _, k := range keys {
		mm, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = mm[k]; !ok {
			return nil, false
		}
	}
	return v, true
}

func str(m map[string]any, keys ...string) string {
	v, _ := lookup(m, keys...)
	s, _ := v.(string)
	return s
}

func isTrue(m map[string]any, keys ...string) bool {
	v, _ := lookup(m, keys...)
	b, _ := v.(bool)
	return b
}
