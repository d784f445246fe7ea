package main

import (
	"bufio"
	"context"
	"html"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestDemoLogin starts the demo in-process and signs in through it as a
// browser would, ending on the sample dashboard with the user's claims,
// on every kind of loopback address -listen accepts.
func TestDemoLogin(t *testing.T) {
	for _, listen := range []string{"127.0.0.1:0", "localhost:0", "127.0.0.2:0", "[::1]:0"} {
		t.Run(listen, func(t *testing.T) {
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				t.Skipf("this machine cannot listen on %s: %v", listen, err)
			}
			ln.Close()
			testDemoLogin(t, listen)
		})
	}
}

func testDemoLogin(t *testing.T, listen string) {
	ctx, cancel := context.WithCancel(t.Context())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- runDemo(ctx, []string{"-listen", listen}, pw, io.Discard)
		pw.Close()
	}()
	var base string
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == "open" {
			base = strings.TrimSuffix(f[1], "/")
			break
		}
	}
	go io.Copy(io.Discard, pr)
	if base == "" {
		t.Fatal("demo printed no URL to open")
	}
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 10 * time.Second}
	get := func(u string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", u, nil)
		req.Header.Set("Accept", "text/html")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	// Waiting for discovery: the first navigation may meet a 503.
	var resp *http.Response
	var page string
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		resp, page = get(base + "/reports?week=48")
		if resp.StatusCode != http.StatusServiceUnavailable || time.Now().After(deadline) {
			break
		}
	}
	if !strings.Contains(page, `id="password"`) {
		t.Fatalf("expected the login form, got %d:\n%s", resp.StatusCode, page)
	}
	form := url.Values{"username": {demoUser}, "password": {demoPassword}}
	for _, m := range regexp.MustCompile(`<input type="hidden" name="([a-z_]+)" value="([^"]*)">`).FindAllStringSubmatch(page, -1) {
		form.Set(m[1], html.UnescapeString(m[2]))
	}
	resp, err := c.PostForm(resp.Request.URL.String(), form)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	body := html.UnescapeString(string(b))
	if resp.Request.URL.String() != base+"/reports?week=48" {
		t.Errorf("landed on %s, want the requested page with its query", resp.Request.URL)
	}
	for _, want := range []string{"Signed in as <strong>demo</strong>", `"aud": "twc-auth-proxy-demo"`, "/reports?week=48"} {
		if !strings.Contains(body, want) {
			t.Errorf("dashboard page lacks %q:\n%s", want, body)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("demo returned %v after Ctrl-C, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("demo did not stop")
	}
}

func TestDemoRefusesNonLoopback(t *testing.T) {
	err := runDemo(t.Context(), []string{"-listen", "0.0.0.0:4180"}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("got %v, want a loopback error", err)
	}
}
