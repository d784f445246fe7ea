# syntax=docker/dockerfile:1
#
# twc-auth-proxy image: a static binary on distroless/static, running as the
# numeric non-root user 65532 (Kubernetes can check runAsNonRoot only against
# a numeric USER). Nothing is written at run time, so it runs with a
# read-only root filesystem. The config comes from a mounted ConfigMap
# (--config), secrets from a mounted Secret (*_file keys) or the environment
# (TWC_AUTH_PROXY_CLIENT_SECRET, TWC_AUTH_PROXY_SESSION_SECRET,
# TWC_AUTH_PROXY_SERVICE_PASSWORD). See README.md, "Deploy on Kubernetes".
#
#   docker build -t twc-auth-proxy .

# Keep GO_VERSION equal to the go line of go.mod (deploy/manifests_test.go checks).
ARG GO_VERSION=1.26.8

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
# go build fetches only the modules the binary needs (go.mod also lists
# test-only ones); the cache mounts keep them and the build cache between builds.
COPY . .
ARG TARGETOS TARGETARCH
# The same script CI runs (deploy/ci.sh): one place for the build flags.
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    GOOS=$TARGETOS GOARCH=$TARGETARCH sh deploy/build.sh /out/twc-auth-proxy

# distroless/static: CA certificates, tzdata, /etc/passwd with nonroot; no shell.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/twc-auth-proxy /usr/local/bin/twc-auth-proxy
USER 65532:65532
# 4180: the proxy (listen); 9100: /metrics, /healthz, /readyz (metrics_listen).
# In a container both must bind all addresses: listen ":4180", metrics_listen ":9100".
EXPOSE 4180 9100
ENTRYPOINT ["/usr/local/bin/twc-auth-proxy"]
CMD ["--config", "/etc/twc-auth-proxy/config.yaml"]
