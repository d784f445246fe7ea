package proxy

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// requestLineFields are the values one request line carries.
type requestLineFields struct {
	id, method, path, user, outcome, remote string
	status                                  int
	duration                                time.Duration
}

// zapRequestLine is the line the binary's JSON logger (cmd/twc-auth-proxy
// newLogger; TestRequestLineMatchesLogger there holds it to this config)
// writes for f at now.
func zapRequestLine(t testing.TB, f requestLineFields, now time.Time) string {
	t.Helper()
	ec := zap.NewProductionEncoderConfig()
	ec.TimeKey = "time"
	ec.EncodeTime = zapcore.RFC3339NanoTimeEncoder
	buf, err := zapcore.NewJSONEncoder(ec).EncodeEntry(zapcore.Entry{Level: zapcore.InfoLevel, Time: now, Message: "request"}, []zap.Field{
		zap.String("request_id", f.id),
		zap.String("method", f.method),
		zap.String("path", f.path),
		zap.Int("status", f.status),
		zap.Duration("duration", f.duration),
		zap.String("user", f.user),
		zap.String("outcome", f.outcome),
		zap.String("remote", f.remote),
	})
	if err != nil {
		t.Fatalf("zap: %v", err)
	}
	defer buf.Free()
	return buf.String()
}

// directRequestLine is the line appendRequestLine writes for f at now.
func directRequestLine(f requestLineFields, now time.Time) string {
	r := &http.Request{Method: f.method, URL: &url.URL{Path: f.path}, RemoteAddr: f.remote}
	w := &recorder{id: f.id, user: f.user, outcome: f.outcome, code: f.status, start: now.Add(-f.duration)}
	return string(appendRequestLine(nil, w, r, now))
}

// checkRequestLine fails unless both paths write the same bytes for f.
func checkRequestLine(t testing.TB, f requestLineFields, now time.Time) {
	t.Helper()
	want := zapRequestLine(t, f, now)
	if got := directRequestLine(f, now); got != want {
		t.Fatalf("request line for %+v:\n got %q\nwant %q (zap)", f, got, want)
	}
	if !json.Valid([]byte(want)) {
		t.Fatalf("zap's line is not JSON: %q", want)
	}
}

func TestRequestLineMatchesZap(t *testing.T) {
	now := time.Date(2026, 11, 26, 23, 40, 4, 123456789, time.UTC)
	base := requestLineFields{id: "k3j2h4", method: "GET", path: "/osmc/workspaces", user: "alice", outcome: "proxied", remote: "127.0.0.1:50000", status: 200, duration: 1234567 * time.Nanosecond}
	hostile := []string{
		"",
		`"},"user":"root`,
		"line\nbreak\r\n{\"level\":\"error\"}",
		"tab\there",
		`back\slash`,
		"\x00\x01\x1f\x7f",
		"caf\u00e9 \u65e5\u672c \U0001F600",
		"\u2028\u2029<script>&amp;",
		"bad \xff\xfe utf8 \xc3",
		"\xed\xa0\x80", // an encoded surrogate: invalid UTF-8
		strings.Repeat("a", 5000),
	}
	for _, s := range hostile {
		for _, mod := range []func(*requestLineFields){
			func(f *requestLineFields) { f.path = s },
			func(f *requestLineFields) { f.user = s },
			func(f *requestLineFields) { f.method = s },
			func(f *requestLineFields) { f.remote = s },
		} {
			f := base
			mod(&f)
			checkRequestLine(t, f, now)
		}
	}
	for _, d := range []time.Duration{0, 1, time.Second, 90 * time.Minute, -time.Millisecond} {
		f := base
		f.duration = d
		checkRequestLine(t, f, now)
	}
	for _, code := range []int{101, 499, 502} {
		f := base
		f.status = code
		checkRequestLine(t, f, now)
	}
	// A handler that wrote nothing answered 200, and its line says so.
	unwritten := appendRequestLine(nil, &recorder{start: now}, httptest.NewRequest("GET", "/", nil), now)
	if !strings.Contains(string(unwritten), `,"status":200,`) {
		t.Errorf("line of a request answered without a status: %q, want status 200", unwritten)
	}
	// Times in another zone keep their offset, as zap writes them.
	checkRequestLine(t, base, now.In(time.FixedZone("CET", 3600)))
}

// FuzzRequestLine: for any strings from the client or the token, the
// direct line is the bytes zap would write.
func FuzzRequestLine(f *testing.F) {
	f.Add("k3j2h4", "GET", "/osmc/workspaces", "alice", "127.0.0.1:1", 200, int64(1234))
	f.Add("", "", "\n\"\\\x00\xff", "\u2028", "[::1]:2", 502, int64(-1))
	f.Fuzz(func(t *testing.T, id, method, path, user, remote string, status int, d int64) {
		if status == 0 {
			status = 200
		}
		fields := requestLineFields{id: id, method: method, path: path, user: user, outcome: "proxied", remote: remote, status: status, duration: time.Duration(d)}
		checkRequestLine(t, fields, time.Unix(1795000000, d&0x3fffffff))
	})
}

// The proxy writes its request lines to Config.RequestLog, one line per
// request and one Write per line, without the query string, and not
// through the logger.
func TestRequestLogThroughServer(t *testing.T) {
	lines := &syncBuffer{}
	h := newHarness(t, func(o *harnessOpts) {
		o.cfg = func(c *Config) { c.RequestLog = lines }
	})
	c := h.browser()
	if resp, _ := h.login(c, "/osmc/workspaces", testUser, testPassword); resp.StatusCode != http.StatusOK {
		t.Fatalf("login: got %d, want 200", resp.StatusCode)
	}
	resp, _ := h.fetch(c, "/reports/a%0Ab?code=s3cr3t")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET: got %d, want 200", resp.StatusCode)
	}
	id := resp.Header.Get("X-Request-Id")

	out := lines.String()
	if strings.Contains(out, "s3cr3t") {
		t.Errorf("the request log carries the query string:\n%s", out)
	}
	var n int
	var found map[string]any
	for line := range strings.Lines(out) {
		n++
		var e map[string]any
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("line is not JSON: %v: %q", err, line)
		}
		if e["msg"] != "request" || e["level"] != "info" {
			t.Errorf("got line %q, want only request lines at info", line)
		}
		if e["request_id"] == id {
			found = e
		}
	}
	if lines.writes != n {
		t.Errorf("got %d writes for %d lines, want one write per line", lines.writes, n)
	}
	want := map[string]any{"method": "GET", "path": "/reports/a\nb", "status": float64(200), "user": testUser, "outcome": "proxied"}
	if found == nil {
		t.Fatalf("no line with request_id %q in:\n%s", id, out)
	}
	for k, v := range want {
		if found[k] != v {
			t.Errorf("line of the GET: %s = %#v, want %#v", k, found[k], v)
		}
	}
	if d, ok := found["duration"].(float64); !ok || d < 0 || d > 10 {
		t.Errorf("duration = %#v, want seconds", found["duration"])
	}
	if got := len(h.logs.FilterMessage("request").All()); got != 0 {
		t.Errorf("the logger got %d request lines, want 0: they go to RequestLog", got)
	}
}

// Request lines follow the logger's level even when written directly, and
// LogRequests still turns them off.
func TestRequestLogFollowsLevel(t *testing.T) {
	r := httptest.NewRequest("GET", "/x", nil)
	for _, c := range []struct {
		name  string
		level zapcore.Level
		on    bool
		want  int
	}{
		{"info", zapcore.InfoLevel, true, 1},
		{"debug", zapcore.DebugLevel, true, 1},
		{"warn", zapcore.WarnLevel, true, 0},
		{"off", zapcore.InfoLevel, false, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			lines := &syncBuffer{}
			log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(&syncBuffer{}), c.level))
			s := &Server{cfg: Config{LogRequests: c.on}, log: log, m: NewMetrics(prometheus.NewRegistry()), requestLog: newRequestLog(lines)}
			s.finish(&recorder{id: "a", start: time.Now()}, r)
			if lines.writes != c.want {
				t.Errorf("got %d lines, want %d", lines.writes, c.want)
			}
		})
	}
}

// BenchmarkRequestLine compares the two ways of writing the request line,
// into a discarding sink: through zap, as with the console format, and
// appended directly, as with JSON.
func BenchmarkRequestLine(b *testing.B) {
	r := httptest.NewRequest("GET", "/osmc/workspaces", nil)
	r.RemoteAddr = "127.0.0.1:50000"
	w := &recorder{id: "k3j2h4", user: "alice", outcome: "proxied", start: time.Now(), code: 200}
	ec := zap.NewProductionEncoderConfig()
	ec.TimeKey = "time"
	ec.EncodeTime = zapcore.RFC3339NanoTimeEncoder
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(ec), zapcore.AddSync(discard{}), zap.InfoLevel))
	m := NewMetrics(prometheus.NewRegistry())
	for _, c := range []struct {
		name string
		rl   *requestLog
	}{{"zap", nil}, {"direct", newRequestLog(discard{})}} {
		b.Run(c.name, func(b *testing.B) {
			s := &Server{cfg: Config{LogRequests: true}, log: log, m: m, requestLog: c.rl}
			b.ReportAllocs()
			for b.Loop() {
				s.finish(w, r)
			}
		})
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
