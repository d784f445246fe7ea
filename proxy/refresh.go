package proxy

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/twc-auth-proxy/twc-auth-proxy/session"
	"golang.org/x/sync/singleflight"
)

// How long refresh outcomes are remembered, keyed by the refresh token that
// was spent. A browser fires many requests at once with the same cookie,
// and some arrive after the first one already rotated the token: they must
// reuse the result instead of replaying a spent refresh token, which
// rotating providers punish by revoking the whole grant.
const (
	refreshMemoTTL     = 30 * time.Second
	refreshFailMemoTTL = 5 * time.Second // transient failures: retry soon
	// refreshPendingTTL is how long a token-endpoint answer that could not
	// be verified for want of the provider's keys is kept to verify again.
	// Its refresh token is spent, so forgetting the answer means spending
	// that token again. An hour rides out a jwks.json outage short of an
	// incident, and costs memory only while keys are unavailable.
	refreshPendingTTL = time.Hour
	refreshMemoMax    = 50000 // bound on remembered outcomes
	refreshSweepEvery = time.Second
	// refreshChainMax bounds how many remembered refreshes recall follows.
	refreshChainMax = 8
)

// refreshOutcome classifies a refresh for the caller.
type refreshOutcome int

const (
	refreshOK          refreshOutcome = iota
	refreshRejected                   // the session is over: sign in again
	refreshUnavailable                // auth server unreachable or failing: try later
)

type memoEntry struct {
	sess    *session.Session
	outcome refreshOutcome
	err     error
	until   time.Time
	// pending is the token endpoint's answer, not yet verified because the
	// provider's keys were unavailable. The refresh token it answered is
	// spent, so attempts until pendingUntil verify this answer instead.
	pending      *tokenResponse
	pendingUntil time.Time
}

// refresher makes sure each refresh token is spent at most once per
// replica, however many requests carry it.
type refresher struct {
	auth  *AuthServer
	now   func() time.Time
	group singleflight.Group

	mu    sync.Mutex
	memo  map[[sha256.Size]byte]memoEntry
	swept time.Time // the last sweep of expired entries
}

func newRefresher(auth *AuthServer, now func() time.Time) *refresher {
	return &refresher{auth: auth, now: now, memo: make(map[[sha256.Size]byte]memoEntry)}
}

// refresh returns the session that replaces old. shared reports that the
// result came from another request's refresh (in flight or remembered).
func (r *refresher) refresh(ctx context.Context, ep *endpoints, old *session.Session) (sess *session.Session, outcome refreshOutcome, shared bool, err error) {
	from, e, ok := r.recall(old)
	if ok {
		return e.sess, e.outcome, true, e.err
	}
	key := refreshKey(from.RefreshToken)
	// singleflight reports "shared" to the leader too once others joined,
	// so whether this call did the work is tracked here.
	leader := false
	v, _, _ := r.group.Do(string(key[:]), func() (any, error) {
		e, ok := r.lookup(key)
		if ok {
			return e, nil
		}
		leader = true
		// The refresh serves every waiting request, so one client going
		// away must not cancel it; the auth timeout still bounds it.
		e = r.attempt(context.WithoutCancel(ctx), ep, from, e)
		r.store(key, e)
		return e, nil
	})
	e = v.(memoEntry)
	return e.sess, e.outcome, !leader, e.err
}

// recall looks old's refresh up in the memo; ok means e is the outcome to
// serve. Otherwise from is the session to refresh: old itself or, when old's
// refresh is remembered as a success whose ID token has expired since (a
// token lifetime shorter than refreshMemoTTL), the session that refresh made.
// Its refresh token is the newest this replica knows for the sign-in; old's
// may be spent, and a rotating provider revokes the grant when a spent
// token comes back.
func (r *refresher) recall(old *session.Session) (from *session.Session, e memoEntry, ok bool) {
	for range refreshChainMax {
		got, hit := r.lookup(refreshKey(old.RefreshToken))
		if hit || got.sess == nil || got.sess.RefreshToken == old.RefreshToken {
			return old, got, hit
		}
		old = got.sess
	}
	return old, memoEntry{}, false
}

// attempt refreshes from: it verifies prev's pending answer when there is
// one, else it spends from's refresh token.
func (r *refresher) attempt(ctx context.Context, ep *endpoints, from *session.Session, prev memoEntry) memoEntry {
	if tr := prev.pending; tr != nil {
		sess, err := r.auth.refreshed(ctx, ep, from, tr)
		var expired *oidc.TokenExpiredError
		switch {
		case errors.Is(err, errKeysUnavailable):
			return r.entry(nil, err, tr, prev.pendingUntil)
		case !errors.As(err, &expired):
			return r.entry(sess, err, nil, time.Time{})
		case tr.RefreshToken != "":
			// The keys came back after the answer's ID token expired. The
			// answer came from the token endpoint (and go-oidc checks
			// expiry only after the signature): its rotated refresh token
			// is the live one.
			from = &session.Session{Subject: from.Subject, RefreshToken: tr.RefreshToken, Created: from.Created}
		}
	}
	sess, tr, err := r.auth.refresh(ctx, ep, from)
	if tr != nil {
		return r.entry(nil, err, tr, r.now().Add(refreshPendingTTL))
	}
	if prev.pending != nil && err != nil && classifyRefreshError(err) == refreshUnavailable {
		// The kept answer's refresh token was just tried and the token
		// endpoint is unwell: keep the answer, which holds the live
		// refresh token, for the next attempt. Forgetting it would spend
		// the original, already spent, token next time.
		return r.entry(nil, err, prev.pending, prev.pendingUntil)
	}
	return r.entry(sess, err, nil, time.Time{})
}

// entry is the memo entry for a refresh result.
func (r *refresher) entry(sess *session.Session, err error, pending *tokenResponse, pendingUntil time.Time) memoEntry {
	e := memoEntry{sess: sess, err: err, outcome: classifyRefreshError(err), pending: pending, pendingUntil: pendingUntil}
	ttl := refreshMemoTTL
	if e.outcome == refreshUnavailable {
		ttl = refreshFailMemoTTL
	}
	e.until = r.now().Add(ttl)
	return e
}

// refreshKey identifies a refresh token in the memo without keeping it.
func refreshKey(refreshToken string) [sha256.Size]byte {
	return sha256.Sum256([]byte(refreshToken))
}

// lookup returns the memo's entry for key; ok means it is an outcome to
// serve: remembered less than its TTL ago and, for a success, with an ID
// token still valid at now, so that an expired token is never forwarded.
// Otherwise the entry returned is empty, or holds only the session of a
// success whose token has expired (sess), or an answer still to verify
// (pending).
func (r *refresher) lookup(key [sha256.Size]byte) (memoEntry, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	e, found := r.memo[key]
	switch {
	case !found:
		return memoEntry{}, false
	case now.Before(e.until) && (e.outcome != refreshOK || now.Before(e.sess.Expiry)):
		return e, true
	case now.Before(e.until) && e.outcome == refreshOK:
		return memoEntry{sess: e.sess}, false
	case now.Before(e.pendingUntil):
		return memoEntry{pending: e.pending, pendingUntil: e.pendingUntil}, false
	}
	return memoEntry{}, false
}

func (r *refresher) store(key [sha256.Size]byte, e memoEntry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	// Expired entries are swept once the memo is half full, at most once a
	// second: a sweep walks every entry, and a flood of sessions would
	// otherwise pay that walk on every refresh.
	if len(r.memo) >= refreshMemoMax/2 && now.Sub(r.swept) >= refreshSweepEvery {
		r.swept = now
		for k, old := range r.memo {
			if !now.Before(old.until) && !now.Before(old.pendingUntil) {
				delete(r.memo, k)
			}
		}
	}
	if len(r.memo) >= refreshMemoMax {
		// Only a flood of distinct sessions within 30 s gets here.
		// Forgetting an outcome costs an extra refresh; forgetting a kept
		// answer would spend a refresh token again, so those go only if
		// nothing else is left to drop.
		for k, old := range r.memo {
			if old.pending == nil {
				delete(r.memo, k)
			}
		}
		if len(r.memo) >= refreshMemoMax {
			clear(r.memo)
		}
	}
	r.memo[key] = e
}

// classifyRefreshError decides what a failed refresh means for the session.
// The auth server refusing the grant (TokenError.Rejected) ends it; so does
// an answer that is useless (no id_token) or a token that fails
// verification, since retrying the same grant cannot fix either. Everything
// else (network errors, timeouts, 5xx, 408, 429, temporarily_unavailable,
// garbage bodies, signing keys that cannot be fetched) is the auth server
// being unwell.
func classifyRefreshError(err error) refreshOutcome {
	if err == nil {
		return refreshOK
	}
	if errors.Is(err, errKeysUnavailable) {
		return refreshUnavailable
	}
	var te *TokenError
	if errors.As(err, &te) {
		if te.Rejected() {
			return refreshRejected
		}
		return refreshUnavailable
	}
	if isInvalidAnswer(err) {
		return refreshRejected
	}
	return refreshUnavailable
}

// isInvalidAnswer reports whether err is an answer from the auth server that
// carries no usable ID token.
func isInvalidAnswer(err error) bool {
	return errors.Is(err, errNoIDToken) || errors.Is(err, errInvalidToken)
}

// needsRefresh reports whether an ID token expiring at expiry should be
// refreshed at now, margin ahead of time.
func needsRefresh(expiry, now time.Time, margin time.Duration) bool {
	return !now.Before(expiry.Add(-margin))
}

// tokenMargin is how long before expiry a token that lives lifetime is
// renewed: margin, unless the token lives no longer than that. Such a
// token would be due the moment it is issued and renewed for every
// request, so it is renewed halfway through its life instead. A margin
// shorter than the lifetime is kept as configured, however close to it. A
// lifetime of 0 is unknown: margin.
func tokenMargin(margin, lifetime time.Duration) time.Duration {
	if lifetime <= 0 || margin < lifetime {
		return margin
	}
	return lifetime / 2
}

// tokenLifetime is how long tok, received now, lives for the proxy: from
// now, or from its iat when that is later (the auth server's clock ahead of
// ours), until its exp. Measured from when it came rather than from iat, a
// proxy clock running ahead or a slow answer cannot make a short-lived
// token due on arrival.
func tokenLifetime(tok *oidc.IDToken, now time.Time) time.Duration {
	issued := now
	if tok.IssuedAt.After(now) && tok.IssuedAt.Before(tok.Expiry) {
		issued = tok.IssuedAt
	}
	return max(0, tok.Expiry.Sub(issued))
}

// refreshDue reports whether sess's ID token is to be refreshed at now:
// refresh_margin before it expires, or halfway through its life (exp -
// iat, read from the token) when it lives no longer than the margin. The
// token is read only once the margin says it is due, so a request in the
// usual case never parses it; with a margin that long, the requests
// before the halfway point each do (about a microsecond), which is still
// far cheaper than the refresh per request they would otherwise cost.
func refreshDue(sess *session.Session, now time.Time, margin time.Duration) bool {
	if !needsRefresh(sess.Expiry, now, margin) {
		return false
	}
	if iat, ok := issuedAt(sess.IDToken); ok && iat.Before(sess.Expiry) {
		margin = tokenMargin(margin, sess.Expiry.Sub(iat))
	}
	return needsRefresh(sess.Expiry, now, margin)
}

// issuedAt returns the iat claim of a compact JWS, unverified: the token
// was verified when it entered the session.
func issuedAt(raw string) (time.Time, bool) {
	payload, err := jwtPayload(raw)
	if err != nil {
		return time.Time{}, false
	}
	var c struct {
		IAT json.Number `json:"iat"`
	}
	if json.Unmarshal(payload, &c) != nil {
		return time.Time{}, false
	}
	sec, err := c.IAT.Float64()
	if err != nil || sec <= 0 || sec > maxNumericDate {
		return time.Time{}, false
	}
	return time.Unix(0, 0).Add(time.Duration(sec * float64(time.Second))), true
}

// maxNumericDate bounds the iat read by issuedAt: the year 2200, well
// inside what a time.Duration from 1970 can hold.
const maxNumericDate = 7258118400
