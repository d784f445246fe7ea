#!/bin/sh
# build.sh OUT: builds the twc-auth-proxy release binary, static and
# reproducible, into OUT (default ./twc-auth-proxy). The Dockerfile and
# deploy/ci.sh both run this script, so the flags live here only.
#
#   CGO_ENABLED=0   no libc: the binary runs on distroless/static or scratch
#   -trimpath       no build-machine paths in the binary
#   -buildvcs=false the image build has no .git; CI's checkout does: stamp neither
#   -s -w           no symbol table or DWARF (stack traces keep function names)
#   -buildid=       no build id, so equal sources give equal bytes
#
# GOOS and GOARCH from the environment choose the target (the Dockerfile
# sets them from the build platform).
set -eu
out=${1:-twc-auth-proxy}
case $out in
/*) ;;
*) out=$(pwd)/$out ;;
esac
cd "$(dirname "$0")/.."
CGO_ENABLED=0 exec go build -trimpath -buildvcs=false -ldflags='-s -w -buildid=' -o "$out" ./cmd/twc-auth-proxy
