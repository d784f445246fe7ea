package session

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"
)

// The plaintext inside a session cookie is a fixed binary layout rather than
// gob or JSON: it is smaller (every byte is paid twice over, once by AES-CTR's
// IV and once more by securecookie's double base64), it decodes with two
// allocations, and a decoder this small can be fuzzed to exhaustion.
//
// Version 1 of a Session:
//
//	version       byte (sessionVersion)
//	subject       uvarint length, bytes
//	id token      uvarint length, bytes
//	refresh token uvarint length, bytes
//	expiry        int64 big-endian unix seconds
//	created       int64 big-endian unix seconds
//
// Version 3, written since: the same, but each token is a tagged field:
//
//	tag 0 (raw)   uvarint length, bytes
//	tag 1 (JWS)   header, payload, signature: each uvarint length, the
//	              base64url-decoded bytes
//
// A compact JWS (the ID token, and TWC's refresh token if it is one) is
// stored decoded, which saves a quarter of its bytes; after securecookie's
// double base64 that is about 230 bytes less Cookie header for a TWC ID
// token on every request. Version 1 is still read.
//
// Decoding is strict, so every accepted input has exactly one encoding:
// lengths must be minimal uvarints, no field may exceed maxField, a raw
// token must not be one that tag 1 would store, and nothing may follow the
// last field.
const (
	sessionV1      = 1
	flowVersion    = 2 // see flow.go; distinct so one layout never parses as the other
	sessionVersion = 3

	tokenRaw = 0
	tokenJWS = 1

	// maxField bounds each string. A 9 KB ID token is already unusually
	// large, and anything past 16 KiB would not fit in maxChunks cookies.
	maxField = 16 << 10
)

var (
	errVersion    = errors.New("unknown version")
	errTruncated  = errors.New("truncated")
	errFieldLimit = errors.New("field too long")
	errNonMinimal = errors.New("non-minimal length")
	errTrailing   = errors.New("trailing bytes")
)

// encodeSession appends the binary form of s to dst. Times keep only whole
// seconds, which is all a JWT's exp carries anyway.
func encodeSession(dst []byte, s *Session) ([]byte, error) {
	if err := checkFields(s.Subject, s.IDToken, s.RefreshToken); err != nil {
		return nil, err
	}
	dst = append(dst, sessionVersion)
	dst = appendString(dst, s.Subject)
	dst = appendToken(dst, s.IDToken)
	dst = appendToken(dst, s.RefreshToken)
	dst = appendTime(dst, s.Expiry)
	dst = appendTime(dst, s.Created)
	return dst, nil
}

// encodedSessionLen is an upper bound of len(encodeSession(nil, s)), so that
// Save allocates the plaintext once.
func encodedSessionLen(s *Session) int {
	return 1 + 2 + 7*binary.MaxVarintLen64 + len(s.Subject) + len(s.IDToken) + len(s.RefreshToken) + 2*8
}

// decodeSession parses the output of encodeSession.
func decodeSession(b []byte) (*Session, error) {
	if len(b) == 0 || b[0] != sessionVersion && b[0] != sessionV1 {
		return nil, errVersion
	}
	d := decoder{buf: string(b[1:])}
	s := &Session{Subject: d.string()}
	if b[0] == sessionV1 {
		s.IDToken, s.RefreshToken = d.string(), d.string()
	} else {
		// The ID token is rebuilt behind "Token ", so that the
		// Authorization value is ready for every request that reuses
		// this decoded session (see TokenHeader).
		s.tokenHeader = d.token(tokenScheme)
		s.IDToken = s.tokenHeader[len(tokenScheme):]
		s.RefreshToken = d.token("")
	}
	s.Expiry, s.Created = d.time(), d.time()
	if err := d.finish(); err != nil {
		return nil, err
	}
	return s, nil
}

// checkFields reports the first string too long to encode, as ErrTooLarge:
// encoding must refuse what decoding would reject, or a Save would succeed
// and every following Load would fail.
func checkFields(fields ...string) error {
	for _, f := range fields {
		if len(f) > maxField {
			return fmt.Errorf("%w: field of %d bytes, limit %d", ErrTooLarge, len(f), maxField)
		}
	}
	return nil
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// jwsSegments returns the decoded segments of a compact JWS, and false when
// tok is not one that re-encodes to exactly the same string.
func jwsSegments(tok string) (seg [3][]byte, ok bool) {
	parts := strings.SplitN(tok, ".", 4)
	if len(parts) != 3 {
		return seg, false
	}
	for i, p := range parts {
		b, err := b64.DecodeString(p)
		// The decoder skips \r and \n; a segment holding them would not
		// come back byte for byte.
		if err != nil || b64.EncodedLen(len(b)) != len(p) {
			return seg, false
		}
		seg[i] = b
	}
	return seg, true
}

// b64 is strict so that every segment has one encoding.
var b64 = base64.RawURLEncoding.Strict()

func appendToken(dst []byte, tok string) []byte {
	seg, ok := jwsSegments(tok)
	if !ok {
		return appendString(append(dst, tokenRaw), tok)
	}
	dst = append(dst, tokenJWS)
	for _, b := range seg {
		dst = appendString(dst, string(b))
	}
	return dst
}

func appendTime(dst []byte, t time.Time) []byte {
	return binary.BigEndian.AppendUint64(dst, uint64(t.Unix()))
}

// decoder reads the fields of the layout above. It holds the input as one
// string, converted once, so that every string field is a substring of it
// rather than an allocation of its own; Load runs on every proxied request.
// The first error sticks and later reads return zero values.
type decoder struct {
	buf string
	off int
	err error
}

func (d *decoder) string() string {
	if d.err != nil {
		return ""
	}
	n, w := uvarint(d.buf[d.off:])
	switch {
	case w == 0:
		d.err = errTruncated
	case w < 0:
		d.err = errNonMinimal
	case n > maxField:
		d.err = errFieldLimit
	case n > uint64(len(d.buf)-d.off-w):
		d.err = errTruncated
	}
	if d.err != nil {
		return ""
	}
	start := d.off + w
	d.off = start + int(n)
	return d.buf[start:d.off]
}

// token reads a tagged token field (version 3) and returns it behind
// prefix; on an error, prefix alone (the error sticks in d.err).
func (d *decoder) token(prefix string) string {
	if d.err != nil {
		return prefix
	}
	if d.off >= len(d.buf) {
		d.err = errTruncated
		return prefix
	}
	tag := d.buf[d.off]
	d.off++
	switch tag {
	case tokenRaw:
		s := d.string()
		if _, ok := jwsSegments(s); ok && d.err == nil {
			d.err = errNonMinimal // tag 1 would have stored it
		}
		if prefix == "" {
			return s // a substring of the input: no allocation
		}
		return prefix + s
	case tokenJWS:
		h, p, sig := d.string(), d.string(), d.string()
		if d.err != nil {
			return prefix
		}
		n := b64.EncodedLen(len(h)) + b64.EncodedLen(len(p)) + b64.EncodedLen(len(sig)) + 2
		if n > maxField {
			d.err = errFieldLimit
			return prefix
		}
		out := make([]byte, 0, len(prefix)+n)
		out = append(out, prefix...)
		out = b64.AppendEncode(out, []byte(h))
		out = append(out, '.')
		out = b64.AppendEncode(out, []byte(p))
		out = append(out, '.')
		out = b64.AppendEncode(out, []byte(sig))
		return string(out)
	default:
		d.err = errVersion
		return prefix
	}
}

func (d *decoder) time() time.Time {
	if d.err != nil {
		return time.Time{}
	}
	if len(d.buf)-d.off < 8 {
		d.err = errTruncated
		return time.Time{}
	}
	b := d.buf[d.off : d.off+8]
	d.off += 8
	sec := int64(uint64(b[0])<<56 | uint64(b[1])<<48 | uint64(b[2])<<40 | uint64(b[3])<<32 |
		uint64(b[4])<<24 | uint64(b[5])<<16 | uint64(b[6])<<8 | uint64(b[7]))
	// UTC, so that the zero Time survives a round trip as the zero Time.
	return time.Unix(sec, 0).UTC()
}

func (d *decoder) finish() error {
	if d.err == nil && d.off != len(d.buf) {
		d.err = errTrailing
	}
	return d.err
}

// uvarint is binary.Uvarint for a string. It returns w == 0 when s ends
// early and w < 0 on overflow or on a non-minimal encoding (a trailing zero
// byte), so that each length has exactly one accepted form.
func uvarint(s string) (v uint64, w int) {
	var shift uint
	for i := 0; i < len(s) && i < binary.MaxVarintLen64; i++ {
		c := s[i]
		if c < 0x80 {
			if i == binary.MaxVarintLen64-1 && c > 1 {
				return 0, -1 // overflow
			}
			if c == 0 && i > 0 {
				return 0, -1 // non-minimal
			}
			return v | uint64(c)<<shift, i + 1
		}
		v |= uint64(c&0x7f) << shift
		shift += 7
	}
	if len(s) >= binary.MaxVarintLen64 {
		return 0, -1 // overflow
	}
	return 0, 0
}
