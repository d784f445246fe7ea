package proxy

import (
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Metrics are the Prometheus series the proxy exports. The names are public
// contract: operators' dashboards and alerts depend on them.
type Metrics struct {
	Logins            *prometheus.CounterVec   // twc_auth_proxy_logins_total{result}
	Refreshes         *prometheus.CounterVec   // twc_auth_proxy_token_refreshes_total{result}
	TokenEndpoint     *prometheus.HistogramVec // twc_auth_proxy_token_endpoint_duration_seconds{grant_type}
	Requests          *prometheus.CounterVec   // twc_auth_proxy_requests_total{code}
	UpstreamDuration  prometheus.Histogram     // twc_auth_proxy_upstream_duration_seconds
	UpstreamErrors    *prometheus.CounterVec   // twc_auth_proxy_upstream_errors_total{kind}
	Unauthenticated   *prometheus.CounterVec   // twc_auth_proxy_unauthenticated_requests_total{reason}
	AuthServerUp      prometheus.Gauge         // twc_auth_proxy_auth_server_ready
	DiscoveryFailures prometheus.Counter       // twc_auth_proxy_discovery_failures_total

	ServiceTokenFetches *prometheus.CounterVec // twc_auth_proxy_service_token_fetches_total{result}
	ServiceTokenDrops   prometheus.Counter     // twc_auth_proxy_service_token_drops_total
	APITokens           *prometheus.CounterVec // twc_auth_proxy_api_tokens_total{result}

	// serviceExpiry is the service token's expiry (Unix ns; 0 = none),
	// read by twc_auth_proxy_service_token_remaining_seconds at scrape time.
	serviceExpiry atomic.Int64

	// byCode caches the requests_total child of each status code, so the
	// per-request path neither formats the code nor hashes label values.
	byCode [600]atomic.Pointer[prometheus.Counter]
}

// request counts one answered request with status code.
func (m *Metrics) request(code int) {
	if code < 0 || code >= len(m.byCode) {
		m.Requests.WithLabelValues(strconv.Itoa(code)).Inc()
		return
	}
	c := m.byCode[code].Load()
	if c == nil {
		counter := m.Requests.WithLabelValues(strconv.Itoa(code))
		c = &counter
		m.byCode[code].Store(c)
	}
	(*c).Inc()
}

// NewMetrics registers the proxy's series with reg. Each proxy instance gets
// its own registry, so tests and several instances in one process never
// collide.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	f := promauto.With(reg)
	m := &Metrics{
		Logins: f.NewCounterVec(prometheus.CounterOpts{
			Name: "twc_auth_proxy_logins_total",
			Help: "Completed login callbacks, by result (success or the reason it failed).",
		}, []string{"result"}),
		Refreshes: f.NewCounterVec(prometheus.CounterOpts{
			Name: "twc_auth_proxy_token_refreshes_total",
			Help: "ID-token refreshes, by result: success, shared (served from a concurrent or recent refresh of the same session), rejected (auth server refused: session ended), invalid (bad answer), unavailable (auth server unreachable).",
		}, []string{"result"}),
		TokenEndpoint: f.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "twc_auth_proxy_token_endpoint_duration_seconds",
			Help:    "Duration of calls to the auth server's token endpoint, by grant_type.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"grant_type"}),
		Requests: f.NewCounterVec(prometheus.CounterOpts{
			Name: "twc_auth_proxy_requests_total",
			Help: "Requests answered on the proxy listener, by HTTP status code.",
		}, []string{"code"}),
		UpstreamDuration: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "twc_auth_proxy_upstream_duration_seconds",
			Help:    "Time until the upstream's response headers arrived, for proxied requests.",
			Buckets: prometheus.DefBuckets,
		}),
		UpstreamErrors: f.NewCounterVec(prometheus.CounterOpts{
			Name: "twc_auth_proxy_upstream_errors_total",
			Help: "Proxied requests that got no answer from the upstream, by kind (timeout, unreachable, canceled), or a truncated one (aborted: the upstream broke off its answer after the headers).",
		}, []string{"kind"}),
		Unauthenticated: f.NewCounterVec(prometheus.CounterOpts{
			Name: "twc_auth_proxy_unauthenticated_requests_total",
			Help: "Requests refused or sent to login for want of a valid session, by reason.",
		}, []string{"reason"}),
		AuthServerUp: f.NewGauge(prometheus.GaugeOpts{
			Name: "twc_auth_proxy_auth_server_ready",
			Help: "1 once OpenID discovery against the auth server has succeeded, else 0.",
		}),
		DiscoveryFailures: f.NewCounter(prometheus.CounterOpts{
			Name: "twc_auth_proxy_discovery_failures_total",
			Help: "Failed attempts to fetch the auth server's discovery document.",
		}),
		ServiceTokenFetches: f.NewCounterVec(prometheus.CounterOpts{
			Name: "twc_auth_proxy_service_token_fetches_total",
			Help: "Service-account token requests to the auth server, by result: success, rejected (credentials refused: check the account), error (auth server unreachable or failing).",
		}, []string{"result"}),
		ServiceTokenDrops: f.NewCounter(prometheus.CounterOpts{
			Name: "twc_auth_proxy_service_token_drops_total",
			Help: "Service-account tokens dropped because the upstream answered 401 to them (TWC REST refuses the token: check that it accepts the service account's client id and the auth server's keys), at most one per backoff step.",
		}),
		APITokens: f.NewCounterVec(prometheus.CounterOpts{
			Name: "twc_auth_proxy_api_tokens_total",
			Help: "Caller-supplied API tokens (Authorization: Token/Bearer), by result: accepted, rejected, or unavailable (the auth server's signing keys could not be fetched).",
		}, []string{"result"}),
	}
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "twc_auth_proxy_service_token_remaining_seconds",
		Help: "Seconds until the service-account ID token expires (0 when there is none yet; negative once expired).",
	}, func() float64 {
		ns := m.serviceExpiry.Load()
		if ns == 0 {
			return 0
		}
		return time.Until(time.Unix(0, ns)).Seconds()
	})
	// Every outcome series exists from the start, at 0: a series that
	// appears only at its first event hides that event from increase()
	// and rate(), and an alert on it never fires for the first failure.
	for vec, values := range map[*prometheus.CounterVec][]string{
		m.Logins:              loginResults,
		m.Refreshes:           {"success", "shared", "rejected", "invalid", "unavailable"},
		m.UpstreamErrors:      {"unreachable", "timeout", "canceled", "aborted"},
		m.Unauthenticated:     {"no_session", "invalid_session", "expired", "refresh_rejected"},
		m.ServiceTokenFetches: {"success", "rejected", "error"},
		m.APITokens:           {"accepted", "rejected", "unavailable"},
	} {
		for _, v := range values {
			vec.WithLabelValues(v)
		}
	}
	return m
}

// loginResults are the values of twc_auth_proxy_logins_total's result.
var loginResults = []string{"success", "state_mismatch", "bad_request", "provider_error", "invalid_token",
	"exchange_rejected", "exchange_failed", "auth_server_timeout", "auth_server_error", "auth_server_not_ready", "session_error"}
