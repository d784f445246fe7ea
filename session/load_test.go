package session

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestLoadRejects(t *testing.T) {
	s := newTestStore(t)
	small := saved(t, s, testSession(900))
	big := saved(t, s, testSession(9000))
	other := saved(t, s, &Session{Subject: "mallory", IDToken: fakeJWT(9000)})
	foreign := saved(t, newTestStore(t, testSecret('z')), testSession(900))
	n := strings.IndexByte(big["_twc_session"], '.')
	if n < 0 || len(big) < 3 || len(other) != len(big) {
		t.Fatalf("setup: want two chunked sessions of 3+ chunks, got %d and %d", len(big), len(other))
	}
	flip := func(v string, i int) string {
		c := byte('A')
		if v[i] == 'A' {
			c = 'B'
		}
		return v[:i] + string(c) + v[i+1:]
	}
	tests := []struct {
		name string
		base jar
		edit func(j jar)
	}{
		{"no cookie", jar{}, func(jar) {}},
		{"other cookies only", jar{"twc-rest-session-id": "x"}, func(jar) {}},
		{"empty value", small, func(j jar) { j["_twc_session"] = "" }},
		{"garbage", small, func(j jar) { j["_twc_session"] = "not-a-cookie" }},
		{"tampered", small, func(j jar) { j["_twc_session"] = flip(j["_twc_session"], 100) }},
		{"truncated", small, func(j jar) { v := j["_twc_session"]; j["_twc_session"] = v[:len(v)/2] }},
		{"unknown key", foreign, func(jar) {}},
		{"tampered chunk", big, func(j jar) { j["_twc_session_1"] = flip(j["_twc_session_1"], 10) }},
		{"chunk missing", big, func(j jar) { delete(j, "_twc_session_2") }},
		{"chunk empty", big, func(j jar) { j["_twc_session_1"] = "" }},
		{"chunks reordered", big, func(j jar) {
			j["_twc_session_1"], j["_twc_session_2"] = j["_twc_session_2"], j["_twc_session_1"]
		}},
		{"chunks mixed", big, func(j jar) { j["_twc_session_1"] = other["_twc_session_1"] }},
		{"head from other session", big, func(j jar) { j["_twc_session"] = other["_twc_session"] }},
		{"count 0", big, func(j jar) { j["_twc_session"] = "0" + j["_twc_session"][n:] }},
		{"count 1", big, func(j jar) { j["_twc_session"] = "1" + j["_twc_session"][n:] }},
		{"count 9", big, func(j jar) { j["_twc_session"] = "9" + j["_twc_session"][n:] }},
		{"count x", big, func(j jar) { j["_twc_session"] = "x" + j["_twc_session"][n:] }},
		{"count empty", big, func(j jar) { j["_twc_session"] = j["_twc_session"][n:] }},
		{"count 10", big, func(j jar) { j["_twc_session"] = "10" + j["_twc_session"][n:] }},
		{"count too low", big, func(j jar) { j["_twc_session"] = "2" + j["_twc_session"][n:] }},
		{"count too high", big, func(j jar) {
			j["_twc_session"] = strconv.Itoa(len(big)+1) + j["_twc_session"][n:]
			j["_twc_session_"+strconv.Itoa(len(big))] = "AAAA"
		}},
		{"extra stale chunk ignored, head lies", big, func(j jar) {
			j["_twc_session_"+strconv.Itoa(len(big))] = other["_twc_session_1"]
			delete(j, "_twc_session_1")
		}},
		{"chunk as head", big, func(j jar) { j["_twc_session"] = j["_twc_session_1"] }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j := tt.base.clone()
			tt.edit(j)
			got, err := s.Load(j.request())
			if !errors.Is(err, ErrNoSession) {
				t.Errorf("got session %v, error %v; want ErrNoSession", got != nil, err)
			}
		})
	}
}

func TestLoadExpired(t *testing.T) {
	secret := testSecret('a')
	s, err := NewStore(Options{Secrets: [][]byte{secret}, MaxAge: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	plain, err := encodeSession(nil, testSession(900))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().Unix()
	tests := []struct {
		name  string
		ts    int64
		plain []byte
		ok    bool
	}{
		{"fresh", now, plain, true},
		{"almost expired", now - 3500, plain, true},
		{"expired", now - 3700, plain, false},
		{"fresh but bad version", now, append([]byte{9}, plain[1:]...), false},
		{"fresh but trailing byte", now, append(plain[:len(plain):len(plain)], 0), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := sealAt(t, secret, s.CookieName(), tt.plain, tt.ts)
			_, err := s.Load(jar{"_twc_session": v}.request())
			if tt.ok && err != nil {
				t.Errorf("got %v, want a session", err)
			}
			if !tt.ok && !errors.Is(err, ErrNoSession) {
				t.Errorf("got %v, want ErrNoSession", err)
			}
		})
	}
}

func TestLoadHostileHeaders(t *testing.T) {
	s := newTestStore(t)
	valid := saved(t, s, testSession(900))["_twc_session"]
	var many strings.Builder
	for i := range 500 {
		fmt.Fprintf(&many, "c%d=%s; _twc_session_%d=x; ", i, strings.Repeat("v", 100), i%10)
	}
	tests := []struct {
		name   string
		header string
		ok     bool
	}{
		{"64 KiB session value", "_twc_session=" + strings.Repeat("A", 64<<10), false},
		{"64 KiB chunked", "_twc_session=8." + strings.Repeat("A", 64<<10) + "; _twc_session_1=B", false},
		{"64 KiB chunk", "_twc_session=2.AAAA; _twc_session_1=" + strings.Repeat("B", 64<<10), false},
		{"hundreds of cookies", many.String(), false},
		{"hundreds of cookies and a session", many.String() + "_twc_session=" + valid, true},
		{"quoted session", `_twc_session="` + valid + `"`, true},
		{"duplicate, first wins", "_twc_session=" + valid + "; _twc_session=garbage", true},
		{"duplicate, first garbage", "_twc_session=garbage; _twc_session=" + valid, false},
		{"only semicolons", strings.Repeat(";", 64<<10), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.Header.Set("Cookie", tt.header)
			_, err := s.Load(r)
			if tt.ok && err != nil {
				t.Errorf("got %v, want a session", err)
			}
			if !tt.ok && !errors.Is(err, ErrNoSession) {
				t.Errorf("got %v, want ErrNoSession", err)
			}
			// Garbage costs bounded memory: never proportional copies of
			// a 64 KiB header per request.
			if !tt.ok {
				if b := bytesPerLoad(s, r); b > 8<<10 {
					t.Errorf("Load allocates %d bytes per call on this input, want at most 8 KiB", b)
				}
			}
		})
	}
}

// bytesPerLoad measures the heap bytes one Load of r allocates.
func bytesPerLoad(s *Store, r *http.Request) uint64 {
	const n = 50
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range n {
		s.Load(r)
	}
	runtime.ReadMemStats(&after)
	return (after.TotalAlloc - before.TotalAlloc) / n
}

func TestKeyRotation(t *testing.T) {
	oldKey, newKey := testSecret('o'), testSecret('n')
	oldOnly := newTestStore(t, oldKey)
	both := newTestStore(t, newKey, oldKey)
	newOnly := newTestStore(t, newKey)

	sealedOld := saved(t, oldOnly, testSession(9000))
	if _, err := both.Load(sealedOld.request()); err != nil {
		t.Errorf("[new, old] loading an old cookie: got %v, want a session", err)
	}
	if _, err := newOnly.Load(sealedOld.request()); !errors.Is(err, ErrNoSession) {
		t.Errorf("[new] loading an old cookie: got %v, want ErrNoSession", err)
	}

	sealedBoth := saved(t, both, testSession(900))
	if _, err := newOnly.Load(sealedBoth.request()); err != nil {
		t.Errorf("[new] loading a cookie saved by [new, old]: got %v, want a session", err)
	}
	if _, err := oldOnly.Load(sealedBoth.request()); !errors.Is(err, ErrNoSession) {
		t.Errorf("[old] loading a cookie saved by [new, old]: got %v, want ErrNoSession", err)
	}
}
