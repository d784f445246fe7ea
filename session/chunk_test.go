package session

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

func TestSplitJoin(t *testing.T) {
	s := newTestStore(t)
	for _, n := range []int{0, 1, chunkSize, chunkSize + 1, 2 * chunkSize, 2*chunkSize + 1, maxJoined} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			v := strings.Repeat("A", n)
			parts, err := split(v)
			if err != nil {
				t.Fatal(err)
			}
			if want := max(1, (n+chunkSize-1)/chunkSize); len(parts) != want {
				t.Fatalf("got %d parts, want %d", len(parts), want)
			}
			h := http.Header{}
			for k, p := range parts {
				if len(p) > chunkSize+2 {
					t.Errorf("part %d: got %d bytes, want at most %d", k, len(p), chunkSize+2)
				}
				h.Add("Cookie", s.chunkNames[k]+"="+p)
			}
			c := s.scan(&http.Request{Header: h})
			got, err := c.join()
			if err != nil {
				t.Fatal(err)
			}
			if got != v {
				t.Errorf("got %d bytes back, want %d", len(got), len(v))
			}
		})
	}
	if _, err := split(strings.Repeat("A", maxJoined+1)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("got %v, want ErrTooLarge", err)
	}
}

func TestEachCookie(t *testing.T) {
	tests := []struct {
		name  string
		lines []string
		want  string
	}{
		{"empty", []string{""}, ""},
		{"one", []string{"a=1"}, "a=1;"},
		{"blanks", []string{"  a = 1 ;\tb=2;  "}, "a=1;b=2;"},
		{"quoted", []string{`a="1"; b="; c=""`}, `a=1;b=";c=;`},
		{"no equals", []string{"a; b=2; =3; c="}, "b=2;c=;"},
		{"equals in value", []string{"a=b=c"}, "a=b=c;"},
		{"several lines", []string{"a=1", "b=2; c=3"}, "a=1;b=2;c=3;"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got strings.Builder
			eachCookie(http.Header{"Cookie": tt.lines}, func(name, value string) {
				got.WriteString(name + "=" + value + ";")
			})
			if got.String() != tt.want {
				t.Errorf("got %q, want %q", got.String(), tt.want)
			}
		})
	}
}

func TestScanAllocs(t *testing.T) {
	s := newTestStore(t)
	r := &http.Request{Header: http.Header{"Cookie": {"a=1; _twc_session=2.x; b=2; _twc_session_1=y; _twc_session_flow_1=z"}}}
	if n := testing.AllocsPerRun(100, func() { s.scan(r) }); n != 0 {
		t.Errorf("scan: got %v allocs, want 0", n)
	}
	if n := testing.AllocsPerRun(100, func() { s.IsOwnCookie("_twc_session_flow_0123456789ab") }); n != 0 {
		t.Errorf("IsOwnCookie: got %v allocs, want 0", n)
	}
	r.Header.Set("Cookie", "a=1")
	if n := testing.AllocsPerRun(100, func() { s.Load(r) }); n != 0 {
		t.Errorf("Load without a session: got %v allocs, want 0", n)
	}
}

// FuzzJoinChunks feeds arbitrary Cookie headers to Load. It must never
// panic, and must return either ErrNoSession or one of the sessions the
// seeds were sealed from: the MAC leaves no third outcome.
func FuzzJoinChunks(f *testing.F) {
	s := newTestStore(f)
	sessions := []*Session{testSession(900), testSession(5000)}
	for _, sess := range sessions {
		f.Add(saved(f, s, sess).request().Header.Get("Cookie"))
	}
	f.Add("_twc_session=3.AAAA; _twc_session_1=BBBB; _twc_session_2=CCCC")
	f.Add("_twc_session=9.AAAA; _twc_session_1=; _twc_session_8=x")
	f.Add(`_twc_session="2."; _twc_session_1="`)
	f.Add("_twc_session=.; ;;=; _twc_session_0=1")
	f.Fuzz(func(t *testing.T, header string) {
		r := &http.Request{Header: http.Header{"Cookie": {header}}}
		got, err := s.Load(r)
		if err != nil {
			if !errors.Is(err, ErrNoSession) || got != nil {
				t.Fatalf("got %v, %v; want nil, ErrNoSession", got, err)
			}
			return
		}
		for _, want := range sessions {
			if sameSession(got, want) {
				return
			}
		}
		t.Fatalf("got a session that was never sealed: %+v", got)
	})
}
