package proxy

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twc-auth-proxy/twc-auth-proxy/session"
)

// TestLoadRefreshStorm drives 200 concurrent clients with valid sessions;
// half of them cross the refresh margin in the middle of the run. Zero
// failed requests, exactly one refresh per crossing session, and memory
// and goroutines flat afterwards. It runs for 2 s by default (CI's short
// form); TWC_AUTH_PROXY_LOAD_DURATION=20s runs the full version.
func TestLoadRefreshStorm(t *testing.T) {
	if testing.Short() {
		t.Skip("load test skipped in -short mode")
	}
	duration := 2 * time.Second
	if v := os.Getenv("TWC_AUTH_PROXY_LOAD_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("TWC_AUTH_PROXY_LOAD_DURATION: %v", err)
		}
		duration = d
	}
	const clients = 200
	h := newHarness(t, func(o *harnessOpts) { o.idp.RotateRefreshTokens = true; o.quiet = true })

	// Sessions made through the token endpoint: the first half now, the
	// second half two minutes later, so only the first half will be due.
	jars := make([]http.CookieJar, clients)
	refresh := make([]string, clients)
	for i := range clients {
		if i == clients/2 {
			h.clock.Advance(2 * time.Minute)
		}
		jars[i], refresh[i] = h.serviceSession(t)
	}
	runtime.GC()
	baseGoroutines := runtime.NumGoroutine()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	var total, failed atomic.Int64
	var firstErr atomic.Value
	// crossed is set once the clock has moved; used[i] once client i has
	// had an answer to a request sent after that. The run lasts until
	// every client has, so a slow machine cannot end it before some
	// crossing session was ever used again.
	var crossed atomic.Bool
	used := make([]atomic.Bool, clients)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Jar: jars[i], Timeout: 10 * time.Second}
			for {
				select {
				case <-stop:
					return
				default:
				}
				sentAfter := crossed.Load()
				resp, err := c.Get(h.proxy.URL + "/tile")
				total.Add(1)
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, resp.Status)
				}
				if sentAfter {
					used[i].Store(true)
				}
			}
		}()
	}
	time.Sleep(duration / 2)
	h.clock.Advance(2*time.Minute + 30*time.Second) // first half: 30 s before expiry
	crossed.Store(true)
	time.Sleep(duration / 2)
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
		waiting := 0
		for i := range used {
			if !used[i].Load() {
				waiting++
			}
		}
		if waiting == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("%d clients had no answer to a request sent after the clock moved, a minute on", waiting)
			break
		}
	}
	close(stop)
	wg.Wait()

	t.Logf("%d requests in %v, %d failed", total.Load(), duration, failed.Load())
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d of %d requests failed; first: %v", n, total.Load(), firstErr.Load())
	}
	spent := map[string]int{}
	for _, r := range h.idp.TokenRequests() {
		if r.GrantType == "refresh_token" {
			spent[r.Form.Get("refresh_token")]++
		}
	}
	for i, rt := range refresh {
		want := 0
		if i < clients/2 {
			want = 1
		}
		if spent[rt] != want {
			t.Errorf("session %d: refreshed %d times, want %d", i, spent[rt], want)
		}
	}
	if n := h.idp.TokenCalls("refresh_token"); n != clients/2 {
		t.Errorf("refresh calls = %d, want %d", n, clients/2)
	}

	// Flat afterwards: once the pooled keep-alive connections (clients to
	// proxy, proxy to upstream) are closed, goroutines are back to where
	// they were and the heap has not grown by more than a few MiB.
	http.DefaultClient.CloseIdleConnections()
	h.proxy.CloseClientConnections()
	h.server.rp.Transport.(*http.Transport).CloseIdleConnections()
	h.upstream.CloseClientConnections()
	var after runtime.MemStats
	deadline := time.Now().Add(5 * time.Second)
	for {
		runtime.GC()
		runtime.ReadMemStats(&after)
		g := runtime.NumGoroutine()
		if g <= baseGoroutines+10 || time.Now().After(deadline) {
			if g > baseGoroutines+10 {
				t.Errorf("goroutines: %d after the run, %d before", g, baseGoroutines)
			}
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if grown := int64(after.HeapAlloc) - int64(before.HeapAlloc); grown > 16<<20 {
		t.Errorf("heap grew by %d MiB over the run", grown>>20)
	}
}

// serviceSession gets tokens for alice straight from the token endpoint
// (client_credentials) and returns a jar holding the sealed session and the
// refresh token in it.
func (h *harness) serviceSession(t *testing.T) (http.CookieJar, string) {
	t.Helper()
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {testClientID}}
	req, _ := http.NewRequest("POST", h.idp.Issuer()+"/api/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Auth-Secret", testSecret)
	req.SetBasicAuth(testUser, testPassword)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tr struct {
		IDToken      string `json:"id_token"`
		RefreshToken string `json:"refresh_token"`
		ExpiresIn    int64  `json:"expires_in"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tr); err != nil || tr.IDToken == "" {
		t.Fatalf("token endpoint: %d %v", resp.StatusCode, err)
	}
	cookies := sealed(t, h.sessKey, &session.Session{
		Subject: testUser, IDToken: tr.IDToken, RefreshToken: tr.RefreshToken,
		Expiry: h.clock.Now().Add(time.Duration(tr.ExpiresIn) * time.Second), Created: h.clock.Now(),
	})
	jar, _ := cookiejar.New(nil)
	jar.SetCookies(mustURL(h.proxy.URL), cookies)
	return jar, tr.RefreshToken
}
