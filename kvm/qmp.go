package kvm

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// qmpMaxLine bounds one QMP message from QEMU.
const qmpMaxLine = 1 << 20

// QMPEvent is an asynchronous QMP event, e.g. SHUTDOWN.
type QMPEvent struct {
	Event     string          `json:"event"`
	Data      json.RawMessage `json:"data,omitempty"`
	Timestamp struct {
		Seconds      int64 `json:"seconds"`
		Microseconds int64 `json:"microseconds"`
	} `json:"timestamp"`
}

// QMPError is an error answer from QEMU.
type QMPError struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

func (e *QMPError) Error() string { return "qmp: " + e.Class + ": " + e.Desc }

type qmpResponse struct {
	Return json.RawMessage `json:"return"`
	Error  *QMPError       `json:"error"`
	Event  string          `json:"event"`
	QMP    json.RawMessage `json:"QMP"`
	ID     uint64          `json:"id"`
}

// QMP is a small client of the QEMU Machine Protocol over a unix socket:
// capabilities negotiation, one command at a time, events on a channel.
// Safe for concurrent use.
type QMP struct {
	conn   net.Conn
	cmdMu  sync.Mutex // one command in flight
	nextID uint64
	resp   chan qmpResponse
	events chan QMPEvent
	done   chan struct{}
	err    error
}

// DialQMP takes over an established connection to a QMP monitor, reads the
// greeting and negotiates capabilities. Events are delivered on Events()
// (the channel is buffered; when it is full, the oldest are dropped).
func DialQMP(ctx context.Context, conn net.Conn) (*QMP, error) {
	q := &QMP{conn: conn, resp: make(chan qmpResponse, 1), events: make(chan QMPEvent, 64), done: make(chan struct{})}
	greeting := make(chan error, 1)
	go q.readLoop(greeting)
	select {
	case err := <-greeting:
		if err != nil {
			conn.Close()
			return nil, err
		}
	case <-ctx.Done():
		conn.Close()
		return nil, ctx.Err()
	}
	if _, err := q.Execute(ctx, "qmp_capabilities", nil); err != nil {
		conn.Close()
		return nil, fmt.Errorf("qmp: negotiating capabilities: %w", err)
	}
	return q, nil
}

func (q *QMP) readLoop(greeting chan<- error) {
	defer close(q.done)
	sc := bufio.NewScanner(q.conn)
	sc.Buffer(make([]byte, 64<<10), qmpMaxLine)
	first := true
	for sc.Scan() {
		var r qmpResponse
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			q.err = fmt.Errorf("qmp: bad message from QEMU: %w", err)
			break
		}
		if first {
			first = false
			if r.QMP == nil {
				greeting <- errors.New("qmp: no greeting from QEMU")
				return
			}
			greeting <- nil
			continue
		}
		if r.Event != "" {
			var ev QMPEvent
			if json.Unmarshal(sc.Bytes(), &ev) == nil {
				select {
				case q.events <- ev:
				default:
					select {
					case <-q.events:
					default:
					}
					q.events <- ev
				}
			}
			continue
		}
		select {
		case q.resp <- r:
		case <-time.After(time.Second): // an answer nobody waits for (a cancelled command)
		}
	}
	if q.err == nil {
		q.err = errors.New("qmp: connection closed")
		if err := sc.Err(); err != nil {
			q.err = fmt.Errorf("qmp: %w", err)
		}
	}
	if first {
		greeting <- q.err
	}
}

// Events returns the channel of asynchronous events.
func (q *QMP) Events() <-chan QMPEvent { return q.events }

// Done is closed when the connection ends (QEMU exited).
func (q *QMP) Done() <-chan struct{} { return q.done }

// Execute runs one command and returns its "return" value.
func (q *QMP) Execute(ctx context.Context, cmd string, args any) (json.RawMessage, error) {
	return q.execute(ctx, cmd, args, nil)
}

// ExecuteWithFile runs one command with f's descriptor attached
// (SCM_RIGHTS), as "getfd" and "add-fd" expect.
func (q *QMP) ExecuteWithFile(ctx context.Context, cmd string, args any, f *os.File) (json.RawMessage, error) {
	return q.execute(ctx, cmd, args, f)
}

func (q *QMP) execute(ctx context.Context, cmd string, args any, f *os.File) (json.RawMessage, error) {
	q.cmdMu.Lock()
	defer q.cmdMu.Unlock()
	q.nextID++
	id := q.nextID
	msg := map[string]any{"execute": cmd, "id": id}
	if args != nil {
		msg["arguments"] = args
	}
	b, err := json.Marshal(msg)
	if err != nil {
		return nil, err
	}
	if f == nil {
		_, err = q.conn.Write(append(b, '\n'))
	} else if uc, ok := q.conn.(*net.UnixConn); ok {
		_, _, err = uc.WriteMsgUnix(append(b, '\n'), unix.UnixRights(int(f.Fd())), nil)
	} else {
		err = errors.New("passing a descriptor needs a unix socket")
	}
	if err != nil {
		return nil, fmt.Errorf("qmp: %s: %w", cmd, err)
	}
	for {
		select {
		case r := <-q.resp:
			if r.ID != id {
				continue // the answer to an earlier, cancelled command
			}
			if r.Error != nil {
				return nil, r.Error
			}
			return r.Return, nil
		case <-q.done:
			return nil, fmt.Errorf("qmp: %s: %w", cmd, q.err)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Status is query-status: e.g. "running", "paused", "shutdown".
func (q *QMP) Status(ctx context.Context) (string, error) {
	raw, err := q.Execute(ctx, "query-status", nil)
	if err != nil {
		return "", err
	}
	var st struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		return "", fmt.Errorf("qmp: query-status: %w", err)
	}
	return st.Status, nil
}

// Close closes the connection.
func (q *QMP) Close() error { return q.conn.Close() }
