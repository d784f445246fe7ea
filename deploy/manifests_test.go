package deploy

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// kustomization is the part of kustomization.yaml used here, decoded
// strictly so that a key this test does not know is noticed.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Resources  []string `json:"resources"`
}

// TestManifests decodes every manifest in deploy/ strictly and checks the
// example deployment as a whole.
func TestManifests(t *testing.T) {
	files, err := filepath.Glob("*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var k kustomization
	if err := yaml.UnmarshalStrict([]byte(readFile(t, "kustomization.yaml")), &k); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		t.Errorf("kustomization.yaml: %s %s", k.APIVersion, k.Kind)
	}
	manifests := slices.DeleteFunc(slices.Clone(files), func(f string) bool { return f == "kustomization.yaml" })
	if got := slices.Sorted(slices.Values(k.Resources)); !slices.Equal(got, manifests) {
		t.Errorf("kustomization.yaml resources %v, want every manifest: %v", got, manifests)
	}

	b := newBundle("deploy")
	for _, f := range manifests {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.add(f, data); err != nil {
			t.Fatal(err)
		}
	}
	if len(b.pdbs) == 0 || len(b.serviceMonitors) == 0 || len(b.secrets) == 0 {
		t.Errorf("deploy/ has %d PodDisruptionBudgets, %d ServiceMonitors, %d Secrets: want each", len(b.pdbs), len(b.serviceMonitors), len(b.secrets))
	}
	// The Secret ships placeholders; the check gets secrets from the
	// environment, as a pod could.
	checkBundle(t, b, expect{pdb: true, promAnnotations: true, secretsFromEnv: true})

	t.Run("placeholder session secret refused", func(t *testing.T) {
		// Applied unedited, the proxy must refuse to start rather than run
		// with a session key everyone can read here.
		d := b.deployments[0]
		spec := &d.Spec.Template.Spec
		c := findContainer(spec.Containers, sidecarName)
		cfg := mountedFile(t, b, spec, c, configPath(t, c))
		secretDir := filepath.Dir(mustStr(t, cfg, "session", "secret_file"))
		dir := t.TempDir()
		for _, s := range b.secrets {
			for name, data := range secretData(s) {
				if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
					t.Fatal(err)
				}
			}
		}
		out := runCheckConfig(t, strings.ReplaceAll(cfg, secretDir+"/", dir+"/"), nil, false)
		if !strings.Contains(out, "session.secret") {
			t.Errorf("--check-config with the shipped Secret: %s, want a session.secret error", out)
		}
	})
}

func mustStr(t *testing.T, cfgText string, keys ...string) string {
	t.Helper()
	var cfg map[string]any
	if err := yaml.Unmarshal([]byte(cfgText), &cfg); err != nil {
		t.Fatal(err)
	}
	s := str(cfg, keys...)
	if s == "" {
		t.Fatalf("config has no %s", strings.Join(keys, "."))
	}
	return s
}
