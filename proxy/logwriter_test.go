package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is an io.Writer that records every write.
type syncBuffer struct {
	mu     sync.Mutex
	b      bytes.Buffer
	writes int
	gate   chan struct{} // when set, each write waits for a receive
	err    error
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	if s.gate != nil {
		<-s.gate
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writes++
	if s.err != nil {
		return 0, s.err
	}
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Lines from many goroutines all arrive, each goroutine's in its order,
// and whole: a line is never split or interleaved with another.
func TestLogWriterKeepsEveryLineInOrder(t *testing.T) {
	out := &syncBuffer{}
	w := NewLogWriter(out, time.Hour) // only size and Close flush
	const writers, lines = 8, 5000    // ~2 MB: several flushes and waits at logBufferMax
	pad := strings.Repeat("x", 40)
	var wg sync.WaitGroup
	for g := range writers {
		wg.Go(func() {
			for i := range lines {
				fmt.Fprintf(w, "%d %d %s\n", g, i, pad)
			}
		})
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	next := make([]int, writers)
	all := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	for _, line := range all {
		var g, i int
		var p string
		if _, err := fmt.Sscanf(line, "%d %d %s", &g, &i, &p); err != nil || p != pad || g < 0 || g >= writers {
			t.Fatalf("mangled line %q", line)
		}
		if i != next[g] {
			t.Fatalf("writer %d: line %d after %d", g, i, next[g]-1)
		}
		next[g]++
	}
	if len(all) != writers*lines {
		t.Fatalf("got %d lines, want %d", len(all), writers*lines)
	}
	if out.writes < 2 || out.writes >= writers*lines/10 {
		t.Errorf("%d writes for %d lines: want a few large writes", out.writes, len(all))
	}
}

func TestLogWriterFlushes(t *testing.T) {
	t.Run("interval", func(t *testing.T) {
		out := &syncBuffer{}
		w := NewLogWriter(out, 10*time.Millisecond)
		defer w.Close()
		w.Write([]byte("tick\n"))
		deadline := time.Now().Add(5 * time.Second)
		for out.String() != "tick\n" {
			if time.Now().After(deadline) {
				t.Fatal("a buffered line was not written out within the interval")
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
	t.Run("size", func(t *testing.T) {
		// logFlushAt bytes go out without waiting for the interval or for
		// logBufferMax: one pipe's worth per write(2).
		out := &syncBuffer{}
		w := NewLogWriter(out, time.Hour)
		defer w.Close()
		line := []byte(strings.Repeat("z", 1023) + "\n")
		for range logFlushAt / len(line) {
			w.Write(line)
		}
		deadline := time.Now().Add(5 * time.Second)
		for len(out.String()) != logFlushAt {
			if time.Now().After(deadline) {
				t.Fatalf("%d bytes written out of %d buffered; want them written once %d are queued", len(out.String()), logFlushAt, logFlushAt)
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
	t.Run("sync", func(t *testing.T) {
		out := &syncBuffer{}
		w := NewLogWriter(out, time.Hour)
		defer w.Close()
		w.Write([]byte("now\n"))
		if out.String() != "" {
			t.Fatal("Write wrote through; it should only buffer")
		}
		if err := w.Sync(); err != nil || out.String() != "now\n" {
			t.Fatalf("after Sync: %q, %v", out.String(), err)
		}
	})
	t.Run("close, then through", func(t *testing.T) {
		out := &syncBuffer{}
		w := NewLogWriter(out, time.Hour)
		w.Write([]byte("a\n"))
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		w.Write([]byte("b\n"))
		if err := w.Close(); err != nil { // twice is fine
			t.Fatal(err)
		}
		if got := out.String(); got != "a\nb\n" {
			t.Fatalf("got %q, want a then b", got)
		}
	})
}

// A reader that stops (a stuck pipe) makes writers wait once logBufferMax
// bytes are queued, rather than grow the buffer or drop lines.
func TestLogWriterBackpressure(t *testing.T) {
	out := &syncBuffer{gate: make(chan struct{})}
	w := NewLogWriter(out, time.Hour)
	line := []byte(strings.Repeat("y", 1023) + "\n")
	wrote := make(chan int)
	go func() {
		n := 0
		for range 3 * logBufferMax / len(line) {
			w.Write(line)
			n++
		}
		wrote <- n
	}()
	select {
	case n := <-wrote:
		t.Fatalf("wrote %d lines (%d bytes) while the reader was stuck; want a wait", n, n*len(line))
	case <-time.After(200 * time.Millisecond):
	}
	close(out.gate) // the reader resumes
	n := <-wrote
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got := len(out.String()); got != n*len(line) {
		t.Fatalf("got %d bytes, want %d", got, n*len(line))
	}
}

func TestLogWriterReportsErrors(t *testing.T) {
	boom := errors.New("disk full")
	out := &syncBuffer{err: boom}
	w := NewLogWriter(out, time.Hour)
	if _, err := w.Write([]byte("x\n")); err != nil {
		t.Fatalf("Write returned %v; errors surface in Sync", err)
	}
	if err := w.Sync(); !errors.Is(err, boom) {
		t.Fatalf("Sync = %v, want %v", err, boom)
	}
	if err := w.Close(); !errors.Is(err, boom) {
		t.Fatalf("Close = %v, want %v", err, boom)
	}
}
