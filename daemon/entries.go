package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/portcullis/portcullis/api"
	"github.com/portcullis/portcullis/controller"
	"github.com/portcullis/portcullis/overlay"
	"github.com/portcullis/portcullis/policy"
)

// The control socket's runtime-entry routes: the same operations as the HTTP API
// (package api), for root on the router.

// EntryRequest asks for a runtime entry.
type EntryRequest struct {
	Kind   overlay.Kind `json:"kind"`
	Prefix string       `json:"prefix"` // an address or a CIDR
	For    string       `json:"for,omitempty"`
	Reason string       `json:"reason"`
	Ticket string       `json:"ticket,omitempty"`
}

// EntriesResponse lists entries (and, when asked, the history).
type EntriesResponse struct {
	Entries []overlay.Entry `json:"entries"`
	History []overlay.Event `json:"history,omitempty"`
	Error   string          `json:"error,omitempty"`
}

// ParsePrefix reads an address (a host prefix) or a CIDR, as the HTTP API does
// (overlay.ParseTarget); errors are overlay.ErrInvalid.
func ParsePrefix(s string) (netip.Prefix, error) {
	p, err := overlay.ParseTarget(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%w: %v", overlay.ErrInvalid, err)
	}
	return p, nil
}

// Request turns r into an overlay request by who.
func (r EntryRequest) Request(who string) (overlay.Request, error) {
	p, err := ParsePrefix(r.Prefix)
	if err != nil {
		return overlay.Request{}, err
	}
	var d time.Duration
	if r.For != "" {
		if d, err = policy.ParseDuration(r.For); err != nil {
			// Not ErrDuration ("duration out of bounds"): the text is not a duration at all.
			return overlay.Request{}, fmt.Errorf("%w: for: %v", overlay.ErrInvalid, err)
		}
	}
	return overlay.Request{Kind: r.Kind, Prefix: p, For: d, Reason: r.Reason, Ticket: r.Ticket, Who: who}, nil
}

// entryStatus is the HTTP status for an error from AddEntry or ReleaseEntry.
func entryStatus(err error) int {
	switch {
	case errors.Is(err, overlay.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, overlay.ErrInvalid), errors.Is(err, overlay.ErrKind), errors.Is(err, overlay.ErrDuration), errors.Is(err, overlay.ErrForbidden),
		errors.Is(err, overlay.ErrFull):
		return http.StatusUnprocessableEntity
	case errors.Is(err, controller.ErrStoreFailed), errors.Is(err, controller.ErrNoPolicyYet):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

func (d *Daemon) handleAddEntry(w http.ResponseWriter, r *http.Request) {
	var req EntryRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<16))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeJSON(w, http.StatusBadRequest, EntriesResponse{Error: "bad request: " + err.Error()})
		return
	}
	uid, _ := r.Context().Value(peerKey{}).(int)
	oreq, err := req.Request("uid:" + strconv.Itoa(uid))
	if err == nil {
		var ev overlay.Event
		if ev, err = d.ctl.AddEntryEvent(oreq); err == nil {
			// The event too: whether it was added, escalated or extended.
			writeJSON(w, http.StatusOK, EntriesResponse{Entries: []overlay.Entry{ev.Entry}, History: []overlay.Event{ev}})
			return
		}
	}
	writeJSON(w, entryStatus(err), EntriesResponse{Error: err.Error()})
}

func (d *Daemon) handleReleaseEntry(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	p, err := ParsePrefix(q.Get("prefix"))
	if err == nil {
		uid, _ := r.Context().Value(peerKey{}).(int)
		err = d.ctl.ReleaseEntry(overlay.Key{Kind: overlay.Kind(q.Get("kind")), Prefix: p}, "uid:"+strconv.Itoa(uid), q.Get("reason"))
		if err == nil {
			writeJSON(w, http.StatusOK, EntriesResponse{})
			return
		}
	}
	writeJSON(w, entryStatus(err), EntriesResponse{Error: err.Error()})
}

func (d *Daemon) handleEntries(w http.ResponseWriter, r *http.Request) {
	resp := EntriesResponse{Entries: d.ctl.Entries()}
	if r.URL.Query().Get("history") != "" {
		var p netip.Prefix
		if s := r.URL.Query().Get("prefix"); s != "" {
			var err error
			if p, err = ParsePrefix(s); err != nil {
				writeJSON(w, http.StatusBadRequest, EntriesResponse{Error: err.Error()})
				return
			}
		}
		resp.History = d.ctl.History(p)
	}
	if resp.Entries == nil {
		resp.Entries = []overlay.Entry{}
	}
	writeJSON(w, http.StatusOK, resp)
}

// backend is the daemon as the HTTP API's api.Backend.
type backend struct{ d *Daemon }

func (b backend) Add(req overlay.Request) (overlay.Entry, error) { return b.d.ctl.AddEntry(req) }
func (b backend) Release(k overlay.Key, who, reason string) error {
	return b.d.ctl.ReleaseEntry(k, who, reason)
}
func (b backend) AddFleet(req overlay.Request) (overlay.Entry, error) { return b.d.addFleet(req) }
func (b backend) ReleaseFleet(k overlay.Key, who, reason string) error {
	return b.d.releaseFleet(k, who)
}
func (b backend) Entries(q api.EntriesQuery) ([]overlay.Entry, bool) {
	return b.d.ctl.EntriesPage(q.Prefix, q.After, q.Limit)
}
func (b backend) History(q api.HistoryQuery) ([]overlay.Event, uint64, bool) {
	return b.d.ctl.HistoryPage(q.Prefix, q.Before, q.Limit)
}
func (b backend) Status() any { return b.d.ctl.Snapshot() }

// RemoteAddEntry asks the daemon behind socket for a runtime entry. It returns the
// event recorded (its Entry the entry in force; its Action added, escalated or
// extended, or "" from a daemon that does not say).
func RemoteAddEntry(socket string, req EntryRequest) (overlay.Event, error) {
	var resp EntriesResponse
	_, err := call(socket, http.MethodPost, "/v1/entries", req, &resp, time.Minute)
	if err != nil {
		return overlay.Event{}, err
	}
	if resp.Error != "" || len(resp.Entries) != 1 {
		return overlay.Event{}, errors.New(resp.Error)
	}
	ev := overlay.Event{Entry: resp.Entries[0]}
	if len(resp.History) == 1 {
		ev.Action = resp.History[0].Action
	}
	return ev, nil
}

// RemoteRelease asks the daemon behind socket to end a runtime entry.
func RemoteRelease(socket string, kind overlay.Kind, prefix, reason string) error {
	var resp EntriesResponse
	path := "/v1/entries?kind=" + urlEscape(string(kind)) + "&prefix=" + urlEscape(prefix) + "&reason=" + urlEscape(reason)
	if _, err := call(socket, http.MethodDelete, path, nil, &resp, time.Minute); err != nil {
		return err
	}
	if resp.Error != "" {
		return errors.New(resp.Error)
	}
	return nil
}

// RemoteEntries lists the runtime entries of the daemon behind socket, with the
// history when history is set (of prefix, or all when prefix is "").
func RemoteEntries(socket string, history bool, prefix string) (EntriesResponse, error) {
	var resp EntriesResponse
	path := "/v1/entries"
	if history {
		path += "?history=1&prefix=" + urlEscape(prefix)
	}
	if _, err := call(socket, http.MethodGet, path, nil, &resp, 10*time.Second); err != nil {
		return resp, err
	}
	if resp.Error != "" {
		return resp, errors.New(resp.Error)
	}
	return resp, nil
}
