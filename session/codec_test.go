package session

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestSessionCodecRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		sess Session
	}{
		{"zero", Session{}},
		{"typical", *testSession(900)},
		{"unicode and binary", Session{Subject: "jörg\x00\xff", IDToken: "a.b.c", Expiry: time.Unix(-1, 0).UTC()}},
		{"field at limit", Session{IDToken: strings.Repeat("x", maxField), Created: time.Unix(1<<62, 0).UTC()}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := encodeSession(nil, &tt.sess)
			if err != nil {
				t.Fatal(err)
			}
			if limit := encodedSessionLen(&tt.sess); len(b) > limit {
				t.Errorf("got %d bytes, want at most encodedSessionLen %d", len(b), limit)
			}
			got, err := decodeSession(b)
			if err != nil {
				t.Fatal(err)
			}
			if !sameSession(got, &tt.sess) {
				t.Errorf("got %+v, want %+v", got, tt.sess)
			}
		})
	}
}

func TestSessionCodecDropsSubseconds(t *testing.T) {
	in := Session{Expiry: time.Date(2030, 1, 1, 0, 0, 0, 999, time.FixedZone("X", 3600))}
	b, _ := encodeSession(nil, &in)
	got, err := decodeSession(b)
	if err != nil {
		t.Fatal(err)
	}
	if want := in.Expiry.Truncate(time.Second); !got.Expiry.Equal(want) {
		t.Errorf("got %v, want %v", got.Expiry, want)
	}
}

func TestDecodeSessionRejects(t *testing.T) {
	valid, _ := encodeSession(nil, &Session{Subject: "alice", IDToken: "a.b.c", RefreshToken: "r"})
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	times := make([]byte, 16)
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, errVersion},
		{"version 0", cat([]byte{0}, valid[1:]), errVersion},
		{"flow version", cat([]byte{flowVersion}, valid[1:]), errVersion},
		{"version only", []byte{sessionVersion}, errTruncated},
		{"trailing byte", cat(valid, []byte{0}), errTrailing},
		{"length past end", cat([]byte{sessionVersion, 100}, []byte("short")), errTruncated},
		{"over field limit", cat([]byte{sessionVersion}, binary.AppendUvarint(nil, maxField+1), make([]byte, maxField+1), []byte{0, 0}, times), errFieldLimit},
		{"huge length", cat([]byte{sessionVersion}, binary.AppendUvarint(nil, 1<<63)), errFieldLimit},
		{"non-minimal length", cat([]byte{sessionVersion, 0x80, 0x00, 0, 0}, times), errNonMinimal},
		{"overflowing length", cat([]byte{sessionVersion}, bytes.Repeat([]byte{0xff}, 10), []byte{1}), errNonMinimal},
		{"unterminated length", []byte{sessionVersion, 0x80}, errTruncated},
		{"time truncated", cat([]byte{sessionVersion, 0, 0, 0}, times[:15]), errTruncated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeSession(tt.in)
			if !errors.Is(err, tt.want) {
				t.Errorf("got %+v, %v; want %v", got, err, tt.want)
			}
		})
	}
	for i := range len(valid) {
		if _, err := decodeSession(valid[:i]); err == nil {
			t.Errorf("prefix of %d bytes: got no error", i)
		}
	}
}

func TestUvarint(t *testing.T) {
	for _, v := range []uint64{0, 1, 127, 128, 300, maxField, 1<<63 - 1, 1 << 63, 1<<64 - 1} {
		b := binary.AppendUvarint(nil, v)
		got, w := uvarint(string(b))
		if got != v || w != len(b) {
			t.Errorf("uvarint(%x): got %d, %d; want %d, %d", b, got, w, v, len(b))
		}
	}
}

func TestFlowCodecRoundTrip(t *testing.T) {
	want := testFlow("st", time.Unix(1900000000, 0).UTC())
	b, err := encodeFlow(want, want.Created)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeFlow(b)
	if err != nil {
		t.Fatal(err)
	}
	if *got != *want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if _, err := decodeSession(b); err == nil {
		t.Error("decodeSession accepted a flow")
	}
}

// FuzzDecodeSession checks that decodeSession never panics, that whatever it
// accepts re-encodes to the same bytes (one encoding per session), and that
// any session built from the input survives a round trip.
func FuzzDecodeSession(f *testing.F) {
	for _, s := range []*Session{{}, testSession(100), {Subject: "x", RefreshToken: "y", Expiry: time.Unix(-5, 0)}} {
		b, _ := encodeSession(nil, s)
		f.Add(b)
	}
	f.Add([]byte{sessionVersion, 0x80, 0x00})
	f.Add(encodeV1(testSession(100)))
	f.Add([]byte{flowVersion})
	f.Fuzz(func(t *testing.T, data []byte) {
		if s, err := decodeSession(data); err == nil {
			again, err := encodeSession(nil, s)
			if err != nil {
				t.Fatalf("re-encode: %v", err)
			}
			// The current version has one encoding per session; version 1
			// (still read) re-encodes as the current one, to the same session.
			if data[0] == sessionVersion && !bytes.Equal(again, data) {
				t.Fatalf("re-encoded %x, want %x", again, data)
			}
			if back, err := decodeSession(again); err != nil || !sameSession(back, s) {
				t.Fatalf("round trip of a decoded session: %+v, %v; want %+v", back, err, s)
			}
		}
		if fl, err := decodeFlow(data); err == nil {
			again, err := encodeFlow(fl, fl.Created)
			if err != nil || !bytes.Equal(again, data) {
				t.Fatalf("re-encoded flow %x, %v; want %x", again, err, data)
			}
		}

		var sec int64
		if len(data) >= 8 {
			sec = int64(binary.BigEndian.Uint64(data))
		}
		in := Session{
			Subject:      string(data[:len(data)/3]),
			IDToken:      string(data),
			RefreshToken: string(data[len(data)/2:]),
			Expiry:       time.Unix(sec, 0).UTC(),
			Created:      time.Unix(-sec, 0).UTC(),
		}
		b, err := encodeSession(nil, &in)
		if len(data) > maxField {
			if !errors.Is(err, ErrTooLarge) {
				t.Fatalf("got %v, want ErrTooLarge", err)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		out, err := decodeSession(b)
		if err != nil {
			t.Fatalf("decode(encode(x)): %v", err)
		}
		if !sameSession(out, &in) {
			t.Fatalf("got %+v, want %+v", out, in)
		}
	})
}

// encodeV1 writes the version 1 layout, which cookies sealed by earlier
// releases carry.
func encodeV1(s *Session) []byte {
	b := []byte{sessionV1}
	b = appendString(b, s.Subject)
	b = appendString(b, s.IDToken)
	b = appendString(b, s.RefreshToken)
	b = appendTime(b, s.Expiry)
	return appendTime(b, s.Created)
}

func TestDecodeVersion1(t *testing.T) {
	want := testSession(900)
	got, err := decodeSession(encodeV1(want))
	if err != nil || !sameSession(got, want) {
		t.Fatalf("got %+v, %v; want %+v", got, err, want)
	}
}

func TestJWSTokensAreStoredDecoded(t *testing.T) {
	sess := testSession(900)
	b, err := encodeSession(nil, sess)
	if err != nil {
		t.Fatal(err)
	}
	if v1 := encodeV1(sess); len(b) > len(v1)-200 {
		t.Errorf("encoded %d bytes, want at least 200 fewer than version 1's %d", len(b), len(v1))
	}
	for _, tok := range []string{"a.b.c", "not a jws", "x.y", "eyJhbGciOiJub25lIn0.e30.", "YQ.YQ.YR", "a.b.c.d", ""} {
		in := &Session{Subject: "s", IDToken: tok, RefreshToken: tok}
		b, err := encodeSession(nil, in)
		if err != nil {
			t.Fatal(err)
		}
		out, err := decodeSession(b)
		if err != nil || !sameSession(out, in) {
			t.Errorf("token %q: got %+v, %v", tok, out, err)
		}
	}
}

// sameSession compares what a session holds, not how it was built: a
// decoded session carries its Authorization value ready (tokenHeader).
func sameSession(a, b *Session) bool {
	x, y := *a, *b
	x.tokenHeader, y.tokenHeader = "", ""
	return x == y
}

func TestTokenHeader(t *testing.T) {
	want := testSession(900)
	b, err := encodeSession(nil, want)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeSession(b)
	if err != nil {
		t.Fatal(err)
	}
	if h := got.TokenHeader(); h != "Token "+want.IDToken {
		t.Fatalf("decoded: TokenHeader() = %.20q..., want %.20q...", h, "Token "+want.IDToken)
	}
	if got.tokenHeader == "" {
		t.Error("a decoded session should carry its header ready-made")
	}
	// A session whose ID token was replaced after it was opened must not
	// present the old one.
	got.IDToken = "a.b.c"
	if h := got.TokenHeader(); h != "Token a.b.c" {
		t.Errorf("after replacing IDToken: TokenHeader() = %q, want %q", h, "Token a.b.c")
	}
	fresh := &Session{IDToken: "x.y.z"}
	if h := fresh.TokenHeader(); h != "Token x.y.z" {
		t.Errorf("new session: TokenHeader() = %q", h)
	}
	raw := &Session{IDToken: "opaque"} // stored with the raw tag
	b, err = encodeSession(nil, raw)
	if err != nil {
		t.Fatal(err)
	}
	if got, err = decodeSession(b); err != nil || got.TokenHeader() != "Token opaque" || got.IDToken != "opaque" {
		t.Errorf("raw token: got %+v, %v", got, err)
	}
}
