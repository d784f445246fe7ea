package session

import (
	"bytes"
	"encoding/gob"
	"encoding/json"
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

func benchmarkLoad(b *testing.B, tokenLen int, cached bool) {
	s := newTestStore(b)
	r := benchRequest(b, s, testSession(tokenLen))
	if _, err := s.Load(r); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if !cached {
			clear(s.cache.m)
		}
		if _, err := s.Load(r); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLoad is the proxy's hot path: one cookie holding a ~900-byte
// RS256 ID token and a 64-byte refresh token, as every request after the
// first of a minute sees it (decode cache hit).
func BenchmarkLoad(b *testing.B) { benchmarkLoad(b, 900, true) }

// BenchmarkLoadDecode is the same cookie opened from scratch (securecookie
// base64, HMAC-SHA-256, AES-CTR, then the binary layout): the first request
// of a minute, or every request without the cache.
func BenchmarkLoadDecode(b *testing.B) { benchmarkLoad(b, 900, false) }

// BenchmarkLoadChunked loads a 9 KB ID token from 5 cookies.
func BenchmarkLoadChunked(b *testing.B) { benchmarkLoad(b, 9000, true) }

// BenchmarkLoadChunkedDecode opens the 5 cookies from scratch.
func BenchmarkLoadChunkedDecode(b *testing.B) { benchmarkLoad(b, 9000, false) }

// BenchmarkLoadRotated loads a cookie sealed with the older of two keys, which
// costs a failed MAC check first. The decode cache is emptied each time, or
// every Load after the first would be a cache hit and no MAC check at all.
func BenchmarkLoadRotated(b *testing.B) {
	old := newTestStore(b, testSecret('o'))
	s := newTestStore(b, testSecret('n'), testSecret('o'))
	r := benchRequest(b, old, testSession(900))
	b.ReportAllocs()
	for b.Loop() {
		clear(s.cache.m)
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

// BenchmarkSessionEncoding compares serializations of a session inside
// securecookie: gorilla's default gob, JSON, and the fixed binary layout
// used here (codec.go). Encode+decode of the plaintext; the sealing cost
// is the same for all three except for the length it is applied to.
func BenchmarkSessionEncoding(b *testing.B) {
	sess := testSession(900)
	type jsonSession struct {
		Sub, ID, RT string
		Exp, Cr     int64
	}
	b.Run("binary", func(b *testing.B) {
		b.ReportAllocs()
		var n int
		for b.Loop() {
			p, err := encodeSession(nil, sess)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := decodeSession(p); err != nil {
				b.Fatal(err)
			}
			n = len(p)
		}
		b.ReportMetric(float64(n), "bytes")
	})
	b.Run("json", func(b *testing.B) {
		b.ReportAllocs()
		var n int
		for b.Loop() {
			p, err := json.Marshal(jsonSession{sess.Subject, sess.IDToken, sess.RefreshToken, sess.Expiry.Unix(), sess.Created.Unix()})
			if err != nil {
				b.Fatal(err)
			}
			var out jsonSession
			if err := json.Unmarshal(p, &out); err != nil {
				b.Fatal(err)
			}
			n = len(p)
		}
		b.ReportMetric(float64(n), "bytes")
	})
	b.Run("gob", func(b *testing.B) {
		b.ReportAllocs()
		var n int
		for b.Loop() {
			var buf bytes.Buffer
			if err := gob.NewEncoder(&buf).Encode(sess); err != nil {
				b.Fatal(err)
			}
			n = buf.Len()
			var out Session
			if err := gob.NewDecoder(&buf).Decode(&out); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(n), "bytes")
	})
}
