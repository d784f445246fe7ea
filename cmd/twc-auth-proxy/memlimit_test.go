package main

import (
	"io/fs"
	"math"
	"testing"
)

func TestContainerMemoryLimit(t *testing.T) {
	const mib = 1 << 20
	files := func(m map[string]string) func(string) ([]byte, error) {
		return func(path string) ([]byte, error) {
			if v, ok := m[path]; ok {
				return []byte(v), nil
			}
			return nil, fs.ErrNotExist
		}
	}
	tests := []struct {
		name     string
		env      string
		files    map[string]string
		want     int64
		wantSome bool
	}{
		{"cgroup v2 limit", "", map[string]string{cgroupV2MemoryMax: "134217728\n"}, 128 * mib * 9 / 10, true},
		{"cgroup v2 without limit", "", map[string]string{cgroupV2MemoryMax: "max\n", cgroupV1MemoryMax: "134217728\n"}, 0, false},
		{"cgroup v1 limit", "", map[string]string{cgroupV1MemoryMax: "268435456\n"}, 256 * mib * 9 / 10, true},
		{"cgroup v1 without limit", "", map[string]string{cgroupV1MemoryMax: "9223372036854771712\n"}, 0, false},
		{"no cgroup files", "", nil, 0, false},
		{"garbage", "", map[string]string{cgroupV2MemoryMax: "lots"}, 0, false},
		{"GOMEMLIMIT set", "100MiB", map[string]string{cgroupV2MemoryMax: "134217728\n"}, 0, false},
		{"GOMEMLIMIT off", "off", map[string]string{cgroupV2MemoryMax: "134217728\n"}, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			getenv := func(k string) string {
				if k == "GOMEMLIMIT" {
					return tt.env
				}
				return ""
			}
			got, ok := containerMemoryLimit(getenv, files(tt.files))
			if ok != tt.wantSome || got != tt.want {
				t.Errorf("got %d, %t; want %d, %t", got, ok, tt.want, tt.wantSome)
			}
		})
	}
}

func TestMemoryLimitField(t *testing.T) {
	if f := memoryLimitField(math.MaxInt64); f.Key != "" {
		t.Errorf("no limit: got field %q, want none", f.Key)
	}
	if f := memoryLimitField(115 << 20); f.Key != "gomemlimit_bytes" || f.Integer != 115<<20 {
		t.Errorf("got %q = %d, want gomemlimit_bytes = %d", f.Key, f.Integer, 115<<20)
	}
}
