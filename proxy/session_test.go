package proxy

import (
	"crypto/rand"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/twc-auth-proxy/twc-auth-proxy/session"
)

// sealed returns the cookies a store with key would set for sess.
func sealed(t *testing.T, key []byte, sess *session.Session) []*http.Cookie {
	t.Helper()
	st, err := session.NewStore(session.Options{Secrets: [][]byte{key}})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	if err := st.Save(rec, httptest.NewRequest("GET", "/", nil), sess); err != nil {
		t.Fatal(err)
	}
	return rec.Result().Cookies()
}

func TestLargeSessionSplitsAndJoins(t *testing.T) {
	h := newHarness(t)
	// Real ID tokens with many claims can exceed one cookie.
	big := "eyJhbGciOiJSUzI1NiJ9." + strings.Repeat("A", 9000) + ".sig"
	cookies := sealed(t, h.sessKey, &session.Session{Subject: "carol", IDToken: big, RefreshToken: "rt", Expiry: h.clock.Now().Add(time.Hour)})
	if len(cookies) < 3 {
		t.Fatalf("a 9 KB token sealed into %d cookies, want several", len(cookies))
	}
	req, _ := http.NewRequest("GET", h.proxy.URL+"/big", nil)
	for _, c := range cookies {
		if len(c.String()) > 4096 {
			t.Errorf("cookie %s is %d bytes, over the browser limit", c.Name, len(c.String()))
		}
		req.AddCookie(c)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("got %d, want 200", resp.StatusCode)
	}
	if got := tokenOf(t, h.lastUpstream()); got != big {
		t.Errorf("upstream token is %d bytes, want the %d-byte original", len(got), len(big))
	}
	if c := h.lastUpstream().Header.Get("Cookie"); c != "" {
		t.Errorf("chunk cookies reached the upstream: %.80q", c)
	}
}

func TestBadCookiesAreNoSession(t *testing.T) {
	h := newHarness(t)
	good := sealed(t, h.sessKey, &session.Session{Subject: "carol", IDToken: "a.b.c", Expiry: h.clock.Now().Add(time.Hour)})[0]
	otherKey := make([]byte, 32)
	rand.Read(otherKey)
	foreign := sealed(t, otherKey, &session.Session{Subject: "mallory", IDToken: "a.b.c", Expiry: h.clock.Now().Add(time.Hour)})[0]
	tests := []struct {
		name   string
		cookie string
	}{
		{"garbage", "_twc_session=garbage"},
		{"truncated", "_twc_session=" + good.Value[:len(good.Value)/2]},
		{"tampered", "_twc_session=" + good.Value[:10] + flip(good.Value[10]) + good.Value[11:]},
		{"unknown key", "_twc_session=" + foreign.Value},
		{"lying chunk count", "_twc_session=7." + good.Value},
		{"64 KiB", "_twc_session=" + strings.Repeat("x", 64<<10)},
		{"empty", "_twc_session="},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", h.proxy.URL+"/p", nil)
			req.Header.Set("Cookie", tt.cookie)
			req.Header.Set("Accept", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("got %d, want 401", resp.StatusCode)
			}
		})
	}
	// The untouched cookie works, so the cases above failed for their flaw.
	req, _ := http.NewRequest("GET", h.proxy.URL+"/p", nil)
	req.AddCookie(good)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("good cookie: got %d, want 200", resp.StatusCode)
	}
	if n := len(h.upstreamSeen()); n != 1 {
		t.Errorf("upstream reached %d times, want once", n)
	}
}

func TestSessionKeyRotation(t *testing.T) {
	oldKey := make([]byte, 32)
	rand.Read(oldKey)
	h := newHarness(t)
	// A store that seals with a new key and still opens the old one.
	newKey := make([]byte, 32)
	rand.Read(newKey)
	rotated, err := session.NewStore(session.Options{Secrets: [][]byte{newKey, oldKey}})
	if err != nil {
		t.Fatal(err)
	}
	h.server.store = rotated
	old := sealed(t, oldKey, &session.Session{Subject: "carol", IDToken: "a.b.c", Expiry: h.clock.Now().Add(time.Hour)})[0]
	req, _ := http.NewRequest("GET", h.proxy.URL+"/p", nil)
	req.AddCookie(old)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("cookie sealed with the retired key: got %d, want 200", resp.StatusCode)
	}
}

// flip returns a base64url character other than c.
func flip(c byte) string {
	if c == 'A' {
		return "B"
	}
	return "A"
}
