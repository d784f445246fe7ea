package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/twc-auth-proxy/twc-auth-proxy/authtest"
)

func TestServiceAccountConfig(t *testing.T) {
	dir := t.TempDir()
	pwFile := writeFile(t, dir, "pw", "from-file\n")
	tests := []struct {
		name     string
		edits    []string
		getenv   func(string) string
		password string
		clientID string
		routes   int
	}{
		{"inline", []string{"service_account.enabled: true", "service_account.username: svc", "service_account.password: inline-pw", "service_account.routes: [\"^/api/\", \"^/osmc/\"]"}, noEnv, "inline-pw", "", 2},
		{"file", []string{"service_account.enabled: true", "service_account.username: svc", "service_account.password_file: " + pwFile, "service_account.client_id: reports-bot"}, noEnv, "from-file", "reports-bot", 0},
		{"env wins over file", []string{"service_account.enabled: true", "service_account.username: svc", "service_account.password_file: " + pwFile}, env(envServicePassword, "from-env"), "from-env", "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := mustParse(t, conf(tt.edits...), tt.getenv)
			if s.service == nil {
				t.Fatal("service account not enabled")
			}
			if s.service.Password != tt.password || s.service.ClientID != tt.clientID || len(s.service.Routes) != tt.routes || s.service.Username != "svc" {
				t.Errorf("got user %q client %q routes %d, want svc %q %d (password match: %v)",
					s.service.Username, s.service.ClientID, len(s.service.Routes), tt.clientID, tt.routes, s.service.Password == tt.password)
			}
		})
	}
	if s := mustParse(t, conf(), noEnv); s.service != nil {
		t.Error("service account enabled without service_account.enabled")
	}
}

func TestServiceAccountConfigErrors(t *testing.T) {
	tests := []struct {
		name  string
		edits []string
		key   string
	}{
		{"no username", []string{"service_account.enabled: true", "service_account.password: pw-secret"}, "service_account.username"},
		{"no password", []string{"service_account.enabled: true", "service_account.username: svc"}, "service_account.password"},
		{"both password sources", []string{"service_account.enabled: true", "service_account.username: svc", "service_account.password: pw-secret", "service_account.password_file: /x"}, "service_account.password"},
		{"bad route", []string{"service_account.enabled: true", "service_account.username: svc", "service_account.password: pw-secret", "service_account.routes: [\"(\"]"}, "service_account.routes[0]"},
		{"basic client auth", []string{"service_account.enabled: true", "service_account.username: svc", "service_account.password: pw-secret", "auth.client_auth: client_secret_basic"}, "service_account.enabled"},
		{"unknown key", []string{"service_account.pasword: x"}, "service_account.pasword"},
		{"empty audience", []string{"api_tokens.audiences: [\"\"]"}, "api_tokens.audiences[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseConfig([]byte(conf(tt.edits...)), noEnv)
			if err == nil {
				t.Fatal("accepted")
			}
			msg := err.Error()
			checkErrorLine(t, msg)
			if !strings.Contains(msg, tt.key+":") {
				t.Errorf("error %q does not name %s", msg, tt.key)
			}
			if strings.Contains(msg, "pw-secret") {
				t.Errorf("error %q leaks the password", msg)
			}
		})
	}
}

func TestAPITokensConfig(t *testing.T) {
	s := mustParse(t, conf("api_tokens.enabled: true"), noEnv)
	if !s.proxy.APITokens.Enabled || fmt.Sprint(s.proxy.APITokens.Audiences) != "[dashboard]" {
		t.Errorf("api_tokens = %+v, want enabled with audiences [dashboard]", s.proxy.APITokens)
	}
	s = mustParse(t, conf("api_tokens.enabled: true", "api_tokens.audiences: [twc-rest-api, dashboard]"), noEnv)
	if fmt.Sprint(s.proxy.APITokens.Audiences) != "[twc-rest-api dashboard]" {
		t.Errorf("audiences = %v", s.proxy.APITokens.Audiences)
	}
}

// tokenConfig writes a config for the token subcommand against idp.
func tokenConfig(t *testing.T, idp *authtest.Server, password string) string {
	return writeFile(t, t.TempDir(), "c.yaml", fmt.Sprintf(`
upstream: http://127.0.0.1:8111
redirect_url: http://127.0.0.1:4180/oauth2/callback
auth:
  issuer_url: %s
  client_id: dashboard
  client_secret: s3cret
  timeout: 10s
session:
  secret: %s
service_account:
  enabled: true
  username: svc-reports
  password: %s
  client_id: reports-bot
`, idp.Issuer(), testSessionSecret, password))
}

func TestTokenSubcommand(t *testing.T) {
	idp, err := authtest.Start(authtest.Options{
		ClientIDs: []string{"dashboard", "reports-bot"},
		Secret:    "s3cret",
		Users:     map[string]string{"svc-reports": "svc-pw"},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer idp.Close()

	var stdout, stderr bytes.Buffer
	if err := run(t.Context(), []string{"token", "--config", tokenConfig(t, idp, "svc-pw")}, noEnv, &stdout, &stderr); err != nil {
		t.Fatalf("token: %v (stderr %q)", err, stderr.String())
	}
	out := stdout.String()
	tok := strings.TrimSuffix(out, "\n")
	parts := strings.Split(tok, ".")
	if len(parts) != 3 || strings.Contains(tok, "\n") {
		t.Fatalf("stdout = %q, want exactly one JWT and a newline", out)
	}
	b, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var claims struct{ Sub, Aud string }
	if err := json.Unmarshal(b, &claims); err != nil || claims.Sub != "svc-reports" || claims.Aud != "reports-bot" {
		t.Errorf("claims = %+v (%v), want sub svc-reports aud reports-bot", claims, err)
	}
	if stderr.Len() != 0 {
		t.Errorf("stderr = %q, want nothing on success", stderr.String())
	}

	// Wrong password: non-zero (an error), nothing on stdout, no password.
	stdout.Reset()
	err = run(t.Context(), []string{"token", "--config", tokenConfig(t, idp, "wrong-pw-123")}, noEnv, &stdout, &stderr)
	if err == nil || stdout.Len() != 0 {
		t.Fatalf("bad credentials: err %v, stdout %q; want an error and empty stdout", err, stdout.String())
	}
	if strings.Contains(err.Error(), "wrong-pw-123") || !strings.Contains(err.Error(), "invalid username or password") {
		t.Errorf("error %q: want the auth server's reason, never the password", err)
	}

	// Without a service account there is nothing to print.
	err = run(t.Context(), []string{"token", "--config", writeFile(t, t.TempDir(), "c.yaml", conf())}, noEnv, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "service_account.enabled") {
		t.Errorf("got %v, want an error naming service_account.enabled", err)
	}
}
