package session

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/gorilla/securecookie"
)

// ErrNoFlow is returned by TakeFlow when the request carries no usable login
// flow for the state: none at all, a stale or tampered one, or one for
// another state. The wrapping error says which, for logs.
var ErrNoFlow = errors.New("session: no login flow")

const (
	// flowMaxAge is how long a login may take, from the redirect to the
	// identity provider to the callback, both as the cookie's Max-Age and
	// as the oldest sealed timestamp TakeFlow accepts.
	flowMaxAge = 10 * time.Minute

	// maxFlows bounds the flow cookies a browser holds. Each tab that
	// starts a login adds one, and each is up to a few hundred bytes of the
	// Cookie header every request to the site carries.
	maxFlows = 5

	// flowIDLen is how many hex digits of SHA-256(state) name a flow
	// cookie: enough that concurrent logins of one browser never collide,
	// few enough to keep the name short.
	flowIDLen = 12
)

// Flow is one login in progress (OAuth 2.0 authorization-code flow), kept
// in a cookie from the redirect to the identity provider until the callback.
type Flow struct {
	State    string // random; the callback's state parameter finds the cookie
	Nonce    string // the OIDC nonce the ID token must echo
	Verifier string // PKCE code verifier; may be empty
	ReturnTo string // local path to return to after login
	Created  time.Time
}

// SaveFlow writes f as a flow cookie found by f.State. A zero f.Created is
// taken as now. If r already carries maxFlows flow cookies or more, the
// oldest are expired to make room, those that do not decode first.
//
// Flow cookies share the session cookie's attributes. SameSite=Lax suffices
// because the identity provider returns with a top-level GET; a form_post
// response mode would need SameSite=None.
func (s *Store) SaveFlow(w http.ResponseWriter, r *http.Request, f *Flow) error {
	if f == nil || f.State == "" {
		return errors.New("session: save flow: no state")
	}
	created := f.Created
	if created.IsZero() {
		created = time.Now()
	}
	plain, err := encodeFlow(f, created)
	if err != nil {
		return err // ErrTooLarge, which names the package already
	}
	name := s.flowName(f.State)
	v, err := securecookie.EncodeMulti(name, plain, s.flowCodecs...)
	if err != nil {
		return fmt.Errorf("session: encode flow cookie: %w", err)
	}
	if len(v) > chunkSize {
		return fmt.Errorf("session: save flow: %w: %d bytes encoded, limit %d", ErrTooLarge, len(v), chunkSize)
	}
	for _, old := range s.flowsToDrop(r, name) {
		http.SetCookie(w, s.newCookie(old, "", -1))
	}
	http.SetCookie(w, s.newCookie(name, v, int(flowMaxAge/time.Second)))
	return nil
}

// TakeFlow returns the flow r carries for state and expires its cookie in
// w, so that each flow is used at most once. The cookie is expired even when
// it turns out unusable.
func (s *Store) TakeFlow(w http.ResponseWriter, r *http.Request, state string) (*Flow, error) {
	if state == "" {
		return nil, fmt.Errorf("%w: empty state", ErrNoFlow)
	}
	name := s.flowName(state)
	var value string
	found := false
	if r != nil {
		eachCookie(r.Header, func(n, v string) {
			if !found && n == name {
				value, found = v, true
			}
		})
	}
	if !found {
		return nil, fmt.Errorf("%w: no cookie", ErrNoFlow)
	}
	http.SetCookie(w, s.newCookie(name, "", -1))

	f, err := s.openFlow(name, value)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoFlow, err)
	}
	// The name already binds the state through the MAC, up to a
	// truncated-hash collision; comparing in full removes that too.
	if subtle.ConstantTimeCompare([]byte(f.State), []byte(state)) != 1 {
		return nil, fmt.Errorf("%w: state mismatch", ErrNoFlow)
	}
	return f, nil
}

// flowName returns the cookie name of the flow for state. Deriving it from
// the state lets TakeFlow find the cookie without opening every flow cookie,
// and lets several logins run side by side.
func (s *Store) flowName(state string) string {
	sum := sha256.Sum256([]byte(state))
	return s.flowPrefix + hex.EncodeToString(sum[:flowIDLen/2])
}

// openFlow authenticates, decrypts and parses a flow cookie value.
func (s *Store) openFlow(name, value string) (*Flow, error) {
	if len(value) > chunkSize {
		return nil, errors.New("cookie value too long")
	}
	var plain []byte
	if err := securecookie.DecodeMulti(name, value, &plain, s.flowCodecs...); err != nil {
		return nil, fmt.Errorf("decode cookie: %w", err)
	}
	f, err := decodeFlow(plain)
	if err != nil {
		return nil, fmt.Errorf("decode flow: %w", err)
	}
	return f, nil
}

// flowsToDrop returns the names of the flow cookies r carries, other than
// keep, to expire so that one more fits under maxFlows: the oldest by
// Created, with undecodable ones (stale, tampered, sealed with a retired
// key) counted oldest of all. Flows are opened only when over the cap.
func (s *Store) flowsToDrop(r *http.Request, keep string) []string {
	type held struct {
		name, value string
		created     time.Time
	}
	var flows []held
	if r != nil {
		eachCookie(r.Header, func(name, value string) {
			if name != keep && strings.HasPrefix(name, s.flowPrefix) &&
				!slices.ContainsFunc(flows, func(h held) bool { return h.name == name }) {
				flows = append(flows, held{name: name, value: value})
			}
		})
	}
	excess := len(flows) - (maxFlows - 1)
	if excess <= 0 {
		return nil
	}
	for i := range flows {
		if f, err := s.openFlow(flows[i].name, flows[i].value); err == nil {
			flows[i].created = f.Created
		}
	}
	slices.SortStableFunc(flows, func(a, b held) int { return a.created.Compare(b.created) })
	names := make([]string, excess)
	for i := range names {
		names[i] = flows[i].name
	}
	return names
}

// encodeFlow is the binary layout of a Flow, like encodeSession's:
// flowVersion, then State, Nonce, Verifier and ReturnTo as uvarint-prefixed
// strings, then Created as int64 big-endian unix seconds.
func encodeFlow(f *Flow, created time.Time) ([]byte, error) {
	if err := checkFields(f.State, f.Nonce, f.Verifier, f.ReturnTo); err != nil {
		return nil, err
	}
	b := make([]byte, 0, 1+4*2+len(f.State)+len(f.Nonce)+len(f.Verifier)+len(f.ReturnTo)+8)
	b = append(b, flowVersion)
	b = appendString(b, f.State)
	b = appendString(b, f.Nonce)
	b = appendString(b, f.Verifier)
	b = appendString(b, f.ReturnTo)
	return appendTime(b, created), nil
}

// decodeFlow parses the output of encodeFlow.
func decodeFlow(b []byte) (*Flow, error) {
	if len(b) == 0 || b[0] != flowVersion {
		return nil, errVersion
	}
	d := decoder{buf: string(b[1:])}
	f := &Flow{
		State:    d.string(),
		Nonce:    d.string(),
		Verifier: d.string(),
		ReturnTo: d.string(),
		Created:  d.time(),
	}
	if err := d.finish(); err != nil {
		return nil, err
	}
	return f, nil
}
