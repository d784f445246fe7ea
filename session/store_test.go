package session

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestNewStore(t *testing.T) {
	good := [][]byte{testSecret('a')}
	tests := []struct {
		name    string
		opts    Options
		wantErr bool
	}{
		{"defaults", Options{Secrets: good}, false},
		{"two secrets", Options{Secrets: [][]byte{testSecret('a'), testSecret('b')}}, false},
		{"no secrets", Options{}, true},
		{"short secret", Options{Secrets: [][]byte{[]byte("too short")}}, true},
		{"short second secret", Options{Secrets: [][]byte{testSecret('a'), make([]byte, 31)}}, true},
		{"bad cookie name", Options{Secrets: good, CookieName: "a b"}, true},
		{"bad path", Options{Secrets: good, Path: "app"}, true},
		{"bad domain", Options{Secrets: good, Domain: "a.com; Secure"}, true},
		{"negative max age", Options{Secrets: good, MaxAge: -time.Hour}, true},
		{"sub-second max age", Options{Secrets: good, MaxAge: time.Millisecond}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := NewStore(tt.opts)
			if gotErr := err != nil; gotErr != tt.wantErr {
				t.Fatalf("got error %v, want error %t", err, tt.wantErr)
			}
			if err == nil && s.CookieName() != defaultCookieName {
				t.Errorf("got cookie name %q, want %q", s.CookieName(), defaultCookieName)
			}
		})
	}
}

func TestSaveLoadSingleCookie(t *testing.T) {
	s := newTestStore(t)
	want := testSession(900)
	rec := httptest.NewRecorder()
	if err := s.Save(rec, httptest.NewRequest(http.MethodGet, "/", nil), want); err != nil {
		t.Fatal(err)
	}
	cookies := rec.Result().Cookies()
	if len(cookies) != 1 || cookies[0].Name != "_twc_session" {
		t.Fatalf("got cookies %v, want one _twc_session", cookies)
	}
	if strings.Contains(cookies[0].Value, ".") {
		t.Errorf("got single-cookie value with a '.', which reads as a chunk count")
	}
	got, err := s.Load(jar{}.apply(rec).request())
	if err != nil {
		t.Fatal(err)
	}
	if !sameSession(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestSaveLoadChunked(t *testing.T) {
	s := newTestStore(t)
	want := testSession(9000)
	rec := httptest.NewRecorder()
	if err := s.Save(rec, httptest.NewRequest(http.MethodGet, "/", nil), want); err != nil {
		t.Fatal(err)
	}
	lines := rec.Result().Header["Set-Cookie"]
	if len(lines) < 3 || len(lines) > maxChunks {
		t.Fatalf("got %d Set-Cookie lines, want 3 to %d", len(lines), maxChunks)
	}
	for _, l := range lines {
		if len(l) >= 4096 {
			t.Errorf("got Set-Cookie line of %d bytes, want < 4096", len(l))
		}
	}
	j := jar{}.apply(rec)
	if prefix := strconv.Itoa(len(lines)) + "."; !strings.HasPrefix(j["_twc_session"], prefix) {
		t.Errorf("got head %.10q..., want prefix %q", j["_twc_session"], prefix)
	}
	for k := 1; k < len(lines); k++ {
		if _, ok := j["_twc_session_"+strconv.Itoa(k)]; !ok {
			t.Errorf("no chunk cookie %d", k)
		}
	}
	j["_twc_session_7"] = "stale" // beyond the count: ignored
	got, err := s.Load(j.request())
	if err != nil {
		t.Fatal(err)
	}
	if !sameSession(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestCookieAttributes(t *testing.T) {
	s, err := NewStore(Options{
		Secrets: [][]byte{testSecret('a')},
		Secure:  true,
		Domain:  "twc.example.com",
		Path:    "/app",
		MaxAge:  2 * time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	if err := s.Save(rec, nil, testSession(9000)); err != nil {
		t.Fatal(err)
	}
	for _, line := range rec.Result().Header["Set-Cookie"] {
		for _, attr := range []string{"; HttpOnly", "; SameSite=Lax", "; Secure", "; Path=/app", "; Domain=twc.example.com", "; Max-Age=7200"} {
			if !strings.Contains(line, attr) {
				t.Errorf("got %.40q..., want it to contain %q", line, attr)
			}
		}
	}

	insecure := newTestStore(t)
	rec = httptest.NewRecorder()
	if err := insecure.Save(rec, nil, testSession(900)); err != nil {
		t.Fatal(err)
	}
	line := rec.Result().Header.Get("Set-Cookie")
	if strings.Contains(line, "; Secure") || !strings.Contains(line, "; Path=/") ||
		!strings.Contains(line, "; Max-Age="+strconv.Itoa(14*24*3600)) {
		t.Errorf("got %q, want Path=/, 14-day Max-Age and no Secure", line)
	}
}

func TestSaveExpiresStaleChunks(t *testing.T) {
	tests := []struct {
		name       string
		from, to   int // token sizes
		wantChunks int // after the first save
		wantGone   []string
	}{
		// Sizes of a JWS token, which is stored base64-decoded.
		{"3 chunks to 1", 6600, 900, 3, []string{"_twc_session_1", "_twc_session_2"}},
		{"5 chunks to 3", 12000, 6600, 5, []string{"_twc_session_3", "_twc_session_4"}},
		{"3 chunks to 3", 6600, 6600, 3, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestStore(t)
			j := saved(t, s, testSession(tt.from))
			if len(j) != tt.wantChunks {
				t.Fatalf("setup: got %d cookies, want %d", len(j), tt.wantChunks)
			}
			want := testSession(tt.to)
			rec := httptest.NewRecorder()
			if err := s.Save(rec, j.request(), want); err != nil {
				t.Fatal(err)
			}
			lines := setCookies(rec)
			for _, name := range tt.wantGone {
				if !strings.Contains(lines[name], "Max-Age=0") {
					t.Errorf("got %q for %s, want it expired", lines[name], name)
				}
			}
			expired := 0
			for _, l := range lines {
				if strings.Contains(l, "Max-Age=0") {
					expired++
				}
			}
			if expired != len(tt.wantGone) {
				t.Errorf("got %d cookies expired, want %d", expired, len(tt.wantGone))
			}
			j.apply(rec)
			got, err := s.Load(j.request())
			if err != nil {
				t.Fatal(err)
			}
			if !sameSession(got, want) {
				t.Errorf("got %+v, want %+v", got, want)
			}
		})
	}
}

func TestClear(t *testing.T) {
	s := newTestStore(t)
	j := saved(t, s, testSession(9000))
	j["other"] = "kept"
	rec := httptest.NewRecorder()
	s.Clear(rec, j.request())
	j.apply(rec)
	if len(j) != 1 || j["other"] != "kept" {
		t.Errorf("got jar %v after Clear, want only the unrelated cookie", j)
	}
	if _, err := s.Load(j.request()); !errors.Is(err, ErrNoSession) {
		t.Errorf("got %v, want ErrNoSession", err)
	}
}

func TestSaveErrors(t *testing.T) {
	s := newTestStore(t)
	tests := []struct {
		name    string
		sess    *Session
		tooLarg bool
	}{
		{"nil", nil, false},
		{"field over limit", &Session{IDToken: strings.Repeat("x", maxField+1)}, true},
		{"too many chunks", &Session{IDToken: strings.Repeat("x", maxField), RefreshToken: strings.Repeat("y", maxField)}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			err := s.Save(rec, nil, tt.sess)
			if err == nil {
				t.Fatal("got no error")
			}
			if got := errors.Is(err, ErrTooLarge); got != tt.tooLarg {
				t.Errorf("got errors.Is(%v, ErrTooLarge) = %t, want %t", err, got, tt.tooLarg)
			}
			if n := len(rec.Result().Header["Set-Cookie"]); n != 0 {
				t.Errorf("got %d Set-Cookie lines on error, want 0", n)
			}
		})
	}
}

func TestIsOwnCookie(t *testing.T) {
	s := newTestStore(t)
	tests := []struct {
		name string
		want bool
	}{
		{"_twc_session", true},
		{"_twc_session_1", true},
		{"_twc_session_3", true},
		{"_twc_session_12", true},
		{"_twc_session_flow_abc", true},
		{"_twc_session_flow_0123456789ab", true},
		{"_twc_session_flow_", false},
		{"_twc_session_", false},
		{"_twc_session_x", false},
		{"_twc_session_1x", false},
		{"_twc_sessionX", false},
		{"_twc_session1", false},
		{"_twc_sessio", false},
		{"twc-rest-session-id", false},
		{"other", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := s.IsOwnCookie(tt.name); got != tt.want {
			t.Errorf("IsOwnCookie(%q): got %t, want %t", tt.name, got, tt.want)
		}
	}
}

func TestConcurrentUse(t *testing.T) {
	s := newTestStore(t, testSecret('n'), testSecret('o'))
	want := testSession(5000)
	j := saved(t, s, want)
	done := make(chan error)
	for range 8 {
		go func() {
			for range 20 {
				if err := s.Save(httptest.NewRecorder(), j.request(), want); err != nil {
					done <- err
					return
				}
				got, err := s.Load(j.request())
				if err != nil {
					done <- err
					return
				}
				if !sameSession(got, want) {
					done <- fmt.Errorf("got subject %q, want %q", got.Subject, want.Subject)
					return
				}
			}
			done <- nil
		}()
	}
	for range 8 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}

// TestCookieNamePrefix: a __Host- or __Secure- name is refused with
// attributes a browser would drop such a cookie for, and accepted with the
// right ones, in which case every cookie the store writes (session, its
// chunks, a login flow, their expiry) keeps the prefix's rule.
func TestCookieNamePrefix(t *testing.T) {
	good := [][]byte{testSecret('a')}
	tests := []struct {
		name   string
		opts   Options
		wantOK bool
	}{
		{"host", Options{CookieName: "__Host-twc", Secure: true}, true},
		{"host, not secure", Options{CookieName: "__Host-twc"}, false},
		{"host in other case, not secure", Options{CookieName: "__host-twc"}, false},
		{"host with a domain", Options{CookieName: "__Host-twc", Secure: true, Domain: "twc.example.com"}, false},
		{"host with a path", Options{CookieName: "__Host-twc", Secure: true, Path: "/app"}, false},
		{"secure", Options{CookieName: "__Secure-twc", Secure: true, Domain: "twc.example.com", Path: "/app"}, true},
		{"secure, not secure", Options{CookieName: "__SECURE-twc", Domain: "twc.example.com"}, false},
		{"no prefix, not secure", Options{CookieName: "twc-Host-x"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.Secrets = good
			s, err := NewStore(tt.opts)
			if !tt.wantOK {
				if err == nil || !strings.Contains(err.Error(), "browsers keep a __") {
					t.Fatalf("got error %v, want the prefix's rule", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			rec := httptest.NewRecorder()
			if err := s.Save(rec, nil, testSession(9000)); err != nil {
				t.Fatal(err)
			}
			if err := s.SaveFlow(rec, httptest.NewRequest(http.MethodGet, "/", nil), testFlow("state-1", time.Now())); err != nil {
				t.Fatal(err)
			}
			s.Clear(rec, httptest.NewRequest(http.MethodGet, "/", nil))
			lines := rec.Result().Header["Set-Cookie"]
			if len(lines) < 4 {
				t.Fatalf("got %d Set-Cookie lines, want the chunks, a flow and the expiry", len(lines))
			}
			for _, line := range lines {
				c, err := http.ParseSetCookie(line)
				if err != nil {
					t.Fatal(err)
				}
				if !strings.HasPrefix(c.Name, tt.opts.CookieName) || c.Secure != tt.opts.Secure {
					t.Errorf("cookie %s: Secure %t; want the prefix and Secure %t", c.Name, c.Secure, tt.opts.Secure)
				}
				if strings.HasPrefix(tt.opts.CookieName, "__Host-") && (c.Path != "/" || c.Domain != "") {
					t.Errorf("cookie %s: Path %q, Domain %q; want / and none", c.Name, c.Path, c.Domain)
				}
			}
		})
	}
}
