package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// The load generator speaks HTTP/1.1 over raw keep-alive connections instead
// of using net/http's client: on a 2-core machine the generator shares the
// CPUs with both proxies and the upstream, and a client that costs several
// times less per request leaves more of the machine to what is measured.

const (
	reqTimeout  = 5 * time.Second // one request, write to last body byte
	readBufSize = 16 << 10        // holds every header line of our responses
	maxChunks   = 1 << 16         // bound on a chunked body's chunk count
)

var errMalformed = errors.New("malformed HTTP response")

// loadTarget is one proxy under load: where it listens, the request bytes
// to send and the process whose CPU is charged for it.
type loadTarget struct {
	name string
	addr string
	req  []byte
	pid  int
}

// getRequest is a keep-alive GET of path; cookie may be empty.
func getRequest(addr, path, cookie string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: proxybench\r\nAccept: application/json\r\n", path, addr)
	if cookie != "" {
		fmt.Fprintf(&b, "Cookie: %s\r\n", cookie)
	}
	b.WriteString("\r\n")
	return b.Bytes()
}

// rawConn is one client connection that sends the same request again and
// again, reconnecting after an error or a "Connection: close".
type rawConn struct {
	addr string
	req  []byte
	c    net.Conn
	br   *bufio.Reader
}

func dialRaw(addr string, req []byte) (*rawConn, error) {
	c := &rawConn{addr: addr, req: req}
	return c, c.dial()
}

func (c *rawConn) dial() error {
	nc, err := net.DialTimeout("tcp", c.addr, reqTimeout)
	if err != nil {
		return err
	}
	c.c = nc
	if c.br == nil {
		c.br = bufio.NewReaderSize(nc, readBufSize)
	} else {
		c.br.Reset(nc)
	}
	return nil
}

func (c *rawConn) close() {
	if c.c != nil {
		c.c.Close()
		c.c = nil
	}
}

// roundTrip sends the request and reads the whole response; anything but
// 200 is an error.
func (c *rawConn) roundTrip() error {
	if c.c == nil {
		if err := c.dial(); err != nil {
			return err
		}
	}
	c.c.SetDeadline(time.Now().Add(reqTimeout))
	if _, err := c.c.Write(c.req); err != nil {
		c.close()
		return err
	}
	status, keep, err := readResponse(c.br)
	if err != nil {
		c.close()
		return err
	}
	if !keep {
		c.close()
	}
	if status != 200 {
		return fmt.Errorf("status %d", status)
	}
	return nil
}

// readResponse reads one response, discarding its body.
func readResponse(br *bufio.Reader) (status int, keepAlive bool, err error) {
	line, err := readLine(br)
	if err != nil {
		return 0, false, err
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.1 ")) {
		return 0, false, errMalformed
	}
	for _, d := range line[9:12] {
		if d < '0' || d > '9' {
			return 0, false, errMalformed
		}
		status = status*10 + int(d-'0')
	}
	length, chunked, keepAlive := -1, false, true
	for range 1000 {
		if line, err = readLine(br); err != nil {
			return 0, false, err
		}
		if len(line) == 0 {
			break
		}
		name, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if length, err = atoi(value); err != nil {
				return 0, false, err
			}
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			chunked = bytes.Contains(bytes.ToLower(value), []byte("chunked"))
		case bytes.EqualFold(name, []byte("Connection")):
			keepAlive = !bytes.Contains(bytes.ToLower(value), []byte("close"))
		}
	}
	switch {
	case chunked:
		err = discardChunked(br)
	case length >= 0:
		_, err = br.Discard(length)
	default:
		err = errors.New("response without Content-Length or chunked body")
	}
	return status, keepAlive, err
}

// readLine returns the next line without its CRLF. A line longer than the
// buffer (a huge Set-Cookie) is cut: only a header's start matters here.
func readLine(br *bufio.Reader) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		head := bytes.Clone(line[:64])
		for err == bufio.ErrBufferFull {
			_, err = br.ReadSlice('\n')
		}
		if err != nil {
			return nil, err
		}
		return head, nil
	}
	if err != nil {
		return nil, err
	}
	return bytes.TrimRight(line, "\r\n"), nil
}

func discardChunked(br *bufio.Reader) error {
	for range maxChunks {
		line, err := readLine(br)
		if err != nil {
			return err
		}
		size, _, _ := bytes.Cut(line, []byte(";"))
		n, err := atoiBase(bytes.TrimSpace(size), 16)
		if err != nil {
			return err
		}
		if n == 0 { // trailers end with an empty line
			for range 1000 {
				if line, err = readLine(br); err != nil || len(line) == 0 {
					return err
				}
			}
			return errMalformed
		}
		if _, err := br.Discard(n); err != nil {
			return err
		}
		if _, err := readLine(br); err != nil {
			return err
		}
	}
	return errMalformed
}

func atoi(b []byte) (int, error) { return atoiBase(b, 10) }

func atoiBase(b []byte, base int) (int, error) {
	if len(b) == 0 || len(b) > 12 {
		return 0, errMalformed
	}
	n := 0
	for _, c := range b {
		var d int
		switch {
		case '0' <= c && c <= '9':
			d = int(c - '0')
		case base == 16 && 'a' <= c|0x20 && c|0x20 <= 'f':
			d = int(c|0x20-'a') + 10
		default:
			return 0, errMalformed
		}
		n = n*base + d
	}
	return n, nil
}

// sample is one measured run of one target.
type sample struct {
	n, errs  int
	warm     int // requests of the warm-up
	elapsed  time.Duration
	cpu      time.Duration // of the target process over the run
	p50, p99 time.Duration
	firstErr error
}

func (s sample) rps() float64 { return float64(s.n) / s.elapsed.Seconds() }

// cpuPerReq is in microseconds.
func (s sample) cpuPerReq() float64 {
	if s.n == 0 {
		return math.NaN()
	}
	return float64(s.cpu.Nanoseconds()) / 1e3 / float64(s.n)
}

// loadRun is one target's share of a round: conns keep-alive connections,
// kept open across the round's measured slices, and what they measured.
type loadRun struct {
	t        loadTarget
	cs       []*rawConn
	lats     []uint32
	s        sample
	firstErr error
}

func openRun(t loadTarget, conns int) (*loadRun, error) {
	lr := &loadRun{t: t}
	for range conns {
		c, err := dialRaw(t.addr, t.req)
		if err != nil {
			lr.close()
			return nil, fmt.Errorf("%s: dial: %w", t.name, err)
		}
		lr.cs = append(lr.cs, c)
	}
	return lr, nil
}

func (lr *loadRun) close() {
	for _, c := range lr.cs {
		c.close()
	}
}

// warmUp sends unmeasured load for d.
func (lr *loadRun) warmUp(stop *atomic.Bool, d time.Duration) {
	lats, errs, _ := drive(stop, lr.cs, d)
	lr.s.warm += len(lats) + errs
}

// measure runs a closed loop for d and charges the target's CPU over
// exactly that window.
func (lr *loadRun) measure(stop *atomic.Bool, d time.Duration) error {
	cpu0, err := cpuTime(lr.t.pid)
	if err != nil {
		return err
	}
	start := time.Now()
	lats, errs, firstErr := drive(stop, lr.cs, d)
	elapsed := time.Since(start)
	cpu1, err := cpuTime(lr.t.pid)
	if err != nil {
		return err
	}
	lr.lats = append(lr.lats, lats...)
	lr.s.n += len(lats)
	lr.s.errs += errs
	lr.s.elapsed += elapsed
	lr.s.cpu += cpu1 - cpu0
	if lr.s.firstErr == nil {
		lr.s.firstErr = firstErr
	}
	return nil
}

// sample is everything measured, with its percentiles.
func (lr *loadRun) sample() (sample, error) {
	s := lr.s
	if len(lr.lats) == 0 {
		return s, fmt.Errorf("%s: no successful request (%d errors; first: %v)", lr.t.name, s.errs, s.firstErr)
	}
	slices.Sort(lr.lats)
	s.p50, s.p99 = percentile(lr.lats, 0.50), percentile(lr.lats, 0.99)
	return s, nil
}

// drive runs one closed-loop worker per connection until dur has passed or
// stop is set, and returns every successful request's latency.
func drive(stop *atomic.Bool, cs []*rawConn, dur time.Duration) (lats []uint32, errs int, firstErr error) {
	deadline := time.Now().Add(dur)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Go(func() {
			mine := make([]uint32, 0, 1<<14)
			var myErrs int
			var myFirst error
			for !stop.Load() && time.Now().Before(deadline) {
				t0 := time.Now()
				if err := c.roundTrip(); err != nil {
					myErrs++
					if myFirst == nil {
						myFirst = err
					}
					time.Sleep(time.Millisecond) // a refused dial must not spin
					continue
				}
				mine = append(mine, uint32(min(time.Since(t0), math.MaxUint32)))
			}
			mu.Lock()
			lats = append(lats, mine...)
			errs += myErrs
			if firstErr == nil {
				firstErr = myFirst
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	return lats, errs, firstErr
}

// percentile is the nearest-rank percentile of sorted nanoseconds.
func percentile(sorted []uint32, p float64) time.Duration {
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return time.Duration(sorted[max(i, 0)])
}
