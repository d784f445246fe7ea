package main

import (
	"context"
	"sync"
	"time"
)

const settle = time.Second // for RSS to follow the heap before it is read

// idleResult is the memory an idle keep-alive connection costs our proxy.
type idleResult struct {
	n             int
	before, after int64 // VmRSS, bytes
}

func (r *idleResult) perConn() float64 { return float64(r.after-r.before) / float64(r.n) }

// idleMemory starts a fresh instance of our proxy (so the throughput runs'
// heap does not hide the growth), warms it up, then opens n connections
// that each send one authenticated request and stay open, idle, and reads
// RSS before and after.
func (b *bench) idleMemory(ctx context.Context, upstream string) (*idleResult, error) {
	rm, err := newRealm(time.Hour, nil)
	if err != nil {
		return nil, err
	}
	defer rm.idp.Close()
	p, addr, err := b.ours(ctx, "twc-auth-proxy-idle", oursConfig{realm: rm, upstream: upstream, margin: 30 * time.Second, logRequests: true})
	if err != nil {
		return nil, err
	}
	defer p.stop()
	cookies, err := login(ctx, "http://"+addr, rm.user, rm.pass)
	if err != nil {
		return nil, err
	}
	t := loadTarget{name: "ours-idle", addr: addr, req: getRequest(addr, "/api/idle", cookieHeader(cookies)), pid: p.pid()}
	b.logf("idle connections: %d to a fresh twc-auth-proxy", b.o.idleConns)
	warm, err := openRun(t, 8)
	if err != nil {
		return nil, err
	}
	warm.warmUp(&b.stop, 500*time.Millisecond)
	warm.close()
	time.Sleep(settle)
	r := &idleResult{n: b.o.idleConns}
	if r.before, _, err = memory(p.pid()); err != nil {
		return nil, err
	}

	conns := make([]*rawConn, r.n)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.close()
			}
		}
	}()
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	const dialers = 16
	for w := range dialers {
		wg.Go(func() {
			for i := w; i < r.n && !b.stop.Load(); i += dialers {
				c, err := dialRaw(t.addr, t.req)
				if err == nil {
					conns[i] = c
					err = c.roundTrip()
				}
				if err != nil {
					mu.Lock()
					firstErr = cmpErr(firstErr, err)
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	time.Sleep(settle)
	if r.after, _, err = memory(p.pid()); err != nil {
		return nil, err
	}
	return r, ctx.Err()
}

func cmpErr(old, err error) error {
	if old != nil {
		return old
	}
	return err
}
