package proxy

import (
	"io"
	"sync"
	"time"
)

// Sizes of a LogWriter's buffer. flushAt is the size of one write(2): a
// pipe (a container's stderr) holds 64 KiB, so a write of that size does
// not wait for the reader while it keeps up. Past logBufferMax, Write waits
// for the writer goroutine instead of growing the buffer: logs are never
// dropped, and a stuck reader costs at most that much memory.
const (
	logFlushAt   = 64 << 10
	logBufferMax = 1 << 20
)

// LogWriter is the zapcore.WriteSyncer the binary gives its logger. It
// keeps the write(2) of log lines off the request path: Write appends the
// line to a buffer under a mutex, and one goroutine writes the buffer out
// once it holds logFlushAt bytes, and at every interval. zap's
// BufferedWriteSyncer instead makes the request that fills its buffer
// write it out, holding its lock, and every other request that logs
// meanwhile waits for that write; on a pipe whose reader lags, that is a
// stall of the whole proxy. Lines reach out in the order Write was called.
// It is safe for concurrent use.
type LogWriter struct {
	out io.Writer

	mu     sync.Mutex
	room   sync.Cond // broadcast when the buffer was taken
	buf    []byte    // lines not yet taken by a flush
	closed bool      // after Close, Write writes through
	err    error     // the first error of out

	wmu   sync.Mutex // held from taking the buffer until it is written: keeps order
	spare []byte     // the buffer being written; only with wmu held

	kick      chan struct{} // asks the goroutine to flush; capacity 1
	done      chan struct{} // closed by Close
	stopped   chan struct{} // closed when the goroutine has returned
	closeOnce sync.Once
	closeErr  error
}

// NewLogWriter starts a LogWriter writing to out at least every interval.
// Close stops it.
func NewLogWriter(out io.Writer, interval time.Duration) *LogWriter {
	w := &LogWriter{
		out:     out,
		kick:    make(chan struct{}, 1),
		done:    make(chan struct{}),
		stopped: make(chan struct{}),
	}
	w.room.L = &w.mu
	go w.run(interval)
	return w
}

func (w *LogWriter) run(interval time.Duration) {
	defer close(w.stopped)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-w.kick:
		case <-t.C:
		case <-w.done:
			return
		}
		w.flush(false)
	}
}

// Write queues p (one encoded log line) for the writer goroutine. It
// returns at once unless logBufferMax bytes are waiting already.
func (w *LogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	for !w.closed && len(w.buf) > 0 && len(w.buf)+len(p) > logBufferMax {
		w.wake()
		w.room.Wait()
	}
	if w.closed {
		w.mu.Unlock()
		w.wmu.Lock() // after Close's last flush: still in order
		defer w.wmu.Unlock()
		return w.out.Write(p)
	}
	w.buf = append(w.buf, p...)
	if len(w.buf) >= logFlushAt {
		w.wake()
	}
	w.mu.Unlock()
	return len(p), nil
}

// wake asks the goroutine to flush; it never blocks.
func (w *LogWriter) wake() {
	select {
	case w.kick <- struct{}{}:
	default: // a flush is asked for already
	}
}

// Sync writes out what is buffered and returns the first error the
// underlying writer ever returned. zap calls it for entries above Error.
func (w *LogWriter) Sync() error {
	return w.flush(false)
}

// Close writes out what is buffered and stops the goroutine. Later writes
// go straight to the underlying writer.
func (w *LogWriter) Close() error {
	w.closeOnce.Do(func() {
		close(w.done)
		<-w.stopped
		w.closeErr = w.flush(true)
	})
	return w.closeErr
}

// flush takes the buffer and writes it out; close marks the writer closed
// in the same step, so no line can slip between the last flush and the
// writes through.
func (w *LogWriter) flush(close bool) error {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	w.mu.Lock()
	w.buf, w.spare = w.spare[:0], w.buf
	if close {
		w.closed = true
	}
	w.room.Broadcast()
	w.mu.Unlock()
	if len(w.spare) == 0 {
		return w.firstError(nil)
	}
	_, err := w.out.Write(w.spare)
	if cap(w.spare) > 2*logBufferMax {
		w.spare = nil // one huge line: do not keep its buffer
	}
	return w.firstError(err)
}

func (w *LogWriter) firstError(err error) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err == nil {
		w.err = err
	}
	return w.err
}
