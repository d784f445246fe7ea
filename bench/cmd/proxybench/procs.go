package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	startTimeout = 15 * time.Second // a process must be serving within this
	stopTimeout  = 5 * time.Second  // SIGTERM, then SIGKILL
	tailBytes    = 4 << 10          // stderr kept for error messages
)

// proc is one process of the benchmark: a child role of this command or our
// proxy's binary. Its stderr (our proxy's JSON log lines) goes to a file
// or through a pipe to this process, which counts its lines and keeps its
// tail; a child role announces "ready ADDR" on stdout.
type proc struct {
	name    string
	cmd     *exec.Cmd
	stdin   io.WriteCloser // closing it stops a child role
	ready   chan string    // the address a child role listens on
	logFile string         // stderr's file; "" when stderr is a pipe
	lines   atomic.Int64   // stderr lines, when it is a pipe
	tail    tailWriter     // stderr's end, when it is a pipe
	exited  chan struct{}
	err     error // of Wait, once exited is closed
}

// startProc starts argv with stdout read by this process, and stderr
// written to the file logFile or, when logFile is "", read by this process.
// The child dies with us (Pdeathsig) even if we are killed.
func startProc(name string, argv []string, env []string, logFile string) (*proc, error) {
	p := &proc{name: name, ready: make(chan string, 1), exited: make(chan struct{}), logFile: logFile}
	p.tail.max = tailBytes
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	cmd.Stdout = &readyWriter{ready: p.ready}
	cmd.Stderr = &lineCounter{n: &p.lines, w: &p.tail}
	if logFile != "" {
		f, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
		if err != nil {
			return nil, err
		}
		defer f.Close() // the child has its own copy once started
		cmd.Stderr = f
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p.cmd, p.stdin = cmd, stdin
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// waitReady waits for a child role's "ready ADDR" line.
func (p *proc) waitReady(ctx context.Context) (string, error) {
	select {
	case addr := <-p.ready:
		return addr, nil
	case <-p.exited:
		return "", p.failure("exited before it was ready")
	case <-time.After(startTimeout):
		return "", p.failure("not ready after " + startTimeout.String())
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// waitHTTP polls url until it answers 200, for our proxy's /readyz.
func (p *proc) waitHTTP(ctx context.Context, url string) error {
	deadline := time.Now().Add(startTimeout)
	c := &http.Client{Timeout: time.Second}
	for time.Now().Before(deadline) {
		if resp, err := c.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-p.exited:
			return p.failure("exited before it was ready")
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return p.failure(url + " not ready after " + startTimeout.String())
}

func (p *proc) failure(what string) error {
	return fmt.Errorf("%s %s; stderr ends:\n%s", p.name, what, p.stderrTail())
}

// stderrTail is the end of what the process wrote to stderr.
func (p *proc) stderrTail() string {
	if p.logFile == "" {
		return p.tail.String()
	}
	f, err := os.Open(p.logFile)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > tailBytes {
		f.Seek(-tailBytes, io.SeekEnd)
	}
	b, _ := io.ReadAll(f)
	return string(b)
}

// logLines counts the lines the process wrote to stderr so far.
func (p *proc) logLines() (int64, error) {
	if p.logFile == "" {
		return p.lines.Load(), nil
	}
	f, err := os.Open(p.logFile)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	c := &lineCounter{n: new(atomic.Int64), w: io.Discard}
	if _, err := io.Copy(c, f); err != nil {
		return 0, err
	}
	return c.n.Load(), nil
}

// stop ends the process: stdin closed and SIGTERM (so a child role writes
// its CPU profile, and our proxy shuts down as in production), SIGKILL
// after stopTimeout.
func (p *proc) stop() error {
	select {
	case <-p.exited:
		return nil
	default:
	}
	p.stdin.Close()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return nil
	case <-time.After(stopTimeout):
		p.cmd.Process.Kill()
		<-p.exited
		return fmt.Errorf("%s did not stop within %v; killed", p.name, stopTimeout)
	}
}

// readyWriter passes the first "ready ADDR" line of stdout to ready.
type readyWriter struct {
	ready chan string
	buf   []byte
	done  bool
}

func (w *readyWriter) Write(b []byte) (int, error) {
	if w.done {
		return len(b), nil
	}
	w.buf = append(w.buf, b...)
	if line, _, ok := bytes.Cut(w.buf, []byte("\n")); ok {
		if addr, ok := strings.CutPrefix(string(line), "ready "); ok {
			w.ready <- addr
		}
		w.done, w.buf = true, nil
	}
	return len(b), nil
}

// lineCounter counts newlines and passes the bytes on.
type lineCounter struct {
	n *atomic.Int64
	w io.Writer
}

func (c *lineCounter) Write(b []byte) (int, error) {
	c.n.Add(int64(bytes.Count(b, []byte("\n"))))
	return c.w.Write(b)
}

// tailWriter keeps the last max bytes written to it.
type tailWriter struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tailWriter) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, b...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(b), nil
}

func (t *tailWriter) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// cpuTime is the CPU time a process has used: the sum over its threads of
// /proc/PID/task/TID/schedstat's first field, in nanoseconds. /proc/PID/stat
// counts in clock ticks (10 ms), too coarse for a few seconds of load; Go
// threads almost never exit, so the sum over live threads loses nothing.
func cpuTime(pid int) (time.Duration, error) {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("cpu time: %w", err)
	}
	var total int64
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "schedstat"))
		if err != nil {
			continue // the thread has just exited
		}
		f := bytes.Fields(b)
		if len(f) == 0 {
			continue
		}
		ns, err := strconv.ParseInt(string(f[0]), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("cpu time: %s: %w", e.Name(), err)
		}
		total += ns
	}
	return time.Duration(total), nil
}

// memory returns VmRSS and VmHWM (peak RSS) of a process, in bytes.
func memory(pid int) (rss, peak int64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, fmt.Errorf("memory: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("memory: %s: %w", k, err)
		}
		if k == "VmRSS" {
			rss = kb << 10
		} else {
			peak = kb << 10
		}
	}
	if rss == 0 || peak == 0 {
		return 0, 0, errors.New("memory: no VmRSS/VmHWM in /proc status")
	}
	return rss, peak, sc.Err()
}

// freeAddr returns a loopback address that was free a moment ago, for our
// proxy, whose redirect_url must name its port before it starts.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// childEnv is our environment without TWC_AUTH_PROXY_* variables, which
// would override the generated config's secrets.
func childEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TWC_AUTH_PROXY_") && !strings.HasPrefix(kv, "PROXYBENCH_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}
