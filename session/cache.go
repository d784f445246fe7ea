package session

import (
	"strings"
	"sync"
	"time"
)

// Bounds of the decode cache: entries live a minute, and at most
// cacheMaxEntries sessions (about 2.5 KiB each) are kept.
const (
	cacheTTL        = time.Minute
	cacheMaxEntries = 2048
)

// decodeCache remembers recently opened cookie values. A browser sends the
// same sealed value on every request until the session changes, so with
// the cache each value pays securecookie's base64, HMAC and AES once a
// minute instead of once per request. Only values that authenticated and
// decoded are kept, and a hit needs the exact same bytes, so the cache
// cannot make a forged or altered cookie valid. It can keep a cookie
// accepted for at most cacheTTL after its securecookie MaxAge ran out.
type decodeCache struct {
	now func() time.Time
	mu  sync.RWMutex
	m   map[string]cacheEntry
}

type cacheEntry struct {
	sess  *Session
	until time.Time
}

func newDecodeCache(now func() time.Time) *decodeCache {
	return &decodeCache{now: now, m: make(map[string]cacheEntry)}
}

func (c *decodeCache) get(value string) (*Session, bool) {
	c.mu.RLock()
	e, ok := c.m[value]
	c.mu.RUnlock()
	if !ok || !c.now().Before(e.until) {
		return nil, false
	}
	return e.sess, true
}

func (c *decodeCache) put(value string, sess *Session) {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= cacheMaxEntries {
		for k, e := range c.m {
			if !now.Before(e.until) {
				delete(c.m, k)
			}
		}
		if len(c.m) >= cacheMaxEntries {
			// More live sessions than entries: start over rather than
			// pay for an LRU on every hit. A miss only costs a decode.
			clear(c.m)
		}
	}
	// The value is a slice of the request's Cookie header; keep a copy,
	// not the whole header.
	c.m[strings.Clone(value)] = cacheEntry{sess: sess, until: now.Add(cacheTTL)}
}
