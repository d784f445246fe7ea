package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// bundle is every object of one deployment (deploy/, or one helm template
// run), decoded into the API types.
type bundle struct {
	name            string
	deployments     []*appsv1.Deployment
	services        []*corev1.Service
	configMaps      map[string]*corev1.ConfigMap
	secrets         map[string]*corev1.Secret
	pdbs            []*policyv1.PodDisruptionBudget
	serviceMonitors []*monitoringv1.ServiceMonitor
}

func newBundle(name string) *bundle {
	return &bundle{name: name, configMaps: map[string]*corev1.ConfigMap{}, secrets: map[string]*corev1.Secret{}}
}

// kinds lists every kind the packaging may produce; anything else is an
// error, so a new kind must come with its checks.
var kinds = map[string]func() any{
	"apps/v1/Deployment":            func() any { return new(appsv1.Deployment) },
	"v1/Service":                    func() any { return new(corev1.Service) },
	"v1/ConfigMap":                  func() any { return new(corev1.ConfigMap) },
	"v1/Secret":                     func() any { return new(corev1.Secret) },
	"policy/v1/PodDisruptionBudget": func() any { return new(policyv1.PodDisruptionBudget) },
	"monitoring.coreos.com/v1/ServiceMonitor": func() any { return new(monitoringv1.ServiceMonitor) },
}

// add decodes every YAML document of data strictly: an unknown field, a
// duplicate field, a wrong type or an unknown apiVersion/kind is an error.
func (b *bundle) add(source string, data []byte) error {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: document %d: %w", source, i, err)
		}
		var probe map[string]any
		if err := yaml.Unmarshal(doc, &probe); err != nil {
			return fmt.Errorf("%s: document %d: %w", source, i, err)
		}
		if len(probe) == 0 {
			continue // only comments
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			return fmt.Errorf("%s: document %d: %w", source, i, err)
		}
		gvk := tm.APIVersion + "/" + tm.Kind
		newObj, ok := kinds[gvk]
		if !ok {
			return fmt.Errorf("%s: document %d: unknown kind %q", source, i, gvk)
		}
		obj := newObj()
		if err := yaml.UnmarshalStrict(doc, obj); err != nil {
			return fmt.Errorf("%s: %s (document %d): %w", source, gvk, i, err)
		}
		switch o := obj.(type) {
		case *appsv1.Deployment:
			b.deployments = append(b.deployments, o)
		case *corev1.Service:
			b.services = append(b.services, o)
		case *corev1.ConfigMap:
			if b.configMaps[o.Name] != nil {
				return fmt.Errorf("%s: ConfigMap %s twice", source, o.Name)
			}
			b.configMaps[o.Name] = o
		case *corev1.Secret:
			if b.secrets[o.Name] != nil {
				return fmt.Errorf("%s: Secret %s twice", source, o.Name)
			}
			b.secrets[o.Name] = o
		case *policyv1.PodDisruptionBudget:
			b.pdbs = append(b.pdbs, o)
		case *monitoringv1.ServiceMonitor:
			b.serviceMonitors = append(b.serviceMonitors, o)
		}
	}
}

// secretData is a Secret's content, stringData over data as the API
// server merges them.
func secretData(s *corev1.Secret) map[string][]byte {
	out := map[string][]byte{}
	for k, v := range s.Data {
		out[k] = v
	}
	for k, v := range s.StringData {
		out[k] = []byte(v)
	}
	return out
}

func TestDecoderIsStrict(t *testing.T) {
	cases := []struct {
		name, doc, want string
	}{
		{"unknown field", "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n  selectr: {a: b}\n", `unknown field "selectr"`},
		{"unknown kind", "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n", `unknown kind "v1/Pod"`},
		{"wrong type", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  replicas: two\n", "replicas"},
		{"unknown ServiceMonitor field", "apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata: {name: x}\nspec:\n  endpoints: [{port: m, pth: /metrics}]\n  selector: {}\n", `unknown field "pth"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := newBundle("t").add("t.yaml", []byte(c.doc))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error containing %q", err, c.want)
			}
		})
	}
	b := newBundle("t")
	if err := b.add("t.yaml", []byte("# comment only\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: b}\n")); err != nil {
		t.Fatal(err)
	}
	if len(b.configMaps) != 1 {
		t.Fatalf("got %d ConfigMaps, want 1", len(b.configMaps))
	}
}
