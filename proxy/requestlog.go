package proxy

import (
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// The request line, written without the logger. Going through zap costs
// about 1 µs and a 512-byte allocation per request (its field slice, then
// a type switch and a key escape per field); appending the same bytes
// directly costs about a third of that and allocates nothing. The line
// is byte for byte what the binary's JSON logger (cmd/twc-auth-proxy
// newLogger: zap's production encoder with TimeKey "time" and RFC 3339
// nanosecond times) writes for
//
//	log.Info("request", zap.String("request_id", ...), ...)
//
// so log pipelines see one shape whichever path wrote it. FuzzRequestLine
// compares the bytes with zap's encoder, and a test in cmd/twc-auth-proxy
// compares the binary's two paths.

// requestLog writes request lines to out, one Write per line. out must be
// safe for concurrent use (proxy.LogWriter is).
type requestLog struct {
	out  io.Writer
	bufs sync.Pool // of *[]byte
}

func newRequestLog(out io.Writer) *requestLog {
	return &requestLog{out: out, bufs: sync.Pool{New: func() any {
		b := make([]byte, 0, 512)
		return &b
	}}}
}

// write logs the request w answered. A write error is dropped: the sink is
// the one every other log line goes to, so there is nowhere to report it.
func (l *requestLog) write(w *recorder, r *http.Request, now time.Time) {
	bp := l.bufs.Get().(*[]byte)
	b := appendRequestLine((*bp)[:0], w, r, now)
	l.out.Write(b)
	if cap(b) <= 4<<10 { // a hostile path must not pin a large buffer
		*bp = b
		l.bufs.Put(bp)
	}
}

// appendRequestLine appends the JSON line (with its newline) for the
// request w answered, logged at now.
func appendRequestLine(b []byte, w *recorder, r *http.Request, now time.Time) []byte {
	b = append(b, `{"level":"info","time":"`...)
	b = now.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","msg":"request","request_id":`...)
	b = appendJSONString(b, w.id)
	b = append(b, `,"method":`...)
	b = appendJSONString(b, r.Method)
	// Only the path is logged: query strings can carry codes and tokens.
	b = append(b, `,"path":`...)
	b = appendJSONString(b, r.URL.Path)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(w.status()), 10)
	// zap's production config writes durations as float seconds.
	b = append(b, `,"duration":`...)
	b = strconv.AppendFloat(b, float64(now.Sub(w.start))/float64(time.Second), 'f', -1, 64)
	b = append(b, `,"user":`...)
	b = appendJSONString(b, w.user)
	b = append(b, `,"outcome":`...)
	b = appendJSONString(b, w.outcome)
	b = append(b, `,"remote":`...)
	b = appendJSONString(b, r.RemoteAddr)
	return append(b, "}\n"...)
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string, escaped as zap's JSON
// encoder escapes: \" \\ \n \r \t, other bytes below 0x20 as \u00XX, each
// byte of invalid UTF-8 as \ufffd, and everything else as it is. Paths
// and user names come from the client and the token; none of their bytes
// can end the string or the line.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	last := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r != utf8.RuneError || size != 1 {
				i += size
				continue
			}
			b = append(b, s[last:i]...)
			b = append(b, `\ufffd`...)
			i++
			last = i
			continue
		}
		if c >= 0x20 && c != '\\' && c != '"' {
			i++
			continue
		}
		b = append(b, s[last:i]...)
		switch c {
		case '\\', '"':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		i++
		last = i
	}
	b = append(b, s[last:]...)
	return append(b, '"')
}
