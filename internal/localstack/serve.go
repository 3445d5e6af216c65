package localstack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/GoogleCloudPlatform/functions-framework-go/funcframework"

	"github.com/genimg/genimg/internal/instance"
)

// The functions framework keeps one registry per process and serves it
// from one server that cannot be stopped, and registrations made after it
// starts are not served. So the stack registers a fixed set of slots once —
// the root and /i1/ … /iN/ — each serving whatever Instance is mounted in
// it, and starts the server on the first Mount's port.
const mountSlots = 48

var server struct {
	once  sync.Once
	err   error
	base  string // http://host:port
	mu    sync.Mutex
	busy  [mountSlots]bool
	slots [mountSlots]atomic.Pointer[instance.Instance]
}

func slotPrefix(n int) string {
	if n == 0 {
		return "/"
	}
	return "/i" + strconv.Itoa(n) + "/"
}

// Mount serves in's functions (Generate, OnMessage, OnUpload, PollBatches)
// under the functions framework and returns their base URL, until unmount.
// The first Mount of the process starts the server on host:port (a free
// port when 0) and is served at its root; later ones under /iN/ on the same
// server, wherever they asked.
func Mount(host string, port int, in *instance.Instance) (url string, unmount func(), err error) {
	server.mu.Lock()
	n := -1
	for i := range server.busy {
		if !server.busy[i] {
			server.busy[i], n = true, i
			break
		}
	}
	server.mu.Unlock()
	if n < 0 {
		return "", nil, fmt.Errorf("every one of the %d function slots of this process is in use", mountSlots)
	}
	// In its slot before the server starts: the first request (a cold
	// start's) finds it there rather than a 503.
	server.slots[n].Store(in)
	server.once.Do(func() {
		ctx := context.Background()
		for n := range mountSlots {
			slot := &server.slots[n]
			if err := instance.Register(ctx, slotPrefix(n), slot.Load); err != nil {
				server.err = err
				return
			}
		}
		p, err := freePort(host, port)
		if err != nil {
			server.err = err
			return
		}
		addr := net.JoinHostPort(host, strconv.Itoa(p))
		go func() {
			// StartHostPort cannot be stopped; it ends with the process.
			if err := funcframework.StartHostPort(host, strconv.Itoa(p)); err != nil {
				slog.Error("functions framework stopped", "error", err)
			}
		}()
		if err := waitListening(addr); err != nil {
			server.err = err
			return
		}
		server.base = "http://" + addr
	})
	if server.err != nil {
		server.slots[n].Store(nil)
		server.mu.Lock()
		server.busy[n] = false
		server.mu.Unlock()
		return "", nil, server.err
	}
	unmount = func() {
		server.slots[n].Store(nil)
		server.mu.Lock()
		server.busy[n] = false
		server.mu.Unlock()
	}
	return server.base + slotPrefix(n)[:len(slotPrefix(n))-1], unmount, nil
}

// freePort returns p, or a free port when p is zero.
func freePort(host string, p int) (int, error) {
	if p != 0 {
		return p, nil
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func waitListening(addr string) error {
	for range 500 {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return errors.New("the functions framework did not start listening on " + addr)
}
