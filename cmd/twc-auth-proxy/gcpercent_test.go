package main

import (
	"bufio"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestGCPercent(t *testing.T) {
	for _, tt := range []struct {
		gogc    string
		percent int
		ok      bool
	}{
		{"", defaultGCPercent, true},
		{"100", 0, false},
		{"80", 0, false},
		{"off", 0, false},
	} {
		percent, ok := gcPercent(env("GOGC", tt.gogc))
		if percent != tt.percent || ok != tt.ok {
			t.Errorf("GOGC=%q: got %d, %v; want %d, %v", tt.gogc, percent, ok, tt.percent, tt.ok)
		}
	}
}

// runMainEnv makes this test binary run main instead of the tests (see
// TestMain), so that a test can start the program as users do.
const runMainEnv = "TWC_AUTH_PROXY_TEST_RUN_MAIN"

// TestMainSetsGCPercent starts the program itself, as a process: the GC
// percent is the process's, set by main before run, and its start line
// says which is in force.
func TestMainSetsGCPercent(t *testing.T) {
	for _, tt := range []struct {
		gogc string // "": not set
		want int64
	}{
		{"", defaultGCPercent},
		{"80", 80},
		{"off", -1},
	} {
		t.Run("GOGC="+tt.gogc, func(t *testing.T) {
			a := freeAddrs(t, 3)
			path := runConfig(t, a[0], a[1], "http://127.0.0.1:8111", "http://"+a[2]+"/authentication",
				"auth.client_id: dashboard", "session.secret: "+testSessionSecret)
			start := startLine(t, path, tt.gogc)
			got, ok := start["gogc"].(float64)
			if !ok || int64(got) != tt.want {
				t.Errorf("start line gogc = %v, want %d; line: %v", start["gogc"], tt.want, start)
			}
		})
	}
}

// startLine runs the program with --config path and GOGC=gogc (unset when
// ""), and returns its start line once it is logged; then it stops the
// program with SIGTERM, as Kubernetes does.
func startLine(t *testing.T, path, gogc string) map[string]any {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "--config", path)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GOGC=") && !strings.HasPrefix(kv, "GOMEMLIMIT=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, runMainEnv+"=1", envClientSecret+"=s3cret")
	if gogc != "" {
		cmd.Env = append(cmd.Env, "GOGC="+gogc)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// A program that logs no start line is killed after 20 s, which ends
	// the scan below.
	timer := time.AfterFunc(20*time.Second, func() { cmd.Process.Kill() })
	defer timer.Stop()
	var logged []string
	var start map[string]any
	sc := bufio.NewScanner(stderr)
	for start == nil && sc.Scan() {
		logged = append(logged, sc.Text())
		var line map[string]any
		if json.Unmarshal(sc.Bytes(), &line) == nil && line["msg"] == "twc-auth-proxy started" {
			start = line
		}
	}
	exited := make(chan error, 1)
	go func() {
		io.Copy(io.Discard, stderr) // the shutdown lines
		exited <- cmd.Wait()
	}()
	if start == nil {
		err := <-exited
		t.Fatalf("no start line within 20 s (the program ended: %v); it logged:\n%s", err, strings.Join(logged, "\n"))
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("the program ended with %v after SIGTERM", err)
		}
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-exited
		t.Error("the program did not end within 10 s of SIGTERM")
	}
	return start
}
