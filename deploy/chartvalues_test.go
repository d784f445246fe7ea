package deploy

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// The chart and the binary must agree on every value: an install that
// renders and applies cleanly and then crash-loops on "config: ..." is the
// worst place to learn of a typo. These tests render the chart with values
// on top of ci/default-values.yaml and run the binary's own --check-config
// on what the sidecar would mount.

// schemaRefusal starts the error helm reports when values.schema.json
// refuses the values, before any template runs.
const schemaRefusal = "values don't meet the specifications of the schema"

// refusal is a value set the binary refuses, and where the chart must
// refuse it instead, naming the value as users write it.
type refusal struct {
	name   string
	values string // YAML over ci/default-values.yaml
	value  string // e.g. session.cookieName, trustedProxies[1]
	by     string // "schema" or "template"
}

// TestChartRefusesWhatTheBinaryRefuses: every value set the binary would
// refuse at start fails helm template instead, naming the value. A case
// that renders fails with the binary's own words: "helm accepts, binary
// refuses".
func TestChartRefusesWhatTheBinaryRefuses(t *testing.T) {
	helmBin(t)
	for _, c := range refusals {
		t.Run(c.name, func(t *testing.T) {
			out, err := helm(t, "template", "twc", chartDir, "--namespace", "twc",
				"-f", filepath.Join(chartDir, "ci", "default-values.yaml"), "-f", valuesFile(t, c.values))
			if err == nil {
				msg, ok := renderedConfigCheck(t, c.name, out)
				if ok {
					t.Fatalf("helm and the binary both accept these values: not a refusal case\n%s", c.values)
				}
				t.Fatalf("helm accepts, binary refuses:\n%s", msg)
			}
			checkRefusal(t, err.Error(), c.value, c.by)
		})
	}
}

// TestChartAcceptsWhatTheBinaryAccepts: the chart refuses nothing the
// binary accepts and users need; each renders and passes every check,
// --check-config included.
func TestChartAcceptsWhatTheBinaryAccepts(t *testing.T) {
	helmBin(t)
	for _, c := range acceptances {
		t.Run(c.name, func(t *testing.T) {
			b := render(t, chartDir, "-f", filepath.Join(chartDir, "ci", "default-values.yaml"), "-f", valuesFile(t, c.values))
			checkBundle(t, b, expect{pdb: true, promAnnotations: true, checksums: true})
		})
	}
}

// TestChartRefusesSharedSecretKeys: two secrets under one key of the
// Secret are refused at render, naming the second. Without the check the
// chart's own Secret held the key twice (one value lost), and with
// existingSecret the proxy read one file for both: the binary cannot tell,
// since a service password may be anything.
func TestChartRefusesSharedSecretKeys(t *testing.T) {
	helmBin(t)
	for _, c := range []struct{ name, values, value string }{
		{"sessionSecret is clientSecret's key", "secretKeys: {sessionSecret: client-secret}", "secretKeys.sessionSecret"},
		{"servicePassword is clientSecret's key", "serviceAccount: {enabled: true, username: svc, password: pw}\nsecretKeys: {servicePassword: client-secret}", "secretKeys.servicePassword"},
		{"existingSecret, servicePassword is sessionSecret's key", "existingSecret: mine\nserviceAccount: {enabled: true, username: svc}\nsecretKeys: {servicePassword: session-secret}", "secretKeys.servicePassword"},
		{"existingSecret, clientSecret is sessionSecret's key", "existingSecret: mine\nsecretKeys: {clientSecret: keys, sessionSecret: keys}", "secretKeys.sessionSecret"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := helm(t, "template", "twc", chartDir, "--namespace", "twc",
				"-f", filepath.Join(chartDir, "ci", "default-values.yaml"), "-f", valuesFile(t, c.values))
			if err == nil {
				t.Fatal("helm template accepted two secrets under one key")
			}
			checkRefusal(t, err.Error(), c.value, "template")
		})
	}
	// The service password's key is free while the service account is off.
	render(t, chartDir, "-f", filepath.Join(chartDir, "ci", "default-values.yaml"), "-f",
		valuesFile(t, "secretKeys: {servicePassword: client-secret}"))
}

// TestChartKnownGaps lists what the chart cannot check at render: it
// renders, and the binary refuses at start. A row that starts to fail has
// been closed: move it to the refusals.
func TestChartKnownGaps(t *testing.T) {
	helmBin(t)
	for _, c := range []struct{ name, values string }{
		// The schema sees PEM armour around base64; only X.509 parsing,
		// which no template function does, would find that it is not a
		// certificate.
		{"auth.caBundle armoured garbage", "auth: {caBundle: \"-----BEGIN CERTIFICATE-----\\nAAAA\\n-----END CERTIFICATE-----\"}"},
		// A file in a volume the user mounts, or in the image: the chart
		// sees only its path.
		{"auth.caFile that the pod lacks", "auth: {caFile: /etc/twc-ca/missing.crt}"},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, err := helm(t, "template", "twc", chartDir, "--namespace", "twc",
				"-f", filepath.Join(chartDir, "ci", "default-values.yaml"), "-f", valuesFile(t, c.values))
			if err != nil {
				t.Fatalf("the chart now refuses it; move the row to the refusals: %v", err)
			}
			if msg, ok := renderedConfigCheck(t, c.name, out); ok {
				t.Fatalf("the binary accepts it: not a gap\n%s", msg)
			}
		})
	}
}

// TestChartListItemsAgreeWithTheBinary runs a corpus of items for each
// list value through values.schema.json (one helm run, which names every
// item it refuses) and through the binary (one --check-config run on the
// rendered config with the list replaced, which names every item it
// refuses), and wants the same items refused.
func TestChartListItemsAgreeWithTheBinary(t *testing.T) {
	helmBin(t)
	defaults := filepath.Join(chartDir, "ci", "default-values.yaml")
	out, err := helm(t, "template", "twc", chartDir, "--namespace", "twc", "-f", defaults)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		value  string   // chart value, dotted
		key    []string // config key
		corpus []string
	}{
		{"trustedProxies", []string{"trusted_proxies"}, []string{
			"10.0.0.0/8", "10.0.0.1", "0.0.0.0/0", "255.255.255.255/32", "192.168.1.0/24",
			"::", "::1", "::/0", "fd00::/8", "2001:db8::1/128", "2001:DB8:0:0:0:0:0:1", "1:2:3:4:5:6:7::", "::1:2:3:4:5:6:7",
			"::ffff:10.1.2.3", "::ffff:10.0.0.0/104", "1:2:3:4:5:6:10.0.0.1",
			"", "ingress-nginx", "10.0.0.1-10.0.0.9", "10.0.0/24", "10.0.0.256", "010.0.0.1", "10.0.0.0/33", "10.0.0.0/08",
			"10.0.0.0/", "/8", " 10.0.0.1", "fd00:::/8", "fd00::/129", "1:2:3:4:5:6:7:8:9", "1::2::3", "12345::", "::ffff:10.0.0.256",
			"fe80::1%eth0/64", "10.0.0.0/8,10.1.0.0/16",
		}},
		{"auth.scopes", []string{"auth", "scopes"}, []string{
			"offline_access", "profile", "urn:twc:read", "a,b", "é", "", "openid profile", "a\tb", `"quoted"`, `back\slash`,
		}},
		{"apiTokens.audiences", []string{"api_tokens", "audiences"}, []string{"twc-rest-api", " ", ""}},
		{"skipAuth", []string{"skip_auth"}, []string{
			"^/static/", "GET=^/static/", "(?i)^/public/", `^/favicon\.ico$`, "get=x", "a{2,3}", "[[:alpha:]]",
			"(", "^/(?!private)", `\q`, "a**", "[z-a]", "x{1001}", "(?P<n", `\`,
		}},
		{"serviceAccount.routes", []string{"service_account", "routes"}, []string{"^/osmc/workspaces", "(?i)^/reports/", "", "(", "*x", "a(?=b)"}},
	} {
		t.Run(c.value, func(t *testing.T) {
			vals := map[string]any{}
			setPath(vals, strings.Split(c.value, "."), c.corpus)
			cfg := map[string]any{}
			setPath(cfg, c.key, c.corpus)
			if c.value == "serviceAccount.routes" {
				setPath(vals, []string{"serviceAccount", "enabled"}, true)
				setPath(vals, []string{"serviceAccount", "username"}, "svc")
				setPath(vals, []string{"serviceAccount", "password"}, "pw")
				setPath(cfg, []string{"service_account", "enabled"}, true)
				setPath(cfg, []string{"service_account", "username"}, "svc")
				setPath(cfg, []string{"service_account", "password"}, "pw")
			}
			valuesYAML, err := yaml.Marshal(vals)
			if err != nil {
				t.Fatal(err)
			}
			_, err = helm(t, "template", "twc", chartDir, "--namespace", "twc", "-f", defaults, "-f", valuesFile(t, string(valuesYAML)))
			chart := refusedItems(err, regexp.QuoteMeta("at '/"+strings.ReplaceAll(c.value, ".", "/")+"/")+`(\d+)'`)

			b := newBundle(c.value)
			if err := b.add("helm template", []byte(out)); err != nil {
				t.Fatal(err)
			}
			spec := &b.deployments[0].Spec.Template.Spec
			sidecar := findContainer(spec.Containers, sidecarName)
			cfgText, env := podConfig(t, b, spec, sidecar, configPath(t, sidecar), false)
			msg, _ := checkConfig(t, mergeConfig(t, cfgText, cfg), env)
			binary := refusedItems(errors.New(msg), regexp.QuoteMeta(strings.Join(c.key, ".")+"[")+`(\d+)\]`)

			for i, item := range c.corpus {
				if chart[i] != binary[i] {
					t.Errorf("%s[%d] %q: chart refuses %v, binary refuses %v", c.value, i, item, chart[i], binary[i])
				}
			}
			if len(chart) == 0 || len(chart) == len(c.corpus) {
				t.Errorf("the corpus should hold items both accept and items both refuse; the chart refuses %d of %d", len(chart), len(c.corpus))
			}
		})
	}
}

// refusedItems is the set of list indexes err names with re's group.
func refusedItems(err error, re string) map[int]bool {
	set := map[int]bool{}
	if err == nil {
		return set
	}
	for _, m := range regexp.MustCompile(re).FindAllStringSubmatch(err.Error(), -1) {
		i, _ := strconv.Atoi(m[1])
		set[i] = true
	}
	return set
}

func setPath(m map[string]any, keys []string, v any) {
	for _, k := range keys[:len(keys)-1] {
		sub, ok := m[k].(map[string]any)
		if !ok {
			sub = map[string]any{}
			m[k] = sub
		}
		m = sub
	}
	m[keys[len(keys)-1]] = v
}

// mergeConfig sets the keys of over into the config text.
func mergeConfig(t *testing.T, cfgText string, over map[string]any) string {
	t.Helper()
	var cfg map[string]any
	if err := yaml.Unmarshal([]byte(cfgText), &cfg); err != nil {
		t.Fatal(err)
	}
	var merge func(dst, src map[string]any)
	merge = func(dst, src map[string]any) {
		for k, v := range src {
			if sub, ok := v.(map[string]any); ok {
				d, _ := dst[k].(map[string]any)
				if d == nil {
					d = map[string]any{}
					dst[k] = d
				}
				merge(d, sub)
				continue
			}
			dst[k] = v
		}
	}
	merge(cfg, over)
	b, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// checkRefusal wants msg to name value where c.by says the chart refuses
// it: the schema names it as a JSON pointer (at '/trustedProxies/1'), a
// template in the dotted form users write (trustedProxies[1]).
func checkRefusal(t *testing.T, msg, value, by string) {
	t.Helper()
	switch by {
	case "schema":
		ptr := "/" + strings.NewReplacer(".", "/", "[", "/", "]", "").Replace(value)
		if !strings.Contains(msg, schemaRefusal) || !strings.Contains(msg, "at '"+ptr+"'") {
			t.Errorf("want values.schema.json to refuse %s (at '%s'), got:\n%s", value, ptr, msg)
		}
	case "template":
		if strings.Contains(msg, schemaRefusal) {
			t.Errorf("want a template to refuse %s, got the schema's refusal:\n%s", value, msg)
		} else if !regexp.MustCompile(`(^|[^\w.\[])` + regexp.QuoteMeta(value) + `([^\w.\[]|$)`).MatchString(msg) {
			t.Errorf("the refusal does not name %s:\n%s", value, msg)
		}
	default:
		t.Fatalf("by %q: want schema or template", by)
	}
}

// renderedConfigCheck runs --check-config on the config the sidecar of the
// one Deployment in out would mount, with the files of its volumes.
func renderedConfigCheck(t *testing.T, name, out string) (msg string, ok bool) {
	t.Helper()
	b := newBundle(name)
	if err := b.add("helm template", []byte(out)); err != nil {
		t.Fatal(err)
	}
	if len(b.deployments) != 1 {
		t.Fatalf("%d Deployments, want 1", len(b.deployments))
	}
	spec := &b.deployments[0].Spec.Template.Spec
	sidecar := findContainer(spec.Containers, sidecarName)
	if sidecar == nil {
		t.Fatalf("no %s container", sidecarName)
	}
	cfgText, env := podConfig(t, b, spec, sidecar, configPath(t, sidecar), false)
	out, err := checkConfig(t, cfgText, env)
	return fmt.Sprintf("%s(exit: %v)", out, err), err == nil
}

// valuesFile writes values into a file for helm -f, whose argument is a
// comma-separated list: the name must not carry the test's name.
func valuesFile(t *testing.T, values string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "chartvalues")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	name := filepath.Join(dir, "values.yaml")
	write(t, name, values)
	return name
}

// rest: values for a proxy in front of TWC REST elsewhere (no dashboard).
const rest = "dashboard: {enabled: false}\n"

var refusals = []refusal{
	// Caught before this test was written, kept here so that every check
	// of the binary has its row.
	{"listenPort 0", "listenPort: 0", "listenPort", "schema"},
	{"metricsPort above 65535", "metricsPort: 70000", "metricsPort", "schema"},
	{"metricsPort is listenPort", "metricsPort: 4180", "metricsPort", "template"},
	{"shutdownTimeoutSeconds 0", "shutdownTimeoutSeconds: 0", "shutdownTimeoutSeconds", "schema"},
	{"upstreamTimeout without unit", "upstreamTimeout: \"60\"", "upstreamTimeout", "schema"},
	{"upstreamTimeout as a number", "upstreamTimeout: 60", "upstreamTimeout", "schema"},
	{"upstreamTimeout negative", "upstreamTimeout: -1s", "upstreamTimeout", "schema"},
	{"upstreamTimeout 0", "upstreamTimeout: 0s", "upstreamTimeout", "template"},
	{"auth.timeout 0", "auth: {timeout: 0m0s}", "auth.timeout", "template"},
	{"auth.refreshMargin negative", "auth: {refreshMargin: -30s}", "auth.refreshMargin", "schema"},
	{"session.lifetime in days", "session: {lifetime: 14d}", "session.lifetime", "schema"},
	{"session.lifetime 0", "session: {lifetime: 0h}", "session.lifetime", "template"},
	{"redirectUrl missing", "redirectUrl: \"\"", "redirectUrl", "template"},
	{"auth.issuerUrl missing", "auth: {issuerUrl: \"\"}", "auth.issuerUrl", "template"},
	{"auth.clientId missing", "auth: {clientId: \"\"}", "auth.clientId", "template"},
	{"auth.clientAuth unknown", "auth: {clientAuth: basic}", "auth.clientAuth", "schema"},
	{"auth.clientSecret missing", "auth: {clientSecret: \"\"}", "auth.clientSecret", "template"},
	{"session.secret missing", "session: {secret: \"\"}", "session.secret", "template"},
	{"log.format unknown", "log: {format: text}", "log.format", "schema"},
	{"log.level unknown", "log: {level: trace}", "log.level", "schema"},
	{"log.requests not a bool", "log: {requests: \"yes\"}", "log.requests", "schema"},
	{"serviceAccount.username missing", "serviceAccount: {enabled: true, password: pw}", "serviceAccount.username", "template"},
	{"serviceAccount.password missing", "serviceAccount: {enabled: true, username: svc}", "serviceAccount.password", "template"},
	{"upstream.caFile and upstream.insecureSkipVerify", rest + "upstream: {url: \"https://twc.example.com:8111\", caFile: /etc/twc-ca/ca.crt, insecureSkipVerify: true}", "upstream.insecureSkipVerify", "template"},
	{"upstream.insecureSkipVerify for http", "upstream: {insecureSkipVerify: true}", "upstream.insecureSkipVerify", "template"},
	{"auth.caBundle and auth.caFile", "auth: {caFile: /etc/twc-ca/ca.crt, caBundle: " + testCAFlow + "}", "auth.caBundle", "template"},

	// URLs: absolute http(s), a host, no user:password@.
	{"upstream.url without scheme", rest + "upstream: {url: \"twc.example.com:8111\"}", "upstream.url", "schema"},
	{"upstream.url not http", rest + "upstream: {url: \"ftp://twc.example.com\"}", "upstream.url", "schema"},
	{"upstream.url with credentials", rest + "upstream: {url: \"http://admin@twc.example.com:8111\"}", "upstream.url", "schema"},
	{"auth.issuerUrl without scheme", "auth: {issuerUrl: twc.example.com:8443/authentication}", "auth.issuerUrl", "schema"},
	{"auth.issuerUrl bad port", "auth: {issuerUrl: \"https://twc.example.com:8443a/authentication\"}", "auth.issuerUrl", "schema"},
	{"auth.discoveryUrl relative", "auth: {discoveryUrl: /authentication/.well-known/oidc-configuration}", "auth.discoveryUrl", "schema"},
	{"auth.postLogoutRedirectUrl relative", "auth: {postLogoutRedirectUrl: /signed-out}", "auth.postLogoutRedirectUrl", "schema"},
	// redirectUrl also needs a callback path, and no query or fragment.
	{"redirectUrl without scheme", "redirectUrl: dashboard.example.com/oauth2/callback", "redirectUrl", "schema"},
	{"redirectUrl without path", "redirectUrl: \"https://dashboard.example.com\"", "redirectUrl", "schema"},
	{"redirectUrl root path", "redirectUrl: \"https://dashboard.example.com/\"", "redirectUrl", "schema"},
	{"redirectUrl with query", "redirectUrl: \"https://dashboard.example.com/oauth2/callback?next=/\"", "redirectUrl", "schema"},
	{"redirectUrl a route of the proxy", "redirectUrl: \"https://dashboard.example.com/oauth2/userinfo\"", "redirectUrl", "template"},

	// The session cookie: a token name; a domain name or IPv4 address; and
	// the attributes browsers demand of __Host- and __Secure- names.
	{"session.cookieName with a dot", "session: {cookieName: twc.session}", "session.cookieName", "schema"},
	{"session.cookieName with a space", "session: {cookieName: \"twc session\"}", "session.cookieName", "schema"},
	{"session.cookieDomain a URL", "session: {cookieDomain: \"https://example.com\"}", "session.cookieDomain", "schema"},
	{"session.cookieDomain with a port", "session: {cookieDomain: \"example.com:443\"}", "session.cookieDomain", "schema"},
	{"session.cookieDomain wildcard", "session: {cookieDomain: \"*.example.com\"}", "session.cookieDomain", "schema"},
	{"session.cookieDomain IPv6", "session: {cookieDomain: \"fd00::1\"}", "session.cookieDomain", "schema"},
	{"__Host- cookie with a domain", "session: {cookieName: __Host-twc, cookieDomain: example.com}", "session.cookieDomain", "schema"},
	{"__Host- cookie not Secure", "session: {cookieName: __host-twc, cookieSecure: false}", "session.cookieSecure", "schema"},
	{"__Secure- cookie not Secure", "session: {cookieName: __Secure-twc, cookieSecure: false}", "session.cookieSecure", "schema"},

	// Lists: every item checked, and named by its index.
	{"trustedProxies a host name", "trustedProxies: [10.0.0.0/8, ingress-nginx]", "trustedProxies[1]", "schema"},
	{"trustedProxies a range", "trustedProxies: [10.0.0.1-10.0.0.9]", "trustedProxies[0]", "schema"},
	{"trustedProxies three octets", "trustedProxies: [10.0.0/24]", "trustedProxies[0]", "schema"},
	{"trustedProxies prefix too long", "trustedProxies: [10.0.0.0/33]", "trustedProxies[0]", "schema"},
	{"trustedProxies IPv6 typo", "trustedProxies: [\"fd00:::/8\"]", "trustedProxies[0]", "schema"},
	{"auth.scopes with a space", "auth: {scopes: [\"openid profile\"]}", "auth.scopes[0]", "schema"},
	{"auth.scopes empty", "auth: {scopes: [offline_access, \"\"]}", "auth.scopes[1]", "schema"},
	{"skipAuth invalid regex", "skipAuth: [\"^/static/(\"]", "skipAuth[0]", "schema"},
	{"skipAuth lookahead", "skipAuth: [\"^/(?!private)\"]", "skipAuth[0]", "schema"},
	{"skipAuth method without path", "skipAuth: [\"^/ok$\", \"GET=\"]", "skipAuth[1]", "template"},
	{"skipAuth method then repetition", "skipAuth: [\"GET=*.js\"]", "skipAuth[0]", "template"},
	{"serviceAccount.routes invalid regex", "serviceAccount: {enabled: true, username: svc, password: pw, routes: [\"^/osmc/(workspaces\"]}", "serviceAccount.routes[0]", "schema"},
	{"apiTokens.audiences empty", "apiTokens: {enabled: true, audiences: [\"\"]}", "apiTokens.audiences[0]", "schema"},
	// TWC's client_credentials grant puts the user's credentials in the
	// Basic header: the client cannot authenticate there too.
	{"serviceAccount with client_secret_basic", "auth: {clientAuth: client_secret_basic}\nserviceAccount: {enabled: true, username: svc, password: pw}", "auth.clientAuth", "schema"},

	// Secrets, which the chart writes into its Secret and the proxy reads
	// trimmed. Checked by templates: the schema's errors quote the value.
	{"session.secret too short", "session: {secret: \"c2hvcnQgYnV0IGJhc2U2NA==\"}", "session.secret", "template"},
	{"session.secret a passphrase", "session: {secret: \"correct horse battery staple\"}", "session.secret", "template"},
	{"session.secret second key too short", "session: {secret: [\"" + testKeyURL + "\", \"c2hvcnQ=\"]}", "session.secret", "template"},
	{"session.secret empty list", "session: {secret: []}", "session.secret", "template"},
	{"session.secret only separators", "session: {secret: \" ,\\n\"}", "session.secret", "template"},
	{"auth.clientSecret only whitespace", "auth: {clientSecret: \"  \\n\"}", "auth.clientSecret", "template"},
	{"serviceAccount.password only whitespace", "serviceAccount: {enabled: true, username: svc, password: \" \"}", "serviceAccount.password", "template"},

	// Durations the schema's Go syntax admits but the proxy refuses.
	{"session.lifetime under a second", "session: {lifetime: 500ms}", "session.lifetime", "template"},
	{"upstreamTimeout out of range", "upstreamTimeout: 3000000h", "upstreamTimeout", "template"},
	{"auth.refreshMargin out of range", "auth: {refreshMargin: 9999999999s}", "auth.refreshMargin", "template"},

	// PEM bundles, which the proxy reads at start and must hold a
	// certificate; and Secret key names, which name the files it reads.
	{"auth.caBundle not PEM", "auth: {caBundle: \"not a certificate\"}", "auth.caBundle", "schema"},
	{"auth.caBundle base64 without its PEM lines", "auth: {caBundle: " + strconv.Quote(strings.Join(strings.Split(testCA, "\n")[1:11], "\n")) + "}", "auth.caBundle", "schema"},
	{"auth.caBundle a private key", "auth: {caBundle: \"-----BEGIN PRIVATE KEY-----\\nMC4CAQAwBQYDK2VwBCIEIA==\\n-----END PRIVATE KEY-----\"}", "auth.caBundle", "schema"},
	{"upstream.caBundle not PEM", rest + "upstream: {url: \"https://twc.example.com:8111\", caBundle: x}", "upstream.caBundle", "schema"},
	{"secretKeys.sessionSecret with a slash", "existingSecret: mine\nsecretKeys: {sessionSecret: keys/session}", "secretKeys.sessionSecret", "schema"},
	{"secretKeys.clientSecret ..", "existingSecret: mine\nsecretKeys: {clientSecret: \"..\"}", "secretKeys.clientSecret", "schema"},
}

var acceptances = []struct{ name, values string }{
	{"durations in Go syntax", "upstreamTimeout: 1m30s\nauth: {timeout: 2.5s, refreshMargin: 1m}\nsession: {lifetime: 720h}"},
	{"durations Go reads that look odd", "upstreamTimeout: .5s\nauth: {timeout: 1500ms, refreshMargin: \"0\"}\nsession: {lifetime: 1s}"},
	{"durations near the top of the range", "upstreamTimeout: 2562047h\nsession: {lifetime: 100000h}"},
	{"trustedProxies IPv4 and IPv6", "trustedProxies: [10.0.0.0/8, 192.168.1.10, \"fd00::/8\", \"2001:db8::1\", \"::ffff:10.1.2.3\", 0.0.0.0/0, \"::/0\"]"},
	{"https issuer with path and trailing slash", "auth: {issuerUrl: \"https://twc.example.com:8443/authentication/\"}"},
	{"http issuer in the cluster", "auth: {issuerUrl: \"http://twc-auth.twc.svc.cluster.local:8080/authentication\"}"},
	{"discovery and post-logout URLs", "auth: {discoveryUrl: \"https://twc.example.com:8443/authentication/.well-known/oidc-configuration\", postLogoutRedirectUrl: \"https://dashboard.example.com/\"}"},
	{"upstream.url IPv6 literal", rest + "upstream: {url: \"http://[fd00::1]:8111\"}"},
	{"upstream.url upper-case scheme and path", rest + "upstream: {url: \"HTTPS://twc.example.com:8111/osmc\", insecureSkipVerify: true}"},
	{"redirectUrl on localhost over http", "redirectUrl: \"http://localhost:4180/oauth2/callback\"\nsession: {cookieSecure: false}"},
	{"redirectUrl below a fixed route", "redirectUrl: \"https://dashboard.example.com/oauth2/start/callback\""},
	{"__Host- cookie", "session: {cookieName: __Host-twc_session}"},
	{"__Secure- cookie with a domain", "session: {cookieName: __Secure-twc, cookieDomain: .example.com}"},
	{"cookie name with token characters", "session: {cookieName: \"twc-session!v2\"}"},
	{"cookieDomain host", "session: {cookieDomain: dashboard.example.com}"},
	{"cookieDomain IPv4", "session: {cookieDomain: 10.1.2.3, cookieSecure: false}\nredirectUrl: \"http://10.1.2.3/oauth2/callback\""},
	{"skipAuth with methods and flags", "skipAuth: [\"GET=^/static/\", \"^/favicon\\\\.ico$\", \"HEAD=^/health$\", \"(?i)^/public/\", \"get=x\"]"},
	{"scopes", "auth: {scopes: [offline_access, profile, \"urn:twc:read\"]}"},
	{"session keys: URL-safe, unpadded, rotated", "session: {secret: [\"" + testKeyURL + "\", \"" + testKeyRaw + "\"]}"},
	{"session keys comma-separated with a newline", "session: {secret: \"" + testKeyRaw + "," + testKeyURL + "\\n\"}"},
	{"client secret with spaces", "auth: {clientSecret: \" s3cret with spaces \"}"},
	{"service account", "auth: {clientAuth: client_secret_post}\nserviceAccount: {enabled: true, username: svc, password: \"p a ss\", routes: [\"^/osmc/workspaces\", \"(?i)^/reports/\"]}"},
	{"apiTokens audiences", "apiTokens: {enabled: true, audiences: [twc-rest-api]}"},
	{"secretKeys with dots and underscores", "secretKeys: {clientSecret: client.secret, sessionSecret: session_key}"},
}

// Session keys of 32 and 33 bytes in the other encodings the binary takes.
// Test values only.
const (
	testKeyURL = "yMnKy8zNzs_Q0dLT1NXW19jZ2tvc3d7f4OHi4-Tl5ufo" // URL alphabet, 33 bytes
	testKeyRaw = "dGVzdCBvbmx5OiBub3QgYSByZWFsIHNlc3Npb24ga2U"  // 32 bytes, unpadded
)

// testCA is the test CA of ci/service-account-values.yaml. Test only.
const testCA = `-----BEGIN CERTIFICATE-----
MIIBmzCCAUGgAwIBAgIUWzLNOS6q5LiYtz45FhH52VgLvmcwCgYIKoZIzj0EAwIw
IjEgMB4GA1UEAwwXdHdjLXRlc3QtY2EgKHRlc3Qgb25seSkwIBcNMjYxMTI2MjEy
NzAyWhgPMjEyNjExMDIyMTI3MDJaMCIxIDAeBgNVBAMMF3R3Yy10ZXN0LWNhICh0
ZXN0IG9ubHkpMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEpUwFWpVlNmBQRNqa
frQ23GI0I5Ved9wzugXD3YGYC5J3n+K8MzoU6iekmvMIQ4b5MnuBzPe55nC1i2D5
DR1tx6NTMFEwHQYDVR0OBBYEFPBRQxMqNt+XKx/z2BTOCVpwb9hNMB8GA1UdIwQY
MBaAFPBRQxMqNt+XKx/z2BTOCVpwb9hNMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZI
zj0EAwIDSAAwRQIhAPbfiZ7JM1q76oIKw5RAvD2cOTW62dlGHksjDjCyjS9QAiBp
9MMKWxxQcX5hLgWKClbYvwhT1IA7cEyslvCizflsYQ==
-----END CERTIFICATE-----
`

// testCAFlow is testCA as a YAML flow scalar.
var testCAFlow = strconv.Quote(testCA)
