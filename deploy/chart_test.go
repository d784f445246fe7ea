package deploy

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

const (
	chartDir   = "../helm/twc-auth-proxy"
	exampleDir = "../helm/examples/dashboard-with-sidecar"
	// The chart's fixed mount points (templates/_helpers.tpl).
	chartConfigDir = "/etc/twc-auth-proxy"
	chartSecretDir = "/var/run/secrets/twc-auth-proxy"
)

// helmBin is the helm binary named by $HELM. Without it the chart tests
// skip, except in CI, where deploy/ci.sh installs helm and they must run.
func helmBin(t *testing.T) string {
	t.Helper()
	h := os.Getenv("HELM")
	if h == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("HELM is not set: in CI, deploy/ci.sh installs helm into .ci/bin and .ci/run exports HELM")
		}
		t.Skip("HELM is not set: the Helm chart is not tested. bash deploy/ci.sh installs helm into .ci/bin; then HELM=$PWD/.ci/bin/helm go test ./deploy/...")
	}
	return h
}

// helm runs helm with args and returns its stdout, or an error carrying
// its stderr.
func helm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(helmBin(t), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("helm %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

func render(t *testing.T, chart string, args ...string) *bundle {
	t.Helper()
	out, err := helm(t, append([]string{"template", "twc", chart, "--namespace", "twc"}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	b := newBundle(chart + " " + strings.Join(args, " "))
	if err := b.add("helm template", []byte(out)); err != nil {
		t.Fatal(err)
	}
	return b
}

// valueSet is one of the chart's ci/*-values.yaml files.
type valueSet struct {
	file   string
	values map[string]any
}

func (v valueSet) get(def any, keys ...string) any {
	if x, ok := lookup(v.values, keys...); ok {
		return x
	}
	return def
}

func valueSets(t *testing.T) []valueSet {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(chartDir, "ci", "*-values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var sets []valueSet
	for _, f := range files {
		var vals map[string]any
		if err := yaml.Unmarshal([]byte(readFile(t, f)), &vals); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		sets = append(sets, valueSet{file: f, values: vals})
	}
	for _, want := range []string{"default-values.yaml", "sidecar-values.yaml", "service-account-values.yaml"} {
		if !slices.ContainsFunc(sets, func(v valueSet) bool { return filepath.Base(v.file) == want }) {
			t.Errorf("no ci/%s", want)
		}
	}
	return sets
}

// TestChart lints and renders the chart with each ci/ value set, decodes
// every object strictly and checks it like deploy/.
func TestChart(t *testing.T) {
	helmBin(t)
	configKeys := map[string]bool{}
	for _, vs := range valueSets(t) {
		t.Run(filepath.Base(vs.file), func(t *testing.T) {
			if out, err := helm(t, "lint", "--strict", chartDir, "-f", vs.file); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			b := render(t, chartDir, "-f", vs.file)
			for _, cm := range b.configMaps {
				if text, ok := cm.Data["config.yaml"]; ok {
					var cfg map[string]any
					if err := yaml.Unmarshal([]byte(text), &cfg); err != nil {
						t.Fatal(err)
					}
					collectKeys(cfg, "", configKeys)
				}
			}
			existing := vs.get("", "existingSecret") != ""
			if got := len(b.secrets); existing == (got != 0) {
				t.Errorf("existingSecret %v: chart renders %d Secrets", existing, got)
			}
			if vs.get("deployment", "mode") == "sidecar" {
				checkSidecarMode(t, b)
				return
			}
			monitor := vs.get(false, "serviceMonitor", "enabled") == true
			if monitor != (len(b.serviceMonitors) == 1) {
				t.Errorf("serviceMonitor.enabled %v: %d ServiceMonitors", monitor, len(b.serviceMonitors))
			}
			checkBundle(t, b, expect{
				pdb:             vs.get(true, "podDisruptionBudget", "enabled") == true,
				promAnnotations: vs.get(true, "metrics", "podAnnotations") == true,
				checksums:       true,
			})
		})
	}

	// Values for every config key: together the value sets render every
	// key of config.yaml.example (a secret as its *_file key).
	var example map[string]any
	if err := yaml.Unmarshal([]byte(readFile(t, "../config.yaml.example")), &example); err != nil {
		t.Fatal(err)
	}
	exampleKeys := map[string]bool{}
	collectKeys(example, "", exampleKeys)
	for k := range exampleKeys {
		if !configKeys[k] && !configKeys[k+"_file"] {
			t.Errorf("config key %s (config.yaml.example) is rendered by no ci/ value set: give the chart a value for it", k)
		}
	}
}

// checkSidecarMode: only the ConfigMap and the Secret, and a config the
// binary accepts with the Secret's files where the sidecar mounts them.
func checkSidecarMode(t *testing.T, b *bundle) {
	t.Helper()
	if n := len(b.deployments) + len(b.services) + len(b.pdbs) + len(b.serviceMonitors); n != 0 {
		t.Errorf("sidecar mode renders %d workload, Service or monitoring objects, want only ConfigMap and Secret", n)
	}
	if len(b.configMaps) != 1 {
		t.Fatalf("sidecar mode renders %d ConfigMaps, want 1", len(b.configMaps))
	}
	dir := t.TempDir()
	for _, s := range b.secrets {
		for name, data := range secretData(s) {
			if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, cm := range b.configMaps {
		cfg := cm.Data["config.yaml"]
		for name, data := range cm.Data {
			if name != "config.yaml" {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
					t.Fatal(err)
				}
			}
		}
		cfg = strings.ReplaceAll(cfg, chartSecretDir+"/", dir+"/")
		cfg = strings.ReplaceAll(cfg, chartConfigDir+"/", dir+"/")
		runCheckConfig(t, cfg, nil, true)
	}
}

func collectKeys(m map[string]any, prefix string, into map[string]bool) {
	for k, v := range m {
		if sub, ok := v.(map[string]any); ok {
			collectKeys(sub, prefix+k+".", into)
			continue
		}
		into[prefix+k] = true
	}
}

// TestChartRequiresSecrets: without a session secret (or existingSecret)
// the chart refuses to render, and says what to set.
func TestChartRequiresSecrets(t *testing.T) {
	helmBin(t)
	defaults := filepath.Join(chartDir, "ci", "default-values.yaml")
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"no session secret", []string{"-f", defaults, "--set", "session.secret="}, "session.secret is required"},
		{"no client secret", []string{"-f", defaults, "--set", "auth.clientSecret="}, "auth.clientSecret is required"},
		{"no service password", []string{"-f", defaults, "--set", "serviceAccount.enabled=true,serviceAccount.username=svc"}, "serviceAccount.password is required"},
		{"no values", nil, "is required"},
		{"grace too short", []string{"-f", defaults, "--set", "terminationGracePeriodSeconds=25"}, "terminationGracePeriodSeconds (25) must exceed"},
		{"unknown value", []string{"-f", defaults, "--set", "auth.issuerURL=x"}, "issuerURL"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := helm(t, append([]string{"template", "twc", chartDir}, c.args...)...)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("got %v, want an error containing %q", err, c.want)
			}
		})
	}
	t.Run("existingSecret", func(t *testing.T) {
		b := render(t, chartDir, "-f", defaults, "--set", "session.secret=,auth.clientSecret=,existingSecret=mine")
		if len(b.secrets) != 0 {
			t.Errorf("existingSecret: chart renders %d Secrets, want none", len(b.secrets))
		}
		vol := volumeNamed(&b.deployments[0].Spec.Template.Spec, "twc-auth-proxy-secrets")
		if vol == nil || vol.Secret == nil || vol.Secret.SecretName != "mine" {
			t.Errorf("secret volume %+v, want Secret mine", vol)
		}
	})
}

// TestChartRefusesValuesThatCannotWork: values with which the proxy or the
// pod cannot run fail at render time, saying what to change.
func TestChartRefusesValuesThatCannotWork(t *testing.T) {
	helmBin(t)
	defaults := filepath.Join(chartDir, "ci", "default-values.yaml")
	for _, c := range []struct {
		name, set, want string
	}{
		// 0 is the proxy's default, 20 s, while the grace period would be
		// computed from 0: the kubelet would kill a draining proxy.
		{"shutdownTimeoutSeconds 0", "shutdownTimeoutSeconds=0", "shutdownTimeoutSeconds"},
		{"upstreamTimeout 0", "upstreamTimeout=0s", "upstreamTimeout must be more than 0"},
		{"auth.timeout 0", "auth.timeout=0m0s", "auth.timeout must be more than 0"},
		{"session.lifetime 0", "session.lifetime=0h", "session.lifetime must be more than 0"},
		{"metricsPort is listenPort", "metricsPort=4180", "metricsPort and listenPort must differ"},
		{"upstream.port is listenPort", "upstream.port=4180", "upstream.port (4180) is the proxy's own"},
		{"upstream.port is metricsPort", "upstream.port=9100", "upstream.port (9100) is the proxy's own"},
		{"sidecar upstream.port is listenPort", "mode=sidecar,upstream.port=4180", "upstream.port (4180) is the proxy's own"},
		{"no dashboard and no upstream.url", "dashboard.enabled=false", "dashboard.enabled=false needs upstream.url"},
		// The proxy refuses these at start (upstream_ca_file,
		// upstream_insecure_skip_verify).
		{"upstream.caBundle and upstream.caFile", twcREST + ",upstream.caBundle=" + testCA + ",upstream.caFile=/etc/twc-ca/ca.crt", "upstream.caBundle and upstream.caFile: set one, not both"},
		{"upstream.caFile and insecureSkipVerify", twcREST + ",upstream.caFile=/etc/twc-ca/ca.crt,upstream.insecureSkipVerify=true", "upstream.insecureSkipVerify and upstream.caBundle/caFile: set one"},
		{"upstream.caBundle for the http dashboard", "upstream.caBundle=" + testCA, "for an https upstream.url, and the upstream is http://127.0.0.1:8080"},
		{"upstream.caFile for an http upstream.url", "dashboard.enabled=false,upstream.url=http://twc.example.com:8111,upstream.caFile=/etc/twc-ca/ca.crt", "for an https upstream.url"},
		{"sidecar upstream.insecureSkipVerify for http", "mode=sidecar,upstream.insecureSkipVerify=true", "for an https upstream.url"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := helm(t, "template", "twc", chartDir, "-f", defaults, "--set", c.set)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("got %v, want an error containing %q", err, c.want)
			}
		})
	}
	for _, set := range []string{
		"shutdownTimeoutSeconds=1",
		"upstreamTimeout=0.5s",
		"upstream.port=4181",
		"dashboard.enabled=false,upstream.url=https://twc.example.com:8111",
		twcREST + ",upstream.insecureSkipVerify=true",
		"dashboard.enabled=false,upstream.url=HTTPS://twc.example.com:8111,upstream.insecureSkipVerify=true",
	} {
		t.Run("renders "+set, func(t *testing.T) {
			b := render(t, chartDir, "-f", defaults, "--set", set)
			checkBundle(t, b, expect{pdb: true, promAnnotations: true, checksums: true})
		})
	}
}

// twcREST: values for a proxy in front of TWC REST elsewhere, over https.
const twcREST = "dashboard.enabled=false,upstream.url=https://twc.example.com:8111"

// TestChartUpstreamTLS: upstream.caBundle goes into the ConfigMap next to
// config.yaml, and upstream_ca_file names it where the sidecar mounts it,
// as auth.caBundle does; upstream.caFile is passed as it is;
// upstream.insecureSkipVerify becomes upstream_insecure_skip_verify. The
// binary's --check-config accepts each (TestChart runs it on the value set
// with upstream.caBundle).
func TestChartUpstreamTLS(t *testing.T) {
	helmBin(t)
	defaults := filepath.Join(chartDir, "ci", "default-values.yaml")
	withBundle := filepath.Join(chartDir, "ci", "service-account-values.yaml")
	config := func(t *testing.T, b *bundle) map[string]any {
		t.Helper()
		if len(b.deployments) != 1 {
			t.Fatalf("%d Deployments, want 1", len(b.deployments))
		}
		return sidecarConfig(t, b, b.deployments[0])
	}

	t.Run("caBundle", func(t *testing.T) {
		b := render(t, chartDir, "-f", withBundle)
		cfg := config(t, b)
		file := str(cfg, "upstream_ca_file")
		if want := chartConfigDir + "/upstream-ca.crt"; file != want {
			t.Fatalf("upstream_ca_file %q, want %q", file, want)
		}
		d := b.deployments[0]
		spec := &d.Spec.Template.Spec
		got := mountedFile(t, b, spec, findContainer(spec.Containers, sidecarName), file)
		var vals map[string]any
		if err := yaml.Unmarshal([]byte(readFile(t, withBundle)), &vals); err != nil {
			t.Fatal(err)
		}
		want, _ := lookup(vals, "upstream", "caBundle")
		if got != want {
			t.Errorf("the sidecar's %s holds %q, want upstream.caBundle %q", file, got, want)
		}
		if isTrue(cfg, "upstream_insecure_skip_verify") {
			t.Error("upstream_insecure_skip_verify is true, want false")
		}
		// A new bundle rolls the pods.
		other := render(t, chartDir, "-f", withBundle, "--set", "upstream.caBundle=# rotated\n"+testCA)
		const key = "checksum/twc-auth-proxy-config"
		if d.Spec.Template.Annotations[key] == other.deployments[0].Spec.Template.Annotations[key] {
			t.Errorf("%s unchanged by a new upstream.caBundle", key)
		}
	})
	t.Run("caFile", func(t *testing.T) {
		b := render(t, chartDir, "-f", defaults, "--set", twcREST+",upstream.caFile=/etc/twc-ca/ca.crt")
		if got, want := str(config(t, b), "upstream_ca_file"), "/etc/twc-ca/ca.crt"; got != want {
			t.Errorf("upstream_ca_file %q, want %q", got, want)
		}
		for _, cm := range b.configMaps {
			if _, ok := cm.Data["upstream-ca.crt"]; ok {
				t.Errorf("ConfigMap %s holds upstream-ca.crt without upstream.caBundle", cm.Name)
			}
		}
	})
	t.Run("insecureSkipVerify", func(t *testing.T) {
		cfg := config(t, render(t, chartDir, "-f", defaults, "--set", twcREST+",upstream.insecureSkipVerify=true"))
		if !isTrue(cfg, "upstream_insecure_skip_verify") {
			t.Error("upstream_insecure_skip_verify is not true")
		}
		if _, ok := lookup(cfg, "upstream_ca_file"); ok {
			t.Error("upstream_ca_file is set without upstream.caBundle or upstream.caFile")
		}
	})
	t.Run("defaults", func(t *testing.T) {
		cfg := config(t, render(t, chartDir, "-f", defaults))
		if _, ok := lookup(cfg, "upstream_ca_file"); ok {
			t.Error("upstream_ca_file is set by default")
		}
		if v, ok := lookup(cfg, "upstream_insecure_skip_verify"); !ok || v != false {
			t.Errorf("upstream_insecure_skip_verify %v, want false", v)
		}
	})
}

// TestChartLongReleaseName: Helm allows release names of up to 53
// characters. Every name stays valid for its kind (a Service's within 63
// characters, "-metrics" included), and the ServiceMonitor finds its
// Service.
func TestChartLongReleaseName(t *testing.T) {
	helmBin(t)
	defaults := filepath.Join(chartDir, "ci", "default-values.yaml")
	for _, n := range []int{41, 48, 53} {
		release := "dash" + strings.Repeat("x", n-4)
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			out, err := helm(t, "template", release, chartDir, "--namespace", "twc", "-f", defaults, "--set", "serviceMonitor.enabled=true")
			if err != nil {
				t.Fatal(err)
			}
			b := newBundle(release)
			if err := b.add("helm template", []byte(out)); err != nil {
				t.Fatal(err)
			}
			if len(b.services) != 2 || len(b.serviceMonitors) != 1 {
				t.Fatalf("%d Services and %d ServiceMonitors, want 2 and 1", len(b.services), len(b.serviceMonitors))
			}
			checkBundle(t, b, expect{pdb: true, promAnnotations: true, checksums: true})
		})
	}
}

// TestChartChecksumsRollPods: a config change changes the config checksum
// on the pod (so the Deployment rolls), a secret change the secret's.
func TestChartChecksumsRollPods(t *testing.T) {
	helmBin(t)
	const cfgKey, secretKey = "checksum/twc-auth-proxy-config", "checksum/twc-auth-proxy-secret"
	annotations := func(chart string, args ...string) map[string]string {
		b := render(t, chart, args...)
		if len(b.deployments) != 1 {
			t.Fatalf("%d Deployments, want 1", len(b.deployments))
		}
		return b.deployments[0].Spec.Template.Annotations
	}
	defaults := filepath.Join(chartDir, "ci", "default-values.yaml")
	base := annotations(chartDir, "-f", defaults)
	cases := []struct {
		name           string
		set            string
		config, secret bool // which checksum must change
	}{
		{"log level", "log.level=debug", true, false},
		{"skip rule", "skipAuth[0]=^/static/", true, false},
		{"CA bundle", "auth.caBundle=" + testCA, true, false},
		{"session secret", "session.secret=b3RoZXIga2V5OiB0ZXN0IG9ubHksIG5vdCBhIHJlYWwga2V5", false, true},
		{"client secret", "auth.clientSecret=other", false, true},
		{"replicas", "replicaCount=5", false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := annotations(chartDir, "-f", defaults, "--set", c.set)
			if changed := got[cfgKey] != base[cfgKey]; changed != c.config {
				t.Errorf("%s changed: %v, want %v", cfgKey, changed, c.config)
			}
			if changed := got[secretKey] != base[secretKey]; changed != c.secret {
				t.Errorf("%s changed: %v, want %v", secretKey, changed, c.secret)
			}
		})
	}
}

// TestChartNotes renders NOTES.txt (helm template skips it) through a copy
// of the chart where it is a ConfigMap: the operator must be told what to
// add to authserver.properties.
func TestChartNotes(t *testing.T) {
	helmBin(t)
	dir := notesPreviewChart(t)
	for _, vs := range valueSets(t) {
		t.Run(filepath.Base(vs.file), func(t *testing.T) {
			text := renderNotes(t, dir, vs.file)
			clientID := vs.get("twc-auth-proxy", "auth", "clientId").(string)
			for _, want := range []string{
				"authentication.redirect.uri.whitelist=<existing entries>," + vs.get("", "redirectUrl").(string) + "\n",
				"authentication.client.ids=<existing ids>," + clientID,
				"authentication.client.secret",
			} {
				if !strings.Contains(text, want) {
					t.Errorf("NOTES.txt lacks %q:\n%s", want, text)
				}
			}
			if vs.get("deployment", "mode") == "sidecar" && !strings.Contains(text, `include "twc-auth-proxy.sidecar"`) {
				t.Errorf("sidecar NOTES.txt does not show the include:\n%s", text)
			}
			if vs.get("deployment", "mode") == "deployment" && !strings.Contains(text, "port-forward svc/") {
				t.Errorf("NOTES.txt does not say how to reach it:\n%s", text)
			}
		})
	}
}

// notesPreviewChart is a copy of the chart where NOTES.txt (which helm
// template skips) renders as the ConfigMap "notes".
func notesPreviewChart(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "twc-auth-proxy")
	if err := os.CopyFS(dir, os.DirFS(chartDir)); err != nil {
		t.Fatal(err)
	}
	notes := readFile(t, filepath.Join(dir, "templates", "NOTES.txt"))
	if err := os.Remove(filepath.Join(dir, "templates", "NOTES.txt")); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "templates", "_notes_preview.tpl"), `{{- define "notes-preview" -}}`+notes+`{{- end -}}`)
	write(t, filepath.Join(dir, "templates", "notes-preview.yaml"),
		"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n  NOTES.txt: |\n    {{- include \"notes-preview\" . | nindent 4 }}\n")
	return dir
}

func renderNotes(t *testing.T, previewChart, values string) string {
	t.Helper()
	b := render(t, previewChart, "-f", values, "--show-only", "templates/notes-preview.yaml")
	return b.configMaps["notes"].Data["NOTES.txt"]
}

// TestChartNotesSidecarSnippet: the Deployment template NOTES.txt shows in
// sidecar mode, pasted into a chart that depends on this one (the example
// chart), renders a pod with the user's container, the proxy and its
// volumes.
func TestChartNotesSidecarSnippet(t *testing.T) {
	helmBin(t)
	text := renderNotes(t, notesPreviewChart(t), filepath.Join(chartDir, "ci", "sidecar-values.yaml"))
	lines := strings.Split(text, "\n")
	start := slices.IndexFunc(lines, func(l string) bool { return strings.Contains(l, "$twc := dict") })
	end := slices.IndexFunc(lines, func(l string) bool { return strings.Contains(l, `include "twc-auth-proxy.volumes"`) })
	if start < 0 || end < start {
		t.Fatalf("NOTES.txt shows no Deployment template from $twc to the volumes:\n%s", text)
	}
	indent := len(lines[start]) - len(strings.TrimLeft(lines[start], " "))
	var tmpl strings.Builder
	tmpl.WriteString("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: notes-example\nspec:\n")
	for _, l := range lines[start : end+1] {
		if len(l) < indent || strings.TrimSpace(l[:indent]) != "" {
			t.Fatalf("snippet line %q is indented less than its first line", l)
		}
		l = "  " + l[indent:]
		tmpl.WriteString(l + "\n")
		if strings.HasPrefix(strings.TrimLeft(l, " "), "- name: my-dashboard") {
			// The user's container has more than a name ("..." in README).
			pad := strings.Repeat(" ", len(l)-len(strings.TrimLeft(l, " "))+2)
			tmpl.WriteString(pad + "image: busybox:1.37.0\n")
		}
	}

	dir := exampleChart(t)
	write(t, filepath.Join(dir, "templates", "deployment.yaml"), tmpl.String())
	out, err := helm(t, "template", "twc", dir, "-f", filepath.Join(dir, "ci-values.yaml"), "--show-only", "templates/deployment.yaml")
	if err != nil {
		t.Fatalf("the NOTES.txt snippet does not render: %v\ntemplate:\n%s", err, tmpl.String())
	}
	b := newBundle("NOTES.txt snippet")
	if err := b.add("helm template", []byte(out)); err != nil {
		t.Fatal(err)
	}
	if len(b.deployments) != 1 {
		t.Fatalf("%d Deployments, want 1", len(b.deployments))
	}
	spec := &b.deployments[0].Spec.Template.Spec
	var names []string
	for _, c := range spec.Containers {
		names = append(names, c.Name)
	}
	if !slices.Equal(names, []string{"my-dashboard", sidecarName}) {
		t.Errorf("containers %v, want [my-dashboard %s]", names, sidecarName)
	}
	for _, v := range []string{"twc-auth-proxy-config", "twc-auth-proxy-secrets"} {
		if volumeNamed(spec, v) == nil {
			t.Errorf("no volume %s", v)
		}
	}
}

// TestSidecarIncludedFromAnotherChart renders helm/examples/
// dashboard-with-sidecar, which includes the sidecar templates from the
// chart as a dependency (mode sidecar), and checks its pod like the others.
func TestSidecarIncludedFromAnotherChart(t *testing.T) {
	helmBin(t)
	dir := exampleChart(t)
	values := filepath.Join(dir, "ci-values.yaml")
	if out, err := helm(t, "lint", "--strict", dir, "-f", values); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	b := render(t, dir, "-f", values)
	checkBundle(t, b, expect{promAnnotations: true, checksums: true})

	base := b.deployments[0].Spec.Template.Annotations
	changed := render(t, dir, "-f", values, "--set", "twcAuthProxy.log.level=debug").deployments[0].Spec.Template.Annotations
	if base["checksum/twc-auth-proxy-config"] == changed["checksum/twc-auth-proxy-config"] {
		t.Error("a config change through the parent chart does not change the pod's config checksum")
	}
	// The parent's appVersion is not the proxy's: no silent default.
	_, err := helm(t, "template", "twc", dir, "-f", values, "--set", "twcAuthProxy.image.tag=")
	if err == nil || !strings.Contains(err.Error(), "image.tag is required") {
		t.Errorf("included without image.tag: got %v, want the image.tag error", err)
	}
}

func write(t *testing.T, name, data string) {
	t.Helper()
	if err := os.WriteFile(name, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// exampleChart copies helm/examples/dashboard-with-sidecar into a temporary
// directory with this checkout's chart as its dependency (what
// `helm dependency update` would put there) and returns the copy.
func exampleChart(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "dashboard-with-sidecar")
	if err := os.CopyFS(dir, os.DirFS(exampleDir)); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(filepath.Join(dir, "charts"))
	os.Remove(filepath.Join(dir, "Chart.lock"))
	if err := os.CopyFS(filepath.Join(dir, "charts", "twc-auth-proxy"), os.DirFS(chartDir)); err != nil {
		t.Fatal(err)
	}
	return dir
}
