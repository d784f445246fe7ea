package main

import (
	"math"
	"strconv"
	"strings"

	"go.uber.org/zap"
)

// Where the container's memory limit is read: cgroup v2 first (what current
// Kubernetes nodes run), then cgroup v1. Inside a container both are the
// container's own cgroup.
const (
	cgroupV2MemoryMax = "/sys/fs/cgroup/memory.max"
	cgroupV1MemoryMax = "/sys/fs/cgroup/memory/memory.limit_in_bytes"
)

// memoryLimitShare is the part of the container's memory limit given to the
// Go runtime as its soft limit (GOMEMLIMIT). The rest is headroom for what
// the runtime does not count but the kernel charges to the container:
// socket buffers of many connections above all. Go's GC guide advises 5-10%.
const memoryLimitShare = 0.9

// containerMemoryLimit returns the soft memory limit for the Go runtime:
// 90% of the container's memory limit, when there is one and GOMEMLIMIT is
// not set (an explicit GOMEMLIMIT, "off" included, is the operator's
// choice and is left alone). readFile reads a file (os.ReadFile).
func containerMemoryLimit(getenv func(string) string, readFile func(string) ([]byte, error)) (int64, bool) {
	if getenv("GOMEMLIMIT") != "" {
		return 0, false
	}
	for _, path := range []string{cgroupV2MemoryMax, cgroupV1MemoryMax} {
		b, err := readFile(path)
		if err != nil {
			continue
		}
		limit, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		// "max" (v2) or v1's "no limit", the largest page-aligned int64:
		// no limit. Anything at or above 2^62 is no real container's.
		if err != nil || limit <= 0 || limit >= 1<<62 {
			return 0, false
		}
		return int64(math.Floor(float64(limit) * memoryLimitShare)), true
	}
	return 0, false
}

// memoryLimitField is the start line's record of the runtime's soft memory
// limit (debug.SetMemoryLimit(-1)), where one is set.
func memoryLimitField(limit int64) zap.Field {
	if limit == math.MaxInt64 {
		return zap.Skip()
	}
	return zap.Int64("gomemlimit_bytes", limit)
}
