{{/*
Every template here reads only .Values and .Release (and .Chart when it is
there), so another chart can include the sidecar with
  (dict "Values" .Values.twcAuthProxy "Release" .Release)
and get the same names and checksums as this chart's ConfigMap and Secret.
*/}}

{{- define "twc-auth-proxy.name" -}}
{{- default "twc-auth-proxy" .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "twc-auth-proxy.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "twc-auth-proxy.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
twc-auth-proxy.metricsServiceName: fullname plus "-metrics", within the 63
characters of a Service name.
*/}}
{{- define "twc-auth-proxy.metricsServiceName" -}}
{{- printf "%s-metrics" (include "twc-auth-proxy.fullname" . | trunc 55 | trimSuffix "-") -}}
{{- end -}}

{{- define "twc-auth-proxy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "twc-auth-proxy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "twc-auth-proxy.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "twc-auth-proxy.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "twc-auth-proxy.image" -}}
{{- $tag := .Values.image.tag -}}
{{- if and (not $tag) .Chart -}}
{{- $tag = .Chart.AppVersion -}}
{{- end -}}
{{- printf "%s:%s" .Values.image.repository (required "image.tag is required when the twc-auth-proxy templates are included from another chart" $tag) -}}
{{- end -}}

{{/* Where the container finds its config and its secrets. */}}
{{- define "twc-auth-proxy.configDir" -}}/etc/twc-auth-proxy{{- end -}}
{{- define "twc-auth-proxy.secretDir" -}}/var/run/secrets/twc-auth-proxy{{- end -}}

{{- define "twc-auth-proxy.secretName" -}}
{{- default (include "twc-auth-proxy.fullname" .) .Values.existingSecret -}}
{{- end -}}

{{/*
twc-auth-proxy.duration renders a duration value (list "name" value) for
config.yaml, refusing zero: the proxy reads 0 as its own default, never as
"none", so "0s" would silently mean 60s, 10s or 336h. A third element is
the least number of seconds the proxy takes.
*/}}
{{- define "twc-auth-proxy.duration" -}}
{{- $name := index . 0 -}}
{{- $d := index . 1 | toString -}}
{{- $s := include "twc-auth-proxy.seconds" (list $name $d) | float64 -}}
{{- if le $s 0.0 -}}
{{- fail (printf "%s must be more than 0, not %q: the proxy would read it as its default" $name $d) -}}
{{- end -}}
{{- if and (gt (len .) 2) (lt $s (index . 2 | float64)) -}}
{{- fail (printf "%s must be at least %vs, not %q" $name (index . 2) $d) -}}
{{- end -}}
{{- $d | toJson -}}
{{- end -}}

{{/*
twc-auth-proxy.seconds is a duration value (list "name" value), in the Go
syntax values.schema.json admits, in seconds: the sum of its components.
It refuses what time.ParseDuration refuses although the syntax is right:
more than 2^63-1 ns. sprig's addf and mulf compute in decimal.
*/}}
{{- define "twc-auth-proxy.seconds" -}}
{{- $name := index . 0 -}}
{{- $d := index . 1 | toString -}}
{{- $unit := dict "h" 3600.0 "m" 60.0 "s" 1.0 "ms" 0.001 "us" 0.000001 "µs" 0.000001 "μs" 0.000001 "ns" 0.000000001 -}}
{{- $s := 0.0 -}}
{{- range regexFindAll "[0-9.]+[^0-9.]+" $d -1 -}}
{{- $n := regexFind "^[0-9.]+" . -}}
{{- $s = addf $s (mulf (float64 $n) (get $unit (trimPrefix $n .))) -}}
{{- end -}}
{{- if gt $s 9223372036.854775807 -}}
{{- fail (printf "%s %s is out of range: a duration is at most 2562047h (about 292 years)" $name $d) -}}
{{- end -}}
{{- $s -}}
{{- end -}}

{{/*
twc-auth-proxy.checkPorts refuses ports that cannot all be bound in one
pod, and a deployment whose upstream nothing serves.
*/}}
{{- define "twc-auth-proxy.checkPorts" -}}
{{- $v := .Values -}}
{{- $listen := int $v.listenPort -}}
{{- $metrics := int $v.metricsPort -}}
{{- if eq $listen $metrics -}}
{{- fail (printf "metricsPort and listenPort must differ (both %d): the proxy binds both in the pod" $listen) -}}
{{- end -}}
{{- if not $v.upstream.url -}}
{{- $up := int $v.upstream.port -}}
{{- if or (eq $up $listen) (eq $up $metrics) -}}
{{- fail (printf "upstream.port (%d) is the proxy's own listenPort or metricsPort: the dashboard must listen on another port of 127.0.0.1" $up) -}}
{{- end -}}
{{- if and (eq $v.mode "deployment") (not $v.dashboard.enabled) -}}
{{- fail "dashboard.enabled=false needs upstream.url (e.g. https://twc.example.com:8111): without the dashboard container nothing listens on 127.0.0.1:<upstream.port>" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
twc-auth-proxy.checkSecretKeys refuses two secrets under one key of the
Secret: the chart's own Secret would keep only one of them, and with
existingSecret the proxy would read one file for both (the session key
sent to the auth server as the client secret or the service password).
*/}}
{{- define "twc-auth-proxy.checkSecretKeys" -}}
{{- $k := .Values.secretKeys -}}
{{- $names := list "clientSecret" "sessionSecret" -}}
{{- if .Values.serviceAccount.enabled -}}
{{- $names = append $names "servicePassword" -}}
{{- end -}}
{{- $seen := dict -}}
{{- range $names -}}
{{- $key := get $k . -}}
{{- if hasKey $seen $key -}}
{{- fail (printf "secretKeys.%s and secretKeys.%s are both %q: each secret needs a key of its own" . (get $seen $key) $key) -}}
{{- end -}}
{{- $_ := set $seen $key . -}}
{{- end -}}
{{- end -}}

{{/*
twc-auth-proxy.checkUpstreamTLS refuses what the proxy would refuse at
start (upstream_ca_file, upstream_insecure_skip_verify): a bundle and a
path together, either with insecureSkipVerify, any of them for an http
upstream.
*/}}
{{- define "twc-auth-proxy.checkUpstreamTLS" -}}
{{- $u := .Values.upstream -}}
{{- if and $u.caBundle $u.caFile -}}
{{- fail "upstream.caBundle and upstream.caFile: set one, not both" -}}
{{- end -}}
{{- if and (or $u.caBundle $u.caFile) $u.insecureSkipVerify -}}
{{- fail "upstream.insecureSkipVerify and upstream.caBundle/caFile: set one, not both (with the CA the certificate is checked)" -}}
{{- end -}}
{{- $url := include "twc-auth-proxy.upstream" . -}}
{{- if and (or $u.caBundle $u.caFile $u.insecureSkipVerify) (not (hasPrefix "https://" (lower $url))) -}}
{{- fail (printf "upstream.caBundle, upstream.caFile and upstream.insecureSkipVerify are for an https upstream.url, and the upstream is %s" $url) -}}
{{- end -}}
{{- end -}}

{{/*
twc-auth-proxy.redirectUrl is redirectUrl, whose path must not be one of
the proxy's own routes (proxy/server.go), which the proxy refuses at start.
values.schema.json checks the rest of it; a JSON Schema "not" could refuse
these paths too, but helm would report only "'not' failed".
*/}}
{{- define "twc-auth-proxy.redirectUrl" -}}
{{- $url := required "redirectUrl is required: the callback URL as browsers see it, e.g. https://dash.example.com/oauth2/callback" .Values.redirectUrl -}}
{{- $routes := list "/oauth2/start" "/oauth2/sign_out" "/oauth2/userinfo" "/oauth2/auth" -}}
{{- $path := (urlParse $url).path -}}
{{- if has $path $routes -}}
{{- fail (printf "redirectUrl: its path %s is one of the proxy's own routes (%s); use another, e.g. /oauth2/callback" $path (join ", " $routes)) -}}
{{- end -}}
{{- $url -}}
{{- end -}}

{{/*
twc-auth-proxy.checkSkipAuth refuses a skipAuth rule whose path regex,
after METHOD=, the proxy would refuse at start: values.schema.json checks
each rule as a whole regex, which "GET=" and "GET=*.js" are and their
path regexes are not. A regex is valid exactly when "|" + it matches the
empty string: regexMatch cannot report a compile error, and is false on one.
*/}}
{{- define "twc-auth-proxy.checkSkipAuth" -}}
{{- range $i, $rule := .Values.skipAuth -}}
{{- $method := regexFind "^[A-Z]+=" $rule -}}
{{- $path := trimPrefix $method $rule -}}
{{- if and $method (not $path) -}}
{{- fail (printf "skipAuth[%d] %q: no path regex after %s, e.g. %s^/static/" $i $rule $method $method) -}}
{{- else if and $method (not (regexMatch (printf "|%s" $path) "")) -}}
{{- fail (printf "skipAuth[%d] %q: the path regex after %s is not a valid Go regex (it may not start with *, + or ?)" $i $rule $method) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "twc-auth-proxy.upstream" -}}
{{- if .Values.upstream.url -}}
{{- .Values.upstream.url -}}
{{- else -}}
{{- printf "http://127.0.0.1:%d" (int .Values.upstream.port) -}}
{{- end -}}
{{- end -}}

{{/*
twc-auth-proxy.config is config.yaml. Values go through toJson: JSON
scalars are YAML, so regexes and URLs need no further quoting. Secrets are
never in it: the *_file keys name files of the mounted Secret.
*/}}
{{- define "twc-auth-proxy.config" -}}
{{- $v := .Values -}}
{{- $secretDir := include "twc-auth-proxy.secretDir" . -}}
{{- if not (has $v.mode (list "deployment" "sidecar")) -}}
{{- fail (printf "mode must be deployment or sidecar, not %q" $v.mode) -}}
{{- end -}}
{{- if and $v.auth.caBundle $v.auth.caFile -}}
{{- fail "auth.caBundle and auth.caFile: set one, not both" -}}
{{- end -}}
{{- include "twc-auth-proxy.checkUpstreamTLS" . -}}
{{- include "twc-auth-proxy.checkPorts" . -}}
{{- include "twc-auth-proxy.checkSkipAuth" . -}}
{{- include "twc-auth-proxy.checkSecretKeys" . -}}
{{- if lt (int $v.shutdownTimeoutSeconds) 1 -}}
{{- fail "shutdownTimeoutSeconds must be at least 1: the proxy reads 0 as its default, 20 s, which terminationGracePeriodSeconds would not cover" -}}
{{- end -}}
listen: {{ printf ":%d" (int $v.listenPort) | toJson }}
metrics_listen: {{ printf ":%d" (int $v.metricsPort) | toJson }}
upstream: {{ include "twc-auth-proxy.upstream" . | toJson }}
redirect_url: {{ include "twc-auth-proxy.redirectUrl" . | toJson }}
upstream_timeout: {{ include "twc-auth-proxy.duration" (list "upstreamTimeout" $v.upstreamTimeout) }}
{{- if $v.upstream.caBundle }}
upstream_ca_file: {{ printf "%s/upstream-ca.crt" (include "twc-auth-proxy.configDir" .) | toJson }}
{{- else if $v.upstream.caFile }}
upstream_ca_file: {{ $v.upstream.caFile | toJson }}
{{- end }}
upstream_insecure_skip_verify: {{ $v.upstream.insecureSkipVerify | toJson }}
shutdown_timeout: {{ printf "%ds" (int $v.shutdownTimeoutSeconds) | toJson }}
skip_auth: {{ $v.skipAuth | default list | toJson }}
trusted_proxies: {{ $v.trustedProxies | default list | toJson }}
auth:
  issuer_url: {{ required "auth.issuerUrl is required, e.g. https://twc.example.com:8443/authentication" $v.auth.issuerUrl | toJson }}
  {{- with $v.auth.discoveryUrl }}
  discovery_url: {{ . | toJson }}
  {{- end }}
  client_id: {{ required "auth.clientId is required" $v.auth.clientId | toJson }}
  client_secret_file: {{ printf "%s/%s" $secretDir $v.secretKeys.clientSecret | toJson }}
  client_auth: {{ $v.auth.clientAuth | toJson }}
  scopes: {{ $v.auth.scopes | default list | toJson }}
  {{- $_ := include "twc-auth-proxy.seconds" (list "auth.refreshMargin" $v.auth.refreshMargin) }}
  refresh_margin: {{ $v.auth.refreshMargin | toJson }}
  require_nonce: {{ $v.auth.requireNonce | toJson }}
  timeout: {{ include "twc-auth-proxy.duration" (list "auth.timeout" $v.auth.timeout) }}
  {{- with $v.auth.postLogoutRedirectUrl }}
  post_logout_redirect_url: {{ . | toJson }}
  {{- end }}
  {{- if $v.auth.caBundle }}
  ca_file: {{ printf "%s/ca.crt" (include "twc-auth-proxy.configDir" .) | toJson }}
  {{- else if $v.auth.caFile }}
  ca_file: {{ $v.auth.caFile | toJson }}
  {{- end }}
  insecure_skip_verify: {{ $v.auth.insecureSkipVerify | toJson }}
session:
  cookie_name: {{ $v.session.cookieName | toJson }}
  cookie_secure: {{ $v.session.cookieSecure | toJson }}
  {{- with $v.session.cookieDomain }}
  cookie_domain: {{ . | toJson }}
  {{- end }}
  secret_file: {{ printf "%s/%s" $secretDir $v.secretKeys.sessionSecret | toJson }}
  lifetime: {{ include "twc-auth-proxy.duration" (list "session.lifetime" $v.session.lifetime 1) }}
log:
  format: {{ $v.log.format | toJson }}
  level: {{ $v.log.level | toJson }}
  requests: {{ $v.log.requests | toJson }}
service_account:
  enabled: {{ $v.serviceAccount.enabled | toJson }}
  {{- if $v.serviceAccount.enabled }}
  username: {{ required "serviceAccount.username is required with serviceAccount.enabled" $v.serviceAccount.username | toJson }}
  password_file: {{ printf "%s/%s" $secretDir $v.secretKeys.servicePassword | toJson }}
  {{- with $v.serviceAccount.clientId }}
  client_id: {{ . | toJson }}
  {{- end }}
  routes: {{ $v.serviceAccount.routes | default list | toJson }}
  {{- end }}
api_tokens:
  enabled: {{ $v.apiTokens.enabled | toJson }}
  audiences: {{ $v.apiTokens.audiences | default list | toJson }}
{{ end -}}

{{/* twc-auth-proxy.configData is the ConfigMap's data. */}}
{{- define "twc-auth-proxy.configData" -}}
config.yaml: |
{{ include "twc-auth-proxy.config" . | trim | indent 2 }}
{{- with .Values.auth.caBundle }}
ca.crt: |
{{ . | trim | indent 2 }}
{{- end }}
{{- with .Values.upstream.caBundle }}
upstream-ca.crt: |
{{ . | trim | indent 2 }}
{{- end }}
{{- end -}}

{{/*
twc-auth-proxy.secretData is the data of the Secret the chart creates, empty
with existingSecret. The session secret must be given one way or the other.
The proxy trims each secret: one of only blanks is none.
*/}}
{{- define "twc-auth-proxy.secretData" -}}
{{- $v := .Values -}}
{{- if not $v.existingSecret -}}
{{- $session := include "twc-auth-proxy.sessionKeys" . -}}
{{- if not (trim $v.auth.clientSecret) -}}
{{- fail "auth.clientSecret is required (TWC's authentication.client.secret), or set existingSecret" -}}
{{- end -}}
{{- if and $v.serviceAccount.enabled (not (trim $v.serviceAccount.password)) -}}
{{- fail "serviceAccount.password is required with serviceAccount.enabled, or set existingSecret" -}}
{{- end }}
{{ $v.secretKeys.clientSecret }}: {{ $v.auth.clientSecret | b64enc }}
{{ $v.secretKeys.sessionSecret }}: {{ $session | b64enc }}
{{- if $v.serviceAccount.enabled }}
{{ $v.secretKeys.servicePassword }}: {{ $v.serviceAccount.password | b64enc }}
{{- end }}
{{- end -}}
{{- end -}}

{{/*
twc-auth-proxy.sessionKeys is the session secret file, checked as the proxy
reads it: keys separated by newlines or commas (a list is joined by
newlines), each trimmed, each standard or URL-safe base64, padded or not,
of at least 32 bytes (43 characters without padding). The messages are the
proxy's, and never show a key.
*/}}
{{- define "twc-auth-proxy.sessionKeys" -}}
{{- $required := "session.secret is required: set session.secret to base64 of 32 random bytes (openssl rand -base64 32), or existingSecret to a Secret holding it under secretKeys.sessionSecret" -}}
{{- $secret := required $required .Values.session.secret -}}
{{- if kindIs "slice" $secret -}}
{{- $secret = join "\n" $secret -}}
{{- end -}}
{{- $keys := list -}}
{{- range regexSplit "[\n\r,]" $secret -1 -}}
{{- if trim . -}}
{{- $keys = append $keys (trim .) -}}
{{- end -}}
{{- end -}}
{{- if not $keys -}}
{{- fail $required -}}
{{- end -}}
{{- range $i, $k := $keys -}}
{{- $which := "session.secret" -}}
{{- if gt (len $keys) 1 -}}
{{- $which = printf "session.secret: key %d of %d" (add1 $i) (len $keys) -}}
{{- end -}}
{{- if not (regexMatch "^(([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}(==)?|[A-Za-z0-9+/]{3}=?)?|([A-Za-z0-9_-]{4})*([A-Za-z0-9_-]{2}(==)?|[A-Za-z0-9_-]{3}=?)?)$" $k) -}}
{{- fail (printf "%s: not valid base64 (generate one with: openssl rand -base64 32)" $which) -}}
{{- end -}}
{{- $chars := len (trimSuffix "=" (trimSuffix "=" $k)) -}}
{{- if lt $chars 43 -}}
{{- fail (printf "%s: too short: %d bytes after base64 decoding, need at least 32 (openssl rand -base64 32)" $which (div (mul $chars 3) 4)) -}}
{{- end -}}
{{- end -}}
{{- $secret -}}
{{- end -}}

{{- define "twc-auth-proxy.preStopSleepSeconds" -}}
{{- int (default 0 .Values.preStopSleepSeconds) -}}
{{- end -}}

{{/*
twc-auth-proxy.terminationGracePeriodSeconds: longer than the preStop sleep
plus shutdown_timeout, so the kubelet never kills a draining proxy.
*/}}
{{- define "twc-auth-proxy.terminationGracePeriodSeconds" -}}
{{- $need := add (int .Values.shutdownTimeoutSeconds) (int (include "twc-auth-proxy.preStopSleepSeconds" .)) -}}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds -}}
{{- add $need 5 -}}
{{- else if le (int .Values.terminationGracePeriodSeconds) $need -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed shutdownTimeoutSeconds + preStopSleepSeconds (%d)" (int .Values.terminationGracePeriodSeconds) $need) -}}
{{- else -}}
{{- int .Values.terminationGracePeriodSeconds -}}
{{- end -}}
{{- end -}}

{{/*
twc-auth-proxy.podAnnotations: checksums of the config and the secret, so
that a change rolls the pods, and the prometheus.io scrape annotations.
With existingSecret the checksum covers its name and keys, not its content
(the chart cannot see it): restart the pods after changing it.
*/}}
{{- define "twc-auth-proxy.podAnnotations" -}}
checksum/twc-auth-proxy-config: {{ include "twc-auth-proxy.configData" . | sha256sum }}
{{- if .Values.existingSecret }}
checksum/twc-auth-proxy-secret: {{ printf "%s %s" .Values.existingSecret (toJson .Values.secretKeys) | sha256sum }}
{{- else }}
checksum/twc-auth-proxy-secret: {{ include "twc-auth-proxy.secretData" . | sha256sum }}
{{- end }}
{{- if .Values.metrics.podAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .Values.metricsPort | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end -}}

{{/* twc-auth-proxy.volumes: the pod volumes the sidecar mounts. */}}
{{- define "twc-auth-proxy.volumes" -}}
- name: twc-auth-proxy-config
  configMap:
    name: {{ include "twc-auth-proxy.fullname" . }}
# 0444: the files belong to root and the proxy runs as 65532; only the
# proxy's container mounts them.
- name: twc-auth-proxy-secrets
  secret:
    secretName: {{ include "twc-auth-proxy.secretName" . }}
    defaultMode: 0444
{{- end -}}

{{/*
twc-auth-proxy.sidecar: the proxy's container, as one item of a containers
list. Include it with nindent under `containers:`.
*/}}
{{- define "twc-auth-proxy.sidecar" -}}
{{- $v := .Values -}}
{{- $preStop := int (include "twc-auth-proxy.preStopSleepSeconds" .) -}}
- name: twc-auth-proxy
  image: {{ include "twc-auth-proxy.image" . | quote }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  args: ["--config", "{{ include "twc-auth-proxy.configDir" . }}/config.yaml"]
  ports:
    - name: proxy
      containerPort: {{ int $v.listenPort }}
      protocol: TCP
    - name: proxy-metrics
      containerPort: {{ int $v.metricsPort }}
      protocol: TCP
  {{- /* No GOMEMLIMIT: the binary sets 90% of the container's memory limit itself. */}}
  {{- with $v.extraEnv }}
  env:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.extraEnvFrom }}
  envFrom:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  livenessProbe:
    httpGet:
      path: /healthz
      port: proxy-metrics
    {{- toYaml $v.probes.liveness | nindent 4 }}
  readinessProbe:
    httpGet:
      path: /readyz
      port: proxy-metrics
    {{- toYaml $v.probes.readiness | nindent 4 }}
  {{- if gt $preStop 0 }}
  lifecycle:
    preStop:
      sleep:
        seconds: {{ $preStop }}
  {{- end }}
  {{- with $v.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml $v.securityContext | nindent 4 }}
  volumeMounts:
    - name: twc-auth-proxy-config
      mountPath: {{ include "twc-auth-proxy.configDir" . }}
      readOnly: true
    - name: twc-auth-proxy-secrets
      mountPath: {{ include "twc-auth-proxy.secretDir" . }}
      readOnly: true
    {{- with $v.extraVolumeMounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end -}}
