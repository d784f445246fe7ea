package session

import (
	"fmt"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
)

// Browsers keep at most about 4096 bytes of name and value per cookie
// (RFC 6265 section 6.1 sets that as the minimum they must support, and it is
// also what they enforce), and an encrypted RS256 ID token with a refresh
// token can outgrow one cookie. A value longer than chunkSize is therefore
// split across the session cookie and chunk cookies named <name>_1 ...
// <name>_<n-1>; the session cookie then holds "<n>.<chunk 0>". The '.' never
// occurs in securecookie's base64url output, so a value without one is a
// whole, single-cookie value.
//
// Chunks are not authenticated one by one: the joined value is, by
// securecookie's MAC, so missing, reordered or mixed chunks are caught there.
const (
	chunkSize = 3800
	maxChunks = 8
	maxJoined = maxChunks * chunkSize
)

// Reasons Load gives for ErrNoSession, built once: every request without a
// session takes one of these paths, and they cost no allocation.
var (
	errNoCookie     = fmt.Errorf("%w: no cookie", ErrNoSession)
	errTooLong      = fmt.Errorf("%w: cookie value too long", ErrNoSession)
	errBadCount     = fmt.Errorf("%w: bad chunk count", ErrNoSession)
	errMissingChunk = fmt.Errorf("%w: chunk missing", ErrNoSession)
)

// carried is what one request holds of the session cookie.
type carried struct {
	head    string
	hasHead bool
	chunks  [maxChunks]string // chunks[k] is cookie <name>_k; chunks[0] is unused
	present uint8             // bit k is set when <name>_k was carried
}

// carriedChunk reports whether the request carried chunk cookie k.
func (c *carried) carriedChunk(k int) bool { return c.present&(1<<k) != 0 }

// scan reads the session cookie and its chunks from r in one pass over the
// Cookie header, without allocating: r.Cookies would build a *http.Cookie for
// every cookie of the site, on every request. When a name repeats (a stale
// cookie under another Path or Domain), the first one wins, as with
// r.Cookie.
func (s *Store) scan(r *http.Request) carried {
	var c carried
	if r == nil {
		return c
	}
	eachCookie(r.Header, func(name, value string) {
		if name == s.name {
			if !c.hasHead {
				c.head, c.hasHead = value, true
			}
			return
		}
		if k := s.chunkIndex(name); k > 0 && !c.carriedChunk(k) {
			c.chunks[k] = value
			c.present |= 1 << k
		}
	})
	return c
}

// chunkIndex returns k when name is chunk cookie <name>_k, 1 <= k < maxChunks,
// and 0 otherwise.
func (s *Store) chunkIndex(name string) int {
	if len(name) != len(s.name)+2 || name[len(s.name)] != '_' || !strings.HasPrefix(name, s.name) {
		return 0
	}
	if d := name[len(name)-1]; d >= '1' && d < '0'+maxChunks {
		return int(d - '0')
	}
	return 0
}

// join reassembles the securecookie value from the carried cookies. It checks
// only shape and size; authenticity is the MAC's job.
func (c *carried) join() (string, error) {
	if !c.hasHead {
		return "", errNoCookie
	}
	dot := strings.IndexByte(c.head, '.')
	if dot < 0 {
		if len(c.head) > chunkSize {
			return "", errTooLong
		}
		return c.head, nil
	}
	if dot != 1 || c.head[0] < '2' || c.head[0] > '0'+maxChunks {
		return "", errBadCount
	}
	n := int(c.head[0] - '0')
	first := c.head[2:]
	if len(first) > chunkSize {
		return "", errTooLong
	}
	total := len(first)
	for k := 1; k < n; k++ {
		if !c.carriedChunk(k) || c.chunks[k] == "" {
			return "", errMissingChunk
		}
		if len(c.chunks[k]) > chunkSize {
			return "", errTooLong
		}
		total += len(c.chunks[k])
	}
	var b strings.Builder
	b.Grow(total)
	b.WriteString(first)
	for k := 1; k < n; k++ {
		b.WriteString(c.chunks[k])
	}
	return b.String(), nil
}

// split cuts a securecookie value into the cookie values to write, the first
// being the session cookie's.
func split(v string) ([]string, error) {
	if len(v) <= chunkSize {
		return []string{v}, nil
	}
	if len(v) > maxJoined {
		return nil, fmt.Errorf("%w: %d bytes encoded, limit %d", ErrTooLarge, len(v), maxJoined)
	}
	n := (len(v) + chunkSize - 1) / chunkSize
	parts := make([]string, n)
	for k := range parts {
		end := min((k+1)*chunkSize, len(v))
		parts[k] = v[k*chunkSize : end]
	}
	parts[0] = strconv.Itoa(n) + "." + parts[0]
	return parts, nil
}

// eachCookie calls fn with every name=value pair of h's Cookie lines, parsed
// as net/http does: pairs split on ';', blanks trimmed, one pair of double
// quotes removed from the value, pairs without '=' skipped. The name and
// value are substrings of the header.
func eachCookie(h http.Header, fn func(name, value string)) {
	for _, line := range h["Cookie"] {
		for line != "" {
			var part string
			part, line, _ = strings.Cut(line, ";")
			name, value, ok := strings.Cut(part, "=")
			if !ok {
				continue
			}
			name = textproto.TrimString(name)
			if name == "" {
				continue
			}
			value = textproto.TrimString(value)
			if len(value) > 1 && value[0] == '"' && value[len(value)-1] == '"' {
				value = value[1 : len(value)-1]
			}
			fn(name, value)
		}
	}
}
