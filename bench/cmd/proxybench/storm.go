package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twc-auth-proxy/twc-auth-proxy/session"
)

// Refresh storm timing. Every session's ID token is issued so that it
// enters the refresh margin a few seconds after its login, while the storm
// runs; the fake's clock is shifted back at login to get such a token from
// a fixed TTL, and set right again before the storm, so refreshed tokens
// are good for the rest of the run and one refresh per session is right.
const (
	stormTTL    = 60 * time.Second
	stormMargin = 30 * time.Second
	stormSpread = 2 * time.Second  // crossings spread over this, on top of the logins' own spread
	stormTail   = 2 * time.Second  // load after the last crossing
	stormMax    = 60 * time.Second // bound on the load phase
)

type stormResult struct {
	clients       int
	elapsed       time.Duration
	requests      int64
	failed        int64
	firstFailure  string
	perSession    map[int]int // refresh calls presenting a session's refresh token -> sessions
	refreshCalls  int         // refresh_token grants at the token endpoint, all told
	crossedBefore int         // sessions already inside the margin when the storm began
	cpu           time.Duration
	rssBefore     int64 // after the logins, before the storm
	peak          int64
}

// exactlyOnce reports the contract: every session refreshed exactly once.
func (s *stormResult) exactlyOnce() bool {
	return s.perSession[1] == s.clients && s.refreshCalls == s.clients
}

// refreshStorm runs -storm-clients concurrent clients, each on its own
// session (made by a real login) and its own cookie jar, so a refreshed
// cookie is what its next request carries.
func (b *bench) refreshStorm(ctx context.Context, upstream string) (*stormResult, error) {
	var shift atomic.Int64
	rm, err := newRealm(stormTTL, func() time.Time { return time.Now().Add(time.Duration(shift.Load())) })
	if err != nil {
		return nil, err
	}
	defer rm.idp.Close()
	p, addr, err := b.ours(ctx, "twc-auth-proxy-storm", oursConfig{realm: rm, upstream: upstream, margin: stormMargin, logRequests: true})
	if err != nil {
		return nil, err
	}
	defer p.stop()
	base := "http://" + addr
	n := b.o.stormClients

	// The first login, timed, tells how long the rest will take; each
	// session's token must not be due before the storm starts.
	t0 := time.Now()
	if _, err := login(ctx, base, rm.user, rm.pass); err != nil {
		return nil, err
	}
	lead := max(3*time.Second, time.Duration(n)*time.Since(t0)*2+time.Second)
	b.logf("refresh storm: %d logins; tokens enter the refresh margin %v-%v after each login", n, lead, lead+stormSpread)
	jars := make([]http.CookieJar, n)
	refresh := make([]string, n)
	due := make([]time.Time, n)
	for i := range n {
		shift.Store(int64(lead + stormSpread*time.Duration(i)/time.Duration(n) + stormMargin - stormTTL))
		cookies, err := login(ctx, base, rm.user, rm.pass)
		if err != nil {
			return nil, fmt.Errorf("storm session %d: %w", i, err)
		}
		sess, err := rm.open(cookies)
		if err != nil {
			return nil, fmt.Errorf("storm session %d: %w", i, err)
		}
		refresh[i], due[i] = sess.RefreshToken, sess.Expiry.Add(-stormMargin)
		jars[i], _ = cookiejar.New(nil)
		jars[i].SetCookies(mustURL(base), cookies)
	}
	shift.Store(0)

	res := &stormResult{clients: n, perSession: map[int]int{}}
	if res.rssBefore, _, err = memory(p.pid()); err != nil {
		return nil, err
	}
	start := time.Now()
	end := start
	for _, d := range due {
		end = later(end, d)
		if d.Before(start) {
			res.crossedBefore++
		}
	}
	end = end.Add(stormTail)
	if limit := start.Add(stormMax); end.After(limit) {
		end = limit
	}
	cpu0, err := cpuTime(p.pid())
	if err != nil {
		return nil, err
	}
	b.storm(base, jars, end, res)
	res.elapsed = time.Since(start)
	cpu1, err := cpuTime(p.pid())
	if err != nil {
		return nil, err
	}
	res.cpu = cpu1 - cpu0
	if _, res.peak, err = memory(p.pid()); err != nil {
		return nil, err
	}

	spent := map[string]int{}
	for _, tr := range rm.idp.TokenRequests() {
		if tr.GrantType == "refresh_token" {
			spent[tr.Form.Get("refresh_token")]++
			res.refreshCalls++
		}
	}
	for _, rt := range refresh {
		res.perSession[spent[rt]]++
	}
	return res, ctx.Err()
}

// storm sends requests from one goroutine per jar until end.
func (b *bench) storm(base string, jars []http.CookieJar, end time.Time, res *stormResult) {
	tr := &http.Transport{Proxy: nil, MaxIdleConns: 2 * len(jars), MaxIdleConnsPerHost: 2 * len(jars), DisableCompression: true}
	defer tr.CloseIdleConnections()
	var requests, failed atomic.Int64
	var once sync.Once
	fail := func(what string) {
		failed.Add(1)
		once.Do(func() { res.firstFailure = what })
	}
	var wg sync.WaitGroup
	for _, jar := range jars {
		wg.Go(func() {
			c := &http.Client{Jar: jar, Transport: tr, Timeout: reqTimeout}
			for !b.stop.Load() && time.Now().Before(end) {
				req, _ := http.NewRequest(http.MethodGet, base+"/api/storm", nil)
				req.Header.Set("Accept", "application/json")
				resp, err := c.Do(req)
				requests.Add(1)
				if err != nil {
					fail(err.Error())
					time.Sleep(time.Millisecond)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					fail(resp.Status)
				}
			}
		})
	}
	wg.Wait()
	res.requests, res.failed = requests.Load(), failed.Load()
}

// open reads the session in cookies with the proxy's own key.
func (r *realm) open(cookies []*http.Cookie) (*session.Session, error) {
	key, err := base64.RawURLEncoding.DecodeString(r.sessionKey)
	if err != nil {
		return nil, err
	}
	store, err := session.NewStore(session.Options{Secrets: [][]byte{key}})
	if err != nil {
		return nil, err
	}
	req, _ := http.NewRequest(http.MethodGet, "http://127.0.0.1/", nil)
	for _, c := range cookies {
		req.AddCookie(c)
	}
	return store.Load(req)
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err) // only called with URLs built from listener addresses
	}
	return u
}
