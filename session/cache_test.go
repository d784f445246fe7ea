package session

import (
	"errors"
	"sync"
	"testing"
	"time"
)

func TestDecodeCache(t *testing.T) {
	s := newTestStore(t)
	var mu sync.Mutex
	now := time.Now()
	s.cache.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }

	good := saved(t, s, testSession(900))
	v := good["_twc_session"]
	first, err := s.Load(good.request())
	if err != nil {
		t.Fatal(err)
	}
	// The second load of the same bytes is the cached session.
	second, err := s.Load(good.request())
	if err != nil || second != first {
		t.Fatalf("second Load = %p, %v; want the cached %p", second, err, first)
	}
	// A cached value does not make a neighbour of it valid.
	for _, bad := range []string{v[:len(v)-1], v + "A", "A" + v[1:], v[:20] + flipByte(v[20]) + v[21:]} {
		if _, err := s.Load(jar{"_twc_session": bad}.request()); !errors.Is(err, ErrNoSession) {
			t.Errorf("altered cookie after a cached one: got %v, want ErrNoSession", err)
		}
	}
	// Entries expire: after the TTL the value is decoded again.
	advance(cacheTTL + time.Second)
	if _, ok := s.cache.get(v); ok {
		t.Fatal("cache entry outlived its TTL")
	}
	third, err := s.Load(good.request())
	if err != nil || third == first {
		t.Fatalf("Load after TTL = %p, %v; want a freshly decoded session", third, err)
	}
}

func TestDecodeCacheIsBounded(t *testing.T) {
	c := newDecodeCache(time.Now)
	for i := range cacheMaxEntries * 3 {
		c.put(string(rune('a'+i%26))+time.Duration(i).String(), &Session{})
		if len(c.m) > cacheMaxEntries {
			t.Fatalf("cache holds %d entries, bound is %d", len(c.m), cacheMaxEntries)
		}
	}
}

func flipByte(b byte) string {
	if b == 'A' {
		return "B"
	}
	return "A"
}
