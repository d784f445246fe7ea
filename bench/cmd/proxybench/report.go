package main

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"
)

// Targets of the issue, judged on medians of within-round figures.
const (
	minThroughputRatio = 0.90
	maxCPURatio        = 1.15
	maxAddedP50ms      = 0.2
	p50Conns           = 8 // the added-latency target is at 8 connections
	maxPeakRSS         = 40 << 20
)

// report prints the results as Markdown, ready to paste into a README.
func report(w io.Writer, o options, res *results) {
	fmt.Fprintf(w, "## twc-auth-proxy end-to-end benchmark\n\n")
	fmt.Fprintf(w, "%s; load average %s before the run; loopback only. %d rounds; in each, for each connection count, every proxy gets %v of warm-up, then %v of measured closed-loop load cut into %d slices, the proxies taking turns slice by slice in mirrored passes (A B C, C B A, ...) whose start rotates between rounds. Absolute figures are medians over rounds; ratios and differences are taken within each round, then their median is shown with the range over rounds in brackets. CPU is the proxy process's own (all threads, /proc/PID/task/*/schedstat). Every round has fresh proxy processes; peak RSS is the highest of a proxy's processes.\n\n",
		res.env, res.loadavg, o.rounds, o.warmup, o.duration, o.slices)
	if o.cpuprofile != "" {
		fmt.Fprintf(w, "**Profiled run**: the bare proxies and our main one ran under the CPU profiler, ours in the bench's in-process wiring, not the binary; use a run without -cpuprofile for the targets.\n\n")
	}
	bare := res.index(kBare)
	// refs are the informational references: each gets its own columns.
	type ref struct {
		k     kind
		title string // in column heads and check names
	}
	var refs []ref
	for _, r := range []ref{{kNoCookie, "bare without cookie"}, {kSame, "bare same bytes"}} {
		if res.index(r.k) >= 0 {
			refs = append(refs, r)
		}
	}
	head := "| conns | proxy | req/s | p50 ms | p99 ms | CPU µs/req | req/s ÷ bare | CPU/req ÷ bare | p50 − bare ms |"
	rule := "|---:|---|---:|---:|---:|---:|---:|---:|---:|"
	for _, r := range refs {
		head += fmt.Sprintf(" req/s ÷ %s | CPU/req ÷ %s |", r.title, r.title)
		rule += "---:|---:|"
	}
	fmt.Fprintln(w, head+" errors |")
	fmt.Fprintln(w, rule+"---:|")
	var checks []check
	for ci, conns := range o.conns {
		rounds := res.samples[ci]
		for t, label := range res.labels {
			col := func(f func(sample) float64) []float64 {
				xs := make([]float64, len(rounds))
				for r, row := range rounds {
					xs[r] = f(row[t])
				}
				return xs
			}
			rps := col(sample.rps)
			cpu := col(sample.cpuPerReq)
			p50 := col(func(s sample) float64 { return ms(s.p50) })
			p99 := col(func(s sample) float64 { return ms(s.p99) })
			errs := 0
			for _, row := range rounds {
				errs += row[t].errs
			}
			// against is target t's ratios to target ref, within each round.
			against := func(ref int) (rpsRatio, cpuRatio, added []float64) {
				for _, row := range rounds {
					rpsRatio = append(rpsRatio, row[t].rps()/row[ref].rps())
					cpuRatio = append(cpuRatio, row[t].cpuPerReq()/row[ref].cpuPerReq())
					added = append(added, ms(row[t].p50)-ms(row[ref].p50))
				}
				return
			}
			line := fmt.Sprintf("| %d | %s | %.0f | %.3f | %.3f | %.1f |", conns, label, median(rps), median(p50), median(p99), median(cpu))
			if t == bare {
				line += " 1 | 1 | 0 |"
			} else {
				rpsRatio, cpuRatio, added := against(bare)
				line += " " + withRange(rpsRatio, "%.2f×") + " | " + withRange(cpuRatio, "%.2f×") + " | " + withRange(added, "%+.3f") + " |"
			}
			for _, r := range refs {
				switch ri := res.index(r.k); {
				case ri == t:
					line += " 1 | 1 |"
				case res.kinds[t] < kOurs:
					line += " — | — |"
				default:
					rpsRatio, cpuRatio, _ := against(ri)
					line += " " + withRange(rpsRatio, "%.2f×") + " | " + withRange(cpuRatio, "%.2f×") + " |"
				}
			}
			fmt.Fprintf(w, "%s %d |\n", line, errs)
			if res.kinds[t] < kOurs {
				continue
			}
			suffix := ""
			if res.kinds[t] == kQuiet {
				suffix = ", log.requests: false"
			}
			rpsRatio, cpuRatio, added := against(bare)
			if res.kinds[t] == kCompare {
				checks = append(checks,
					info(fmt.Sprintf("throughput ÷ bare, %d conns, -compare-bin", conns), fmt.Sprintf("%.2f×", median(rpsRatio))),
					info(fmt.Sprintf("CPU per request ÷ bare, %d conns, -compare-bin", conns), fmt.Sprintf("%.2f×", median(cpuRatio))))
				if oi := res.index(kOurs); oi >= 0 {
					oRPS, oCPU, _ := against(oi)
					checks = append(checks,
						info(fmt.Sprintf("throughput -compare-bin ÷ ours, %d conns", conns), fmt.Sprintf("%.2f×", median(oRPS))),
						info(fmt.Sprintf("CPU per request -compare-bin ÷ ours, %d conns", conns), fmt.Sprintf("%.2f×", median(oCPU))))
				}
				continue
			}
			checks = append(checks,
				check{name: fmt.Sprintf("throughput ÷ bare, %d conns%s", conns, suffix), measured: fmt.Sprintf("%.2f×", median(rpsRatio)),
					limit: fmt.Sprintf("≥ %.2f×", minThroughputRatio), pass: median(rpsRatio) >= minThroughputRatio && errs == 0},
				check{name: fmt.Sprintf("CPU per request ÷ bare, %d conns%s", conns, suffix), measured: fmt.Sprintf("%.2f×", median(cpuRatio)),
					limit: fmt.Sprintf("≤ %.2f×", maxCPURatio), pass: median(cpuRatio) <= maxCPURatio})
			if conns == p50Conns {
				checks = append(checks,
					check{name: fmt.Sprintf("p50 added latency, %d conns%s", conns, suffix), measured: fmt.Sprintf("%+.3f ms", median(added)),
						limit: fmt.Sprintf("≤ %.1f ms", maxAddedP50ms), pass: median(added) <= maxAddedP50ms})
			}
			for _, r := range refs {
				rRPS, rCPU, _ := against(res.index(r.k))
				checks = append(checks,
					info(fmt.Sprintf("throughput ÷ %s, %d conns%s", r.title, conns, suffix), fmt.Sprintf("%.2f×", median(rRPS))),
					info(fmt.Sprintf("CPU per request ÷ %s, %d conns%s", r.title, conns, suffix), fmt.Sprintf("%.2f×", median(rCPU))))
			}
		}
	}
	fmt.Fprintln(w)

	fmt.Fprintln(w, "| process | peak RSS (VmHWM) |")
	fmt.Fprintln(w, "|---|---:|")
	for _, p := range res.peaks {
		fmt.Fprintf(w, "| %s | %.1f MiB |\n", p.name, mib(p.peak))
		if p.ours {
			checks = append(checks, check{name: "peak RSS, " + p.name, measured: fmt.Sprintf("%.1f MiB", mib(p.peak)),
				limit: fmt.Sprintf("≤ %d MiB", maxPeakRSS>>20), pass: p.peak <= maxPeakRSS})
		}
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "Every request to bare and to our proxy carries the same %d-byte Cookie header (the sealed session of a real login); bare passes it on and sets \"Authorization: Token x\", ours opens it, drops it and forwards the %d-byte ID token with X-Forwarded-For/Host/Proto and X-Request-Id.", res.cookie, res.idToken)
	if res.index(kNoCookie) >= 0 {
		fmt.Fprintf(w, " \"Bare without cookie\" is the same bare proxy sent requests without any Cookie header.")
	}
	if res.index(kSame) >= 0 {
		fmt.Fprintf(w, " \"Bare, same bytes\" is the bare proxy's code fed the same Cookie header, which it drops, forwarding a %d-byte token, X-Forwarded-For/Host/Proto and a random X-Request-Id (also on its response): our proxy's bytes without its logic.", res.idToken)
	}
	sink := "to a file (as with `2>file`; nothing reads it during the run)"
	if o.logSink == "pipe" {
		sink = "to a pipe that this benchmark, which also drives the load, reads and counts"
	}
	fmt.Fprintf(w, " Per-request logging is on in our main row, its JSON lines going %s: its processes wrote %d lines in all (their start and shutdown lines included) while answering %d requests (warm-ups and probes included).\n\n",
		sink, res.logLines, res.requests[res.index(kOurs)])
	if o.cpuprofile != "" {
		fmt.Fprintf(w, "The profiles cover %d requests to the bare proxy and %d to ours (warm-ups included)", res.requests[bare], res.requests[res.index(kOurs)])
		if si := res.index(kSame); si >= 0 {
			fmt.Fprintf(w, ", %d to bare with the same bytes", res.requests[si])
		}
		fmt.Fprintf(w, ": divide by them to compare per request.\n\n")
	}

	if r := res.idle; r != nil {
		fmt.Fprintf(w, "**Idle connections**: %d keep-alive connections to a fresh twc-auth-proxy, each after one authenticated request, then idle: RSS %.1f → %.1f MiB, **%.1f KiB per connection**.\n\n",
			r.n, mib(r.before), mib(r.after), r.perConn()/1024)
	}
	if s := res.storm; s != nil {
		fmt.Fprintf(w, "**Refresh storm**: %d concurrent clients, one session each (real logins) and their own cookie jars; every session's ID token entered the %v refresh margin during the %.1f s run (%d already before it began). %.0f req/s, **%d failed** of %d requests",
			s.clients, stormMargin, s.elapsed.Seconds(), s.crossedBefore, float64(s.requests)/s.elapsed.Seconds(), s.failed, s.requests)
		if s.failed > 0 {
			fmt.Fprintf(w, " (first: %s)", s.firstFailure)
		}
		fmt.Fprintf(w, "; token-endpoint refresh calls per session: %s; %d refresh calls in all; %.1f µs CPU/request; RSS %.1f MiB after the logins, peak %.1f MiB.\n\n",
			perSession(s), s.refreshCalls, float64(s.cpu.Nanoseconds())/1e3/float64(max(s.requests, 1)), mib(s.rssBefore), mib(s.peak))
		// The RSS limit is for the throughput load; the storm's
		// peak (200 requests in flight at once) is shown beside it.
		checks = append(checks,
			info(fmt.Sprintf("peak RSS, twc-auth-proxy in the refresh storm (%d clients)", s.clients), fmt.Sprintf("%.1f MiB", mib(s.peak))),
			check{name: "refresh storm: failed requests", measured: fmt.Sprint(s.failed), limit: "0", pass: s.failed == 0},
			check{name: "refresh storm: token-endpoint calls per session", measured: perSession(s), limit: "exactly 1 each", pass: s.exactlyOnce()})
	}

	fmt.Fprintln(w, "### Targets")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| target | measured | limit | result |")
	fmt.Fprintln(w, "|---|---:|---:|---|")
	for _, c := range checks {
		verdict := "FAIL"
		switch {
		case c.info:
			verdict = "info"
		case c.pass:
			verdict = "PASS"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", c.name, c.measured, c.limit, verdict)
	}
}

type check struct {
	name, measured, limit string
	pass                  bool
	info                  bool // informational: no limit, neither PASS nor FAIL
}

func info(name, measured string) check {
	return check{name: name + " (informational)", measured: measured, limit: "—", info: true}
}

// perSession says how many sessions made how many refresh calls.
func perSession(s *stormResult) string {
	keys := make([]int, 0, len(s.perSession))
	for k := range s.perSession {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%d for %d/%d sessions", k, s.perSession[k], s.clients))
	}
	return strings.Join(parts, ", ")
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return math.NaN()
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// withRange is the median, then the range over rounds.
func withRange(xs []float64, format string) string {
	if len(xs) == 1 {
		return fmt.Sprintf(format, xs[0])
	}
	return fmt.Sprintf(format+" ("+format+"…"+format+")", median(xs), slices.Min(xs), slices.Max(xs))
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "unknown"
}
