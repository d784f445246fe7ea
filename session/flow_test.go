package session

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

func testFlow(state string, created time.Time) *Flow {
	return &Flow{
		State:    state,
		Nonce:    "nonce-" + state,
		Verifier: strings.Repeat("v", 43),
		ReturnTo: "/projects?x=1",
		Created:  created,
	}
}

// savedFlow saves f on top of j and returns the response.
func savedFlow(t *testing.T, s *Store, j jar, f *Flow) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	if err := s.SaveFlow(rec, j.request(), f); err != nil {
		t.Fatalf("SaveFlow: %v", err)
	}
	j.apply(rec)
	return rec
}

func TestFlowRoundTrip(t *testing.T) {
	s := newTestStore(t)
	want := testFlow("state-1", time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
	j := jar{}
	rec := savedFlow(t, s, j, want)

	line := rec.Result().Header.Get("Set-Cookie")
	if !regexp.MustCompile(`^_twc_session_flow_[0-9a-f]{12}=`).MatchString(line) {
		t.Errorf("got %q, want a _twc_session_flow_<12 hex> cookie", line)
	}
	for _, attr := range []string{"; Max-Age=600", "; HttpOnly", "; SameSite=Lax", "; Path=/"} {
		if !strings.Contains(line, attr) {
			t.Errorf("got %q, want it to contain %q", line, attr)
		}
	}
	name, _, _ := strings.Cut(line, "=")
	if !s.IsOwnCookie(name) {
		t.Errorf("IsOwnCookie(%q) = false, want true", name)
	}

	rec = httptest.NewRecorder()
	got, err := s.TakeFlow(rec, j.request(), "state-1")
	if err != nil {
		t.Fatal(err)
	}
	if *got != *want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if exp := setCookies(rec)[name]; !strings.Contains(exp, "Max-Age=0") {
		t.Errorf("got Set-Cookie %q after TakeFlow, want %s expired", exp, name)
	}

	j.apply(rec)
	if _, err := s.TakeFlow(httptest.NewRecorder(), j.request(), "state-1"); !errors.Is(err, ErrNoFlow) {
		t.Errorf("second TakeFlow: got %v, want ErrNoFlow", err)
	}
}

func TestFlowZeroCreatedIsNow(t *testing.T) {
	s := newTestStore(t)
	j := jar{}
	before := time.Now().Add(-time.Second)
	savedFlow(t, s, j, &Flow{State: "s"})
	f, err := s.TakeFlow(httptest.NewRecorder(), j.request(), "s")
	if err != nil {
		t.Fatal(err)
	}
	if f.Created.Before(before) || f.Created.After(time.Now()) {
		t.Errorf("got Created %v, want about now", f.Created)
	}
}

func TestTakeFlowRejects(t *testing.T) {
	secret := testSecret('a')
	s := newTestStore(t, secret)
	j := jar{}
	savedFlow(t, s, j, testFlow("state-a", time.Now()))
	nameA, nameB := s.flowName("state-a"), s.flowName("state-b")
	sess := saved(t, s, testSession(900))
	plain, err := encodeFlow(testFlow("state-b", time.Now()), time.Now())
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name  string
		jar   jar
		state string
	}{
		{"no cookies", jar{}, "state-a"},
		{"empty state", j, ""},
		{"wrong state", j, "state-b"},
		{"renamed to another state", jar{nameB: j[nameA]}, "state-b"},
		{"session cookie as flow", jar{nameA: sess["_twc_session"]}, "state-a"},
		{"garbage", jar{nameA: "garbage"}, "state-a"},
		{"huge", jar{nameA: strings.Repeat("A", 64<<10)}, "state-a"},
		{"expired", jar{nameB: sealAt(t, secret, nameB, plain, time.Now().Unix()-700)}, "state-b"},
		{"unknown key", jar{nameB: sealAt(t, testSecret('z'), nameB, plain, time.Now().Unix())}, "state-b"},
		{"state in cookie differs", jar{nameA: sealAt(t, secret, nameA, plain, time.Now().Unix())}, "state-a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := s.TakeFlow(httptest.NewRecorder(), tt.jar.request(), tt.state)
			if !errors.Is(err, ErrNoFlow) {
				t.Errorf("got %+v, %v; want ErrNoFlow", f, err)
			}
		})
	}

	// The control for the sealed cases above: sealAt itself is sound.
	good := jar{nameB: sealAt(t, secret, nameB, plain, time.Now().Unix())}
	if _, err := s.TakeFlow(httptest.NewRecorder(), good.request(), "state-b"); err != nil {
		t.Errorf("fresh sealed flow: got %v, want a flow", err)
	}
	// And the other direction: a flow cookie is no session cookie.
	if _, err := s.Load(jar{"_twc_session": j[nameA]}.request()); !errors.Is(err, ErrNoSession) {
		t.Errorf("flow cookie as session: got %v, want ErrNoSession", err)
	}
}

func TestSaveFlowCap(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name     string
		garbage  int   // undecodable flow cookies carried
		ages     []int // minutes after t0 of the decodable flows carried
		wantGone []string
	}{
		{"under the cap", 0, []int{0, 1, 2}, nil},
		{"four kept", 0, []int{3, 0, 1, 2}, nil},
		{"five: oldest goes", 0, []int{3, 0, 4, 1, 2}, []string{"s0"}},
		{"seven: three oldest go", 0, []int{6, 5, 0, 4, 1, 3, 2}, []string{"s0", "s1", "s2"}},
		{"garbage goes first", 1, []int{3, 0, 1, 2}, []string{"garbage0"}},
		{"garbage before any decodable", 2, []int{3, 0, 1, 2}, []string{"garbage0", "garbage1"}},
		{"garbage and oldest", 1, []int{3, 0, 4, 1, 2}, []string{"garbage0", "s0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestStore(t)
			j := jar{"_twc_session": "x", "other": "y"}
			names := map[string]string{}
			for _, m := range tt.ages {
				// A nil request: build past the cap without enforcing it.
				state := "s" + strconv.Itoa(m)
				names[state] = s.flowName(state)
				rec := httptest.NewRecorder()
				if err := s.SaveFlow(rec, nil, testFlow(state, t0.Add(time.Duration(m)*time.Minute))); err != nil {
					t.Fatal(err)
				}
				j.apply(rec)
			}
			for i := range tt.garbage {
				state := "garbage" + strconv.Itoa(i)
				names[state] = s.flowName(state)
				j[names[state]] = "garbage"
			}

			rec := savedFlow(t, s, j, testFlow("new", t0.Add(time.Hour)))
			lines := setCookies(rec)
			expired := 0
			for _, l := range lines {
				if strings.Contains(l, "Max-Age=0") {
					expired++
				}
			}
			if expired != len(tt.wantGone) {
				t.Errorf("got %d flow cookies expired, want %d", expired, len(tt.wantGone))
			}
			for _, state := range tt.wantGone {
				if !strings.Contains(lines[names[state]], "Max-Age=0") {
					t.Errorf("flow %s: got %q, want it expired", state, lines[names[state]])
				}
			}
			flows := 0
			for name := range j {
				if strings.HasPrefix(name, "_twc_session_flow_") {
					flows++
				}
			}
			if flows > maxFlows {
				t.Errorf("got %d flow cookies in the jar, want at most %d", flows, maxFlows)
			}
			if _, ok := j[s.flowName("new")]; !ok || j["other"] != "y" || j["_twc_session"] != "x" {
				t.Errorf("got jar %v, want the new flow and the other cookies kept", j)
			}
		})
	}
}

func TestSaveFlowErrors(t *testing.T) {
	s := newTestStore(t)
	tests := []struct {
		name     string
		flow     *Flow
		tooLarge bool
	}{
		{"nil", nil, false},
		{"no state", &Flow{Nonce: "n"}, false},
		{"return path over field limit", &Flow{State: "s", ReturnTo: strings.Repeat("/", maxField+1)}, true},
		{"over one cookie", &Flow{State: "s", ReturnTo: strings.Repeat("/", 3000)}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			err := s.SaveFlow(rec, httptest.NewRequest(http.MethodGet, "/", nil), tt.flow)
			if err == nil {
				t.Fatal("got no error")
			}
			if got := errors.Is(err, ErrTooLarge); got != tt.tooLarge {
				t.Errorf("got errors.Is(%v, ErrTooLarge) = %t, want %t", err, got, tt.tooLarge)
			}
			if n := len(rec.Result().Header["Set-Cookie"]); n != 0 {
				t.Errorf("got %d Set-Cookie lines on error, want 0", n)
			}
		})
	}
}
