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
	fmt.Fprintf(w, "%s; load average %s before the run; loopback only. %d rounds; in each, for each connection count, every proxy gets %v of warm-up, then %v of measured closed-loop load cut into %d slices, the proxies taking turns slice by slice in mirrored passes (A B C, C B A, ...) whose start rotates between rounds. Absolute figures are medians over rounds; ratios and differences are taken within each round, then their median is shown with the range over rounds in brackets. CPU is the proxy process's own (all threads, /proc/PID/task/*/schedstat).\n\n",
		res.env, res.loadavg, o.rounds, o.warmup, o.duration, o.slices)
	if o.cpuprofile != "" {
		fmt.Fprintf(w, "**Profiled run**: both bare proxies and our main one ran under the CPU profiler, ours in the bench's in-process wiring, not the binary; use a run without -cpuprofile for the targets.\n\n")
	}
	fmt.Fprintln(w, "| conns | proxy | req/s | p50 ms | p99 ms | CPU µs/req | req/s ÷ bare | CPU/req ÷ bare | p50 − bare ms | req/s ÷ same bytes | CPU/req ÷ same bytes | p50 − same bytes ms | errors |")
	fmt.Fprintln(w, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
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
			// against is target t's ratios to reference ref, within each round.
			against := func(ref int) (rpsRatio, cpuRatio, added []float64) {
				for _, row := range rounds {
					rpsRatio = append(rpsRatio, row[t].rps()/row[ref].rps())
					cpuRatio = append(cpuRatio, row[t].cpuPerReq()/row[ref].cpuPerReq())
					added = append(added, ms(row[t].p50)-ms(row[ref].p50))
				}
				return
			}
			cells := func(ref int) string {
				if ref == t {
					return "1 | 1 | 0"
				}
				if ref > t {
					return "— | — | —"
				}
				rpsRatio, cpuRatio, added := against(ref)
				return withRange(rpsRatio, "%.2f×") + " | " + withRange(cpuRatio, "%.2f×") + " | " + withRange(added, "%+.3f")
			}
			fmt.Fprintf(w, "| %d | %s | %.0f | %.3f | %.3f | %.1f | %s | %s | %d |\n",
				conns, label, median(rps), median(p50), median(p99), median(cpu), cells(tBare), cells(tSame), errs)
			if t < tOurs {
				continue
			}
			suffix := ""
			if t == tQuiet {
				suffix = ", log.requests: false"
			}
			rpsRatio, cpuRatio, added := against(tBare)
			sRPS, sCPU, sAdded := against(tSame)
			checks = append(checks,
				check{name: fmt.Sprintf("throughput ÷ bare, %d conns%s", conns, suffix), measured: fmt.Sprintf("%.2f×", median(rpsRatio)),
					limit: fmt.Sprintf("≥ %.2f×", minThroughputRatio), pass: median(rpsRatio) >= minThroughputRatio && errs == 0},
				info(fmt.Sprintf("throughput ÷ bare same bytes, %d conns%s", conns, suffix), fmt.Sprintf("%.2f×", median(sRPS))),
				check{name: fmt.Sprintf("CPU per request ÷ bare, %d conns%s", conns, suffix), measured: fmt.Sprintf("%.2f×", median(cpuRatio)),
					limit: fmt.Sprintf("≤ %.2f×", maxCPURatio), pass: median(cpuRatio) <= maxCPURatio},
				info(fmt.Sprintf("CPU per request ÷ bare same bytes, %d conns%s", conns, suffix), fmt.Sprintf("%.2f×", median(sCPU))))
			if conns == p50Conns {
				checks = append(checks,
					check{name: fmt.Sprintf("p50 added latency, %d conns%s", conns, suffix), measured: fmt.Sprintf("%+.3f ms", median(added)),
						limit: fmt.Sprintf("≤ %.1f ms", maxAddedP50ms), pass: median(added) <= maxAddedP50ms},
					info(fmt.Sprintf("p50 added latency over bare same bytes, %d conns%s", conns, suffix), fmt.Sprintf("%+.3f ms", median(sAdded))))
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
	fmt.Fprintf(w, "Requests to our proxy carry a %d-byte Cookie header (the sealed session); it forwards a %d-byte ID token where bare gets no cookie and forwards \"x\". \"Bare, same bytes\" is the bare proxy's code fed the same Cookie header, which it drops, forwarding a %d-byte token, X-Forwarded-For/Host/Proto and a random X-Request-Id (also on its response): our proxy's bytes without its logic. Per-request logging is on in our main row: its process wrote %d log lines while answering %d requests (warm-ups included).\n\n",
		res.cookie, res.idToken, res.idToken, res.logLines, res.requests[tOurs])
	if o.cpuprofile != "" {
		fmt.Fprintf(w, "The profiles cover %d requests to the bare proxy, %d to bare with the same bytes and %d to ours (warm-ups included): divide by them to compare per request.\n\n",
			res.requests[tBare], res.requests[tSame], res.requests[tOurs])
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
		checks = append(checks,
			check{name: fmt.Sprintf("peak RSS, twc-auth-proxy in the refresh storm (%d clients)", s.clients), measured: fmt.Sprintf("%.1f MiB", mib(s.peak)),
				limit: fmt.Sprintf("≤ %d MiB", maxPeakRSS>>20), pass: s.peak <= maxPeakRSS},
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
