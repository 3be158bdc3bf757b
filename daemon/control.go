package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/portcullis/portcullis/controller"
)

// The control socket is HTTP over a Unix socket that only root (and the daemon's own
// user) may use: the socket is mode 0600 in a 0700 directory, and every connection's
// peer uid (SO_PEERCRED) is checked and recorded in the audit log.

type peerKey struct{}

// ApplyRequest asks the daemon to apply a policy.
type ApplyRequest struct {
	File   string `json:"file"`   // the name errors and the audit log use
	Policy []byte `json:"policy"` // the policy text
}

// ApplyResponse is what became of it.
type ApplyResponse struct {
	Result     string                  `json:"result"`
	OldHash    string                  `json:"old_hash"`
	NewHash    string                  `json:"new_hash,omitempty"`
	Diff       *controller.DiffSummary `json:"diff,omitempty"`
	Probes     int                     `json:"probes"`
	Mismatches []string                `json:"mismatches,omitempty"`
	Error      string                  `json:"error,omitempty"`
}

// InForce reports whether the policy sent is the one in force (applied, or unchanged),
// whatever Error says: an override applied but not kept on disk has both.
func (r ApplyResponse) InForce() bool {
	return r.Result == "applied" || r.Result == "unchanged"
}

// listenControl binds the control socket, refusing if another daemon answers on it.
// Run binds it before it touches the kernel and serves it (serveControl) once the
// controller runs; a client that connects meanwhile waits in the backlog.
func (d *Daemon) listenControl() (net.Listener, error) {
	path := d.cfg.ControlSocket
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("control socket %s: another portcullis daemon is running", path)
	}
	os.Remove(path) // a stale socket of a daemon that died
	old := unix.Umask(0o177)
	ln, err := net.Listen("unix", path)
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	return ln, nil
}

// serveControl serves the control socket on ln (from listenControl).
func (d *Daemon) serveControl(ln net.Listener) io.Closer {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/apply", d.handleApply)
	mux.HandleFunc("POST /v1/apply/release", d.handleApply)
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, d.ctl.Snapshot())
	})
	mux.HandleFunc("GET /v1/entries", d.handleEntries)
	mux.HandleFunc("POST /v1/entries", d.handleAddEntry)
	mux.HandleFunc("DELETE /v1/entries", d.handleReleaseEntry)
	srv := &http.Server{
		Handler: d.onlyRoot(mux),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, peerKey{}, peerUID(c))
		},
		ReadHeaderTimeout: 10 * time.Second,
	}
	go srv.Serve(ln)
	return srv
}

// peerUID is the uid of the process at the other end of a Unix connection, or -1.
func peerUID(c net.Conn) int {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return -1
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return -1
	}
	uid := -1
	raw.Control(func(fd uintptr) {
		if cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil {
			uid = int(cred.Uid)
		}
	})
	return uid
}

func (d *Daemon) onlyRoot(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		uid, _ := r.Context().Value(peerKey{}).(int)
		if uid != 0 && uid != os.Geteuid() {
			writeJSON(w, http.StatusForbidden, ApplyResponse{Error: "the control socket is for root only"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (d *Daemon) handleApply(w http.ResponseWriter, r *http.Request) {
	uid, _ := r.Context().Value(peerKey{}).(int)
	who := "uid:" + strconv.Itoa(uid)
	var res controller.Result
	if r.URL.Path == "/v1/apply/release" {
		res = d.override.Release(who)
	} else {
		var req ApplyRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<30)).Decode(&req); err != nil {
			writeJSON(w, http.StatusBadRequest, ApplyResponse{Error: "bad request: " + err.Error()})
			return
		}
		res = d.override.Apply(req.File, req.Policy, who)
	}
	resp := ApplyResponse{Result: res.Outcome, OldHash: res.OldHash, NewHash: res.NewHash, Diff: res.Diff, Probes: res.Proof.Probes}
	for _, m := range res.Proof.Mismatches {
		resp.Mismatches = append(resp.Mismatches, m.String())
	}
	code := http.StatusOK
	if res.Err != nil {
		resp.Error = res.Err.Error()
		code = http.StatusUnprocessableEntity
	}
	writeJSON(w, code, resp)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// ErrNotRunning means nothing answers on the control socket.
var ErrNotRunning = errors.New("the daemon is not running (nothing answers on the control socket)")

func urlEscape(s string) string { return url.QueryEscape(s) }

// client is an HTTP client of the control socket for one request: keep-alives off, so
// a caller that asks often (a monitoring script, a portal) leaves no connection open.
func client(socket string, timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}}
}

func call(socket, method, path string, body, out any, timeout time.Duration) (int, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "http://portcullis"+path, rd)
	if err != nil {
		return 0, err
	}
	resp, err := client(socket, timeout).Do(req)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ECONNREFUSED) {
			return 0, fmt.Errorf("%w: %s", ErrNotRunning, socket)
		}
		if errors.Is(err, os.ErrPermission) {
			return 0, fmt.Errorf("control socket %s: permission denied (it is for root only)", socket)
		}
		return 0, fmt.Errorf("control socket %s: %w", socket, err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return resp.StatusCode, fmt.Errorf("control socket: bad answer: %w", err)
	}
	return resp.StatusCode, nil
}

// RemoteApply asks the daemon behind socket to apply policy text read from file.
// A rejected, failed or rolled-back policy comes back with Error set.
func RemoteApply(socket, file string, data []byte) (ApplyResponse, error) {
	var resp ApplyResponse
	code, err := call(socket, http.MethodPost, "/v1/apply", ApplyRequest{File: file, Policy: data}, &resp, 5*time.Minute)
	if err != nil {
		return resp, err
	}
	if code == http.StatusForbidden || code == http.StatusBadRequest {
		return resp, errors.New(resp.Error)
	}
	return resp, nil
}

// RemoteRelease asks the daemon behind socket to end the override and return to its
// configured file.
func RemoteReleaseOverride(socket string) (ApplyResponse, error) {
	var resp ApplyResponse
	code, err := call(socket, http.MethodPost, "/v1/apply/release", struct{}{}, &resp, 5*time.Minute)
	if err != nil {
		return resp, err
	}
	if code == http.StatusForbidden || code == http.StatusBadRequest {
		return resp, errors.New(resp.Error)
	}
	return resp, nil
}

// RemoteStatus asks the daemon behind socket how it is.
func RemoteStatus(socket string) (controller.Status, error) {
	var st controller.Status
	_, err := call(socket, http.MethodGet, "/v1/status", nil, &st, 5*time.Second)
	return st, err
}
