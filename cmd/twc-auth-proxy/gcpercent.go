package main

import (
	"runtime/metrics"

	"go.uber.org/zap"
)

// defaultGCPercent is the binary's GOGC when the environment sets none.
//
// With Go's 100, a proxy whose live heap is a few hundred KiB collects
// every 3-4 MiB of allocation: at 10 000 requests a second, 40 cycles a
// second, and on a busy node each cycle's stop-the-world phases wait for
// threads the kernel has put aside. 150 spaces the cycles out by about 40%;
// in same-run A/B benchmarks (README, Performance) it cost about 5% less
// CPU per request for about 2 MiB more resident memory under load, and 4
// MiB more in the 200-client refresh storm. The soft memory limit (see
// memlimit.go) still bounds the heap as the container's limit nears.
const defaultGCPercent = 150

// gcPercent returns the GC percent the binary sets: defaultGCPercent,
// unless GOGC is set (an explicit GOGC, "off" included, is the
// operator's choice and is left alone).
func gcPercent(getenv func(string) string) (int, bool) {
	if getenv("GOGC") != "" {
		return 0, false
	}
	return defaultGCPercent, true
}

// gcPercentField is the start line's record of the GC percent in force
// (-1: GOGC=off).
func gcPercentField() zap.Field {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return zap.Skip()
	}
	return zap.Int64("gogc", int64(s[0].Value.Uint64()))
}
