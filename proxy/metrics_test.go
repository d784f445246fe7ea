package proxy

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestOutcomeSeriesExistFromStart: every labelled outcome counter README's
// metrics table lists is exported by a fresh proxy with each of the label
// values the table names, at 0, and with no other value. A series that
// appears only at its first event hides that event from increase(), so an
// alert on the first failure would never fire.
func TestOutcomeSeriesExistFromStart(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	// | `twc_auth_proxy_x_total` | counter | `label`: a, b, c |
	row := regexp.MustCompile("(?m)^\\| `(twc_auth_proxy_[a-z_]+_total)` \\| counter \\| `([a-z_]+)`: ([a-z_, ]+) \\|$")
	want := map[string][]string{} // name -> label=value pairs
	for _, m := range row.FindAllStringSubmatch(string(readme), -1) {
		for v := range strings.SplitSeq(m[3], ",") {
			want[m[1]] = append(want[m[1]], m[2]+"="+strings.TrimSpace(v))
		}
	}
	if len(want) < 6 {
		t.Fatalf("found %d labelled counters in README's metrics table, want at least 6: %v", len(want), want)
	}

	reg := prometheus.NewRegistry()
	NewMetrics(reg)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]string{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			if len(m.GetLabel()) != 1 {
				continue
			}
			l := m.GetLabel()[0]
			got[f.GetName()] = append(got[f.GetName()], l.GetName()+"="+l.GetValue())
			if v := m.GetCounter().GetValue(); v != 0 {
				t.Errorf("%s{%s} = %v at start, want 0", f.GetName(), l.GetName()+"="+l.GetValue(), v)
			}
		}
	}
	for name, pairs := range want {
		slices.Sort(pairs)
		slices.Sort(got[name])
		if !slices.Equal(got[name], pairs) {
			t.Errorf("%s at start: %q, want README's %q", name, got[name], pairs)
		}
	}
}
