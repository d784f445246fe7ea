package main

import (
	"bytes"
	"context"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestMain lets the benchmark start its child roles (upstream, bare) from
// this test binary, as it does from its own: it re-runs itself with
// "child ROLE ...".
func TestMain(m *testing.M) {
	if len(os.Args) > 2 && os.Args[1] == "child" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestSmallRun runs the whole benchmark at its smallest (it builds the
// binary, logs in against the fake auth server, drives every row, runs a
// refresh storm and the idle connections) and checks that every part
// answered without errors and reported what README's Performance section
// shows. The figures themselves are not judged: a run this short is noise.
func TestSmallRun(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs for about half a minute")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err := run(ctx, []string{
		"-rounds", "1", "-duration", "200ms", "-slices", "2", "-warmup", "0",
		"-conns", "2", "-storm-clients", "4", "-idle-conns", "20", "-same-bytes-row",
	}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("run: %v\nstderr:\n%s", err, stderr.String())
	}
	out := stdout.String()

	// Every proxy's row, each with 0 errors (the last column).
	row := regexp.MustCompile(`(?m)^\| 2 \| ([^|]+) \|.*\| (\d+) \|$`)
	got := map[string]string{}
	for _, m := range row.FindAllStringSubmatch(out, -1) {
		got[strings.TrimSpace(m[1])] = m[2]
	}
	for _, name := range []string{
		"bare ReverseProxy",
		"bare ReverseProxy, requests without the cookie",
		"bare ReverseProxy, same bytes",
		"twc-auth-proxy",
		"twc-auth-proxy, log.requests: false",
	} {
		switch errs, ok := got[name]; {
		case !ok:
			t.Errorf("no row for %q; got rows %v", name, got)
		case errs != "0":
			t.Errorf("%s: %s errors", name, errs)
		}
	}
	for _, want := range []string{
		"| peak RSS (VmHWM) |",
		"**Idle connections**: 20 keep-alive connections",
		"**0 failed**",
		"token-endpoint refresh calls per session: 1 for 4/4 sessions",
		"| refresh storm: token-endpoint calls per session | 1 for 4/4 sessions | exactly 1 each | PASS |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	// Every request our proxy answered has its log line.
	lines := regexp.MustCompile(`wrote (\d+) lines in all \(their start and shutdown lines included\) while answering (\d+) requests`).FindStringSubmatch(out)
	if lines == nil {
		t.Fatalf("report lacks the count of log lines:\n%s", out)
	}
	if written, answered := mustAtoi(t, lines[1]), mustAtoi(t, lines[2]); written < answered {
		t.Errorf("%d log lines for %d requests", written, answered)
	}
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
