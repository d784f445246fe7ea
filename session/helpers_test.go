package session

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func testSecret(b byte) []byte { return bytes.Repeat([]byte{b}, minSecretLen) }

func newTestStore(t testing.TB, secrets ...[]byte) *Store {
	t.Helper()
	if len(secrets) == 0 {
		secrets = [][]byte{testSecret('a')}
	}
	s, err := NewStore(Options{Secrets: secrets})
	if err != nil {
		t.Fatalf("NewStore: %v", err)
	}
	return s
}

// fakeJWT returns a token-shaped string of about n bytes: three base64url
// segments like a compact JWS, which is what the ID token is.
func fakeJWT(n int) string {
	seg := func(n int, seed byte) string {
		b := make([]byte, n*3/4)
		for i := range b {
			b[i] = seed + byte(i*7)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	sig := seg(342, 3)
	hdr := seg(36, 1)
	return hdr + "." + seg(max(n-len(hdr)-len(sig)-2, 4), 2) + "." + sig
}

func testSession(tokenLen int) *Session {
	return &Session{
		Subject:      "alice",
		IDToken:      fakeJWT(tokenLen),
		RefreshToken: strings.Repeat("r", 64),
		Expiry:       time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC),
		Created:      time.Date(2030, 1, 2, 2, 4, 5, 0, time.UTC),
	}
}

// jar is a browser's cookies for one site, enough for these tests: it
// applies a response's Set-Cookie lines and builds the next request.
type jar map[string]string

func (j jar) apply(rec *httptest.ResponseRecorder) jar {
	for _, c := range rec.Result().Cookies() {
		if c.MaxAge < 0 {
			delete(j, c.Name)
		} else {
			j[c.Name] = c.Value
		}
	}
	return j
}

func (j jar) request() *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	for _, name := range slices.Sorted(maps.Keys(j)) {
		r.AddCookie(&http.Cookie{Name: name, Value: j[name]})
	}
	return r
}

func (j jar) clone() jar { return maps.Clone(j) }

// saved saves sess in a fresh response and returns the resulting jar.
func saved(t testing.TB, s *Store, sess *Session) jar {
	t.Helper()
	rec := httptest.NewRecorder()
	if err := s.Save(rec, httptest.NewRequest(http.MethodGet, "/", nil), sess); err != nil {
		t.Fatalf("Save: %v", err)
	}
	return jar{}.apply(rec)
}

// setCookies returns the response's Set-Cookie lines by cookie name.
func setCookies(rec *httptest.ResponseRecorder) map[string]string {
	m := make(map[string]string)
	for _, line := range rec.Result().Header["Set-Cookie"] {
		name, _, _ := strings.Cut(line, "=")
		m[name] = line
	}
	return m
}

// sealAt seals plain as securecookie would under secret, but with the given
// timestamp, which securecookie does not let callers choose. It also pins
// the key derivation: a change to deriveKeys breaks every existing cookie.
func sealAt(t testing.TB, secret []byte, name string, plain []byte, ts int64) string {
	t.Helper()
	hashKey, blockKey, err := deriveKeys(secret)
	if err != nil {
		t.Fatal(err)
	}
	block, err := aes.NewCipher(blockKey)
	if err != nil {
		t.Fatal(err)
	}
	iv := make([]byte, aes.BlockSize)
	rand.Read(iv)
	ct := make([]byte, len(plain))
	cipher.NewCTR(block, iv).XORKeyStream(ct, plain)
	enc := base64.URLEncoding.EncodeToString(append(iv, ct...))
	body := strconv.FormatInt(ts, 10) + "|" + enc
	mac := hmac.New(sha256.New, hashKey)
	mac.Write([]byte(name + "|" + body))
	return base64.URLEncoding.EncodeToString(mac.Sum([]byte(body + "|")))
}
