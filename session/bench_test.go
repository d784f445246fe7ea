package session

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// benchRequest returns a request carrying sess among a few other cookies, as
// a browser on the TWC site would send it.
func benchRequest(b *testing.B, s *Store, sess *Session) *http.Request {
	j := saved(b, s, sess)
	j["twc-rest-session-id"] = "0123456789abcdef0123456789abcdef"
	j["JSESSIONID"] = "ABCDEF0123456789ABCDEF0123456789"
	return j.request()
}

func benchmarkLoad(b *testing.B, tokenLen int) {
	s := newTestStore(b)
	r := benchRequest(b, s, testSession(tokenLen))
	if _, err := s.Load(r); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Load(r); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLoad is the proxy's hot path: one cookie holding a ~900-byte
// RS256 ID token and a 64-byte refresh token.
func BenchmarkLoad(b *testing.B) { benchmarkLoad(b, 900) }

// BenchmarkLoadChunked loads a 9 KB ID token from 5 cookies.
func BenchmarkLoadChunked(b *testing.B) { benchmarkLoad(b, 9000) }

// BenchmarkLoadRotated loads a cookie sealed with the older of two keys, which
// costs a failed MAC check first.
func BenchmarkLoadRotated(b *testing.B) {
	old := newTestStore(b, testSecret('o'))
	s := newTestStore(b, testSecret('n'), testSecret('o'))
	r := benchRequest(b, old, testSession(900))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Load(r); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkLoadNoSession(b *testing.B) {
	s := newTestStore(b)
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.Header.Set("Cookie", "twc-rest-session-id=0123456789abcdef; JSESSIONID=ABCDEF0123456789")
	b.ReportAllocs()
	for b.Loop() {
		s.Load(r)
	}
}

func BenchmarkLoadHostile(b *testing.B) {
	s := newTestStore(b)
	var many strings.Builder
	for i := range 500 {
		fmt.Fprintf(&many, "c%d=%s; ", i, strings.Repeat("v", 120))
	}
	for _, tt := range []struct{ name, header string }{
		{"64KiB value", "_twc_session=" + strings.Repeat("A", 64<<10)},
		{"3800B garbage", "_twc_session=" + strings.Repeat("A", chunkSize)},
		{"500 cookies", many.String()},
	} {
		b.Run(tt.name, func(b *testing.B) {
			r := &http.Request{Header: http.Header{"Cookie": {tt.header}}}
			b.ReportAllocs()
			for b.Loop() {
				s.Load(r)
			}
		})
	}
}

func BenchmarkSave(b *testing.B) {
	s := newTestStore(b)
	sess := testSession(900)
	r := benchRequest(b, s, sess)
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Save(discard{}, r, sess); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkIsOwnCookie(b *testing.B) {
	s := newTestStore(b)
	names := []string{"_twc_session", "_twc_session_3", "_twc_session_flow_0123456789ab", "twc-rest-session-id", "JSESSIONID"}
	b.ReportAllocs()
	for b.Loop() {
		for _, n := range names {
			s.IsOwnCookie(n)
		}
	}
}

// discard is a ResponseWriter with a fresh header per call, so that Save's
// cost is not hidden by, or mixed with, a growing recorder.
type discard struct{}

func (discard) Header() http.Header         { return http.Header{} }
func (discard) Write(p []byte) (int, error) { return len(p), nil }
func (discard) WriteHeader(int)             {}
