package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/netip"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/portcullis/portcullis/overlay"
	"github.com/portcullis/portcullis/policy"
)

// AddRequest is the body of POST /v1/quarantines and POST /v1/unblocks. Give Address
// or CIDR, not both.
type AddRequest struct {
	Address string `json:"address,omitempty"` // one host: "100.64.1.10", "2001:db8::1"
	CIDR    string `json:"cidr,omitempty"`    // a network: "100.64.1.0/28"
	For     string `json:"for,omitempty"`     // how long: a Go duration ("90m", "24h") or days ("30d"); "" = the policy's default
	Reason  string `json:"reason"`            // required: why, for the next person on shift
	Ticket  string `json:"ticket,omitempty"`  // the abuse desk's or the portal's reference
	// Fleet: for every router of this router's group (a fleet entry in etcd, which
	// needs for), not this router alone.
	Fleet bool `json:"fleet,omitempty"`
}

// EntriesResponse is the body of GET /v1/entries.
type EntriesResponse struct {
	Entries []overlay.Entry `json:"entries"`
	// Next, when more entries follow, is the cursor of the next page: ?after=<next>.
	Next string `json:"next,omitempty"`
}

// HistoryResponse is the body of GET /v1/history.
type HistoryResponse struct {
	Events []overlay.Event `json:"events"`
	// Next, when older events match too, is the cursor of the page before: ?before=<next>.
	Next string `json:"next,omitempty"`
}

// Pages: a listing answers DefaultLimit entries or events unless the client asks for
// up to MaxLimit (limit=). An entry or event is about 300 bytes of JSON, and about
// 2.2 KiB with a reason and a ticket of 1 KiB each, so a page is at most about 2.2 MiB
// however many entries the daemon holds.
const (
	DefaultLimit = 100
	MaxLimit     = 1000
)

// ReleaseResponse is the body of a successful DELETE: the entry that was removed.
type ReleaseResponse struct {
	Released overlay.Kind `json:"released"`
	Prefix   netip.Prefix `json:"prefix"`
}

// ErrorResponse is the body of every error: what is wrong and how to fix it.
type ErrorResponse struct {
	Error string `json:"error"`
}

// maxBody bounds a request body: an AddRequest is a few hundred bytes.
const maxBody = 64 << 10

// route is one operation of the API.
type route struct {
	method  string
	pattern string // http.ServeMux path pattern
	scope   scope  // what the client needs
	kind    overlay.Kind
	handle  func(s *Server, x *exchange, kind overlay.Kind)
}

// routeTable is every operation the API serves; openapi.yaml documents the same.
var routeTable = []route{
	{http.MethodGet, "/v1/entries", scopeRead, "", (*Server).entries},
	{http.MethodGet, "/v1/history", scopeRead, "", (*Server).history},
	{http.MethodGet, "/v1/status", scopeRead, "", (*Server).status},
	{http.MethodPost, "/v1/quarantines", scopeQuarantine, overlay.Quarantine, (*Server).add},
	{http.MethodDelete, "/v1/quarantines/{target...}", scopeQuarantine, overlay.Quarantine, (*Server).release},
	{http.MethodPost, "/v1/unblocks", scopeUnblock, overlay.Unblock, (*Server).add},
	{http.MethodDelete, "/v1/unblocks/{target...}", scopeUnblock, overlay.Unblock, (*Server).release},
}

// exchange is one request in flight: who asked, and what to audit.
type exchange struct {
	w      *statusWriter
	r      *http.Request
	client *client
	detail string
}

type exchangeKey struct{}

// statusWriter remembers the status written, for the audit record.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// routes builds the handler: authenticate, route, check the scope, handle, audit.
func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	allowed := map[string][]string{} // path pattern -> methods
	var paths []string
	for _, rt := range routeTable {
		mux.HandleFunc(rt.method+" "+rt.pattern, func(w http.ResponseWriter, r *http.Request) {
			x := r.Context().Value(exchangeKey{}).(*exchange)
			x.r = r
			if !x.client.scopes[rt.scope] {
				x.fail(http.StatusForbidden, "%s %s needs the %q scope; client %q has %s (the operator adds scopes in the clients file)", rt.method, policy.Clip(r.URL.Path), rt.scope, x.client.name, x.client.scopeList())
				return
			}
			rt.handle(s, x, rt.kind)
		})
		if _, ok := allowed[rt.pattern]; !ok {
			paths = append(paths, rt.pattern)
		}
		allowed[rt.pattern] = append(allowed[rt.pattern], rt.method)
		if rt.method == http.MethodGet {
			allowed[rt.pattern] = append(allowed[rt.pattern], http.MethodHead)
		}
	}
	for _, p := range paths {
		allow := strings.Join(allowed[p], ", ")
		mux.HandleFunc(p, func(w http.ResponseWriter, r *http.Request) {
			x := r.Context().Value(exchangeKey{}).(*exchange)
			w.Header().Set("Allow", allow)
			x.fail(http.StatusMethodNotAllowed, "method %s is not allowed on %s; use %s", policy.Clip(r.Method), policy.Clip(r.URL.Path), allow)
		})
	}
	var roots []string // the paths without their {target...}, for the 404 message
	for _, p := range paths {
		if root, _, _ := strings.Cut(p, "/{"); !slices.Contains(roots, root) {
			roots = append(roots, root)
		}
	}
	known := strings.Join(roots, ", ")
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		x := r.Context().Value(exchangeKey{}).(*exchange)
		x.fail(http.StatusNotFound, "no route %s; the API's routes are %s (docs/api.md)", policy.Clip(r.URL.Path), known)
	})

	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		x := &exchange{w: &statusWriter{ResponseWriter: w}, r: r}
		start := time.Now()
		defer func() {
			if s.audit == nil {
				return
			}
			name := "-"
			if x.client != nil {
				name = x.client.name
			}
			status := x.w.status
			if status == 0 {
				status = http.StatusOK
			}
			s.audit(Record{Time: start, Client: name, Method: r.Method, Path: r.URL.Path, Status: status, Detail: x.detail})
		}()
		if !s.authenticate(x) {
			return
		}
		mux.ServeHTTP(x.w, r.WithContext(context.WithValue(r.Context(), exchangeKey{}, x)))
	})
}

// authenticate finds the client of x's request, or answers 401 or 403 and returns false.
func (s *Server) authenticate(x *exchange) bool {
	r := x.r
	if s.mtls {
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
			x.fail(http.StatusUnauthorized, "a verified client certificate is required (mTLS)")
			return false
		}
		cn := r.TLS.VerifiedChains[0][0].Subject.CommonName
		c := s.clients.byCN[cn]
		if c == nil {
			x.fail(http.StatusForbidden, "the client certificate's CN %q names no client; the operator adds a client with cert_cn: %q to the clients file", cn, cn)
			return false
		}
		x.client = c
		return true
	}
	h := r.Header.Get("Authorization")
	scheme, token, _ := strings.Cut(h, " ")
	token = strings.TrimSpace(token)
	switch {
	case h == "":
		x.w.Header().Set("WWW-Authenticate", `Bearer realm="portcullis"`)
		x.fail(http.StatusUnauthorized, "no bearer token: send Authorization: Bearer <token>")
		return false
	case !strings.EqualFold(scheme, "Bearer") || token == "":
		x.w.Header().Set("WWW-Authenticate", `Bearer realm="portcullis", error="invalid_request"`)
		x.fail(http.StatusUnauthorized, "the Authorization header is not a bearer token: send Authorization: Bearer <token>")
		return false
	}
	c := s.clients.byToken(token)
	if c == nil {
		x.w.Header().Set("WWW-Authenticate", `Bearer realm="portcullis", error="invalid_token"`)
		x.fail(http.StatusUnauthorized, "the bearer token is not one the clients file knows; check the token, or ask the operator for its hash to be added")
		return false
	}
	x.client = c
	return true
}

// reply writes v as JSON with code.
func (x *exchange) reply(code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code = http.StatusInternalServerError
		msg := "the daemon's answer could not be encoded as JSON: " + err.Error()
		x.detail = msg
		b, _ = json.Marshal(ErrorResponse{msg})
	}
	h := x.w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	x.w.WriteHeader(code)
	x.w.Write(append(b, '\n'))
}

// fail answers an error with its message, which also goes into the audit record.
func (x *exchange) fail(code int, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	x.detail = msg
	x.reply(code, ErrorResponse{msg})
}

// query checks the query string against the parameters a route takes, each at most
// once, and returns it; on a mistake it answers 400 and returns false.
func (x *exchange) query(takes ...string) (url.Values, bool) {
	q, err := url.ParseQuery(x.r.URL.RawQuery)
	if err != nil {
		x.fail(http.StatusBadRequest, "the query string is malformed (%v); percent-encode its values", err)
		return nil, false
	}
	for k, v := range q {
		if !slices.Contains(takes, k) {
			what := "no query parameters"
			if len(takes) > 0 {
				what = "only " + strings.Join(takes, ", ")
			}
			x.fail(http.StatusBadRequest, "unknown query parameter %q; %s %s takes %s", policy.Clip(k), x.r.Method, policy.Clip(x.r.URL.Path), what)
			return nil, false
		}
		if len(v) > 1 {
			x.fail(http.StatusBadRequest, "query parameter %q is given %d times; give it once", policy.Clip(k), len(v))
			return nil, false
		}
	}
	return q, true
}

func (s *Server) entries(x *exchange, _ overlay.Kind) {
	q, ok := x.query("prefix", "after", "limit")
	if !ok {
		return
	}
	eq := EntriesQuery{}
	if eq.Prefix, ok = x.prefixParam(q, "every entry"); !ok {
		return
	}
	if eq.Limit, ok = x.limitParam(q, "after"); !ok {
		return
	}
	if v := q.Get("after"); v != "" {
		if eq.After, ok = parseEntryCursor(v); !ok {
			x.fail(http.StatusBadRequest, "after: %q is not a cursor this API gave; pass back the next of the page before, or leave after out for the first page", policy.Clip(v))
			return
		}
	}
	es, more := s.backend.Entries(eq)
	if es == nil {
		es = []overlay.Entry{}
	}
	resp := EntriesResponse{Entries: es}
	if more && len(es) > 0 {
		last := es[len(es)-1]
		resp.Next = string(last.Kind) + "/" + last.Prefix.String()
	}
	x.detail = fmt.Sprintf("%d entries", len(es))
	if eq.Prefix.IsValid() {
		x.detail += " for " + eq.Prefix.String()
	}
	x.reply(http.StatusOK, resp)
}

// parseEntryCursor reads the cursor EntriesResponse.Next gives: kind/prefix.
func parseEntryCursor(v string) (overlay.Key, bool) {
	kind, prefix, _ := strings.Cut(v, "/")
	p, err := netip.ParsePrefix(prefix)
	if err != nil || !overlay.Kind(kind).Valid() {
		return overlay.Key{}, false
	}
	return overlay.Key{Kind: overlay.Kind(kind), Prefix: p}, true
}

func (s *Server) history(x *exchange, _ overlay.Kind) {
	q, ok := x.query("prefix", "before", "limit")
	if !ok {
		return
	}
	hq := HistoryQuery{}
	if hq.Prefix, ok = x.prefixParam(q, "the whole history"); !ok {
		return
	}
	if hq.Limit, ok = x.limitParam(q, "before"); !ok {
		return
	}
	if v := q.Get("before"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil || n == 0 {
			x.fail(http.StatusBadRequest, "before: %q is not a cursor this API gave; pass back the next of the page after, or leave before out for the newest events", policy.Clip(v))
			return
		}
		hq.Before = n
	}
	evs, first, more := s.backend.History(hq)
	if evs == nil {
		evs = []overlay.Event{}
	}
	resp := HistoryResponse{Events: evs}
	if more && len(evs) > 0 {
		resp.Next = strconv.FormatUint(first, 10)
	}
	x.detail = fmt.Sprintf("%d events", len(evs))
	if hq.Prefix.IsValid() {
		x.detail += " for " + hq.Prefix.String()
	}
	x.reply(http.StatusOK, resp)
}

// prefixParam reads the prefix query parameter (a host or a network; none: all, which
// is what every says); on a mistake it answers 400 and returns false.
func (x *exchange) prefixParam(q url.Values, every string) (netip.Prefix, bool) {
	v := q.Get("prefix")
	if v == "" {
		return netip.Prefix{}, true
	}
	p, err := overlay.ParseTarget(v)
	if err != nil {
		x.fail(http.StatusBadRequest, "prefix: %v (or leave prefix out for %s)", err, every)
		return netip.Prefix{}, false
	}
	return p, true
}

// limitParam reads the limit query parameter (DefaultLimit when absent); cursor names
// the parameter that pages on. On a mistake it answers 400 and returns false.
func (x *exchange) limitParam(q url.Values, cursor string) (int, bool) {
	v := q.Get("limit")
	if v == "" {
		return DefaultLimit, true
	}
	n, err := strconv.Atoi(v)
	switch {
	case err != nil || n < 1:
		x.fail(http.StatusBadRequest, "limit: %q is not a whole number from 1 to %d", policy.Clip(v), MaxLimit)
		return 0, false
	case n > MaxLimit:
		x.fail(http.StatusBadRequest, "limit: %d is more than %d, the most one page holds; ask for the next page with %s=<next>", n, MaxLimit, cursor)
		return 0, false
	}
	return n, true
}

func (s *Server) status(x *exchange, _ overlay.Kind) {
	if _, ok := x.query(); !ok {
		return
	}
	x.reply(http.StatusOK, s.backend.Status())
}

func (s *Server) add(x *exchange, kind overlay.Kind) {
	r := x.r
	if _, ok := x.query(); !ok {
		return
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		x.fail(http.StatusUnsupportedMediaType, "the body must be JSON: send Content-Type: application/json (got %q)", policy.Clip(r.Header.Get("Content-Type")))
		return
	}
	if r.ContentLength > maxBody {
		x.fail(http.StatusRequestEntityTooLarge, "the body is %d bytes, more than the %d KiB limit; a request is one small JSON object", r.ContentLength, maxBody>>10)
		return
	}
	var body AddRequest
	// The server's own writer, not the status-recording wrapper: through it the
	// server learns the body was too large and closes the connection after replying.
	if !x.decode(http.MaxBytesReader(x.w.ResponseWriter, r.Body, maxBody), &body) {
		return
	}
	var p netip.Prefix
	switch {
	case body.Address == "" && body.CIDR == "":
		x.fail(http.StatusBadRequest, "give address (one host, e.g. \"address\": \"100.64.1.10\") or cidr (a network, e.g. \"cidr\": \"100.64.1.0/28\")")
		return
	case body.Address != "" && body.CIDR != "":
		x.fail(http.StatusBadRequest, "give address or cidr, not both")
		return
	case body.Address != "":
		if strings.Contains(body.Address, "/") {
			x.fail(http.StatusBadRequest, "address %q is a network; address is one host, put a network in cidr", policy.Clip(body.Address))
			return
		}
		if p, err = overlay.ParseTarget(body.Address); err != nil {
			x.fail(http.StatusBadRequest, "address: %v", err)
			return
		}
	default:
		if !strings.Contains(body.CIDR, "/") {
			x.fail(http.StatusBadRequest, "cidr %q has no prefix length; write a network like 100.64.1.0/28, or put one host in address", policy.Clip(body.CIDR))
			return
		}
		if p, err = overlay.ParseTarget(body.CIDR); err != nil {
			x.fail(http.StatusBadRequest, "cidr: %v", err)
			return
		}
	}
	var d time.Duration
	if body.For != "" {
		if d, err = ParseDuration(body.For); err != nil {
			x.fail(http.StatusBadRequest, "for: %v (or leave for out for the policy's default)", err)
			return
		}
	}
	req := overlay.Request{Kind: kind, Prefix: p, For: d, Reason: body.Reason, Ticket: body.Ticket, Who: "api:" + x.client.name}
	add, scope := s.backend.Add, ""
	if body.Fleet {
		if !x.client.scopes[scopeFleet] {
			x.fail(http.StatusForbidden, "a fleet-wide %s needs the %q scope too; client %q has %s (the operator adds scopes in the clients file)", kind, scopeFleet, x.client.name, x.client.scopeList())
			return
		}
		add, scope = s.backend.AddFleet, " for the fleet"
	}
	e, err := add(req)
	if err != nil {
		x.backendError(err)
		return
	}
	x.detail = fmt.Sprintf("added %s %s%s until %s", e.Kind, e.Prefix, scope, e.Expires.UTC().Format(time.RFC3339))
	if e.Ticket != "" {
		x.detail += " ticket " + e.Ticket
	}
	x.w.Header().Set("Location", collection(kind)+"/"+url.PathEscape(e.Prefix.String()))
	x.reply(http.StatusCreated, e)
}

func (s *Server) release(x *exchange, kind overlay.Kind) {
	q, ok := x.query("reason", "fleet")
	if !ok {
		return
	}
	release, scope := s.backend.Release, ""
	switch q.Get("fleet") {
	case "", "false":
	case "true":
		if !x.client.scopes[scopeFleet] {
			x.fail(http.StatusForbidden, "a fleet-wide release needs the %q scope too; client %q has %s (the operator adds scopes in the clients file)", scopeFleet, x.client.name, x.client.scopeList())
			return
		}
		release, scope = s.backend.ReleaseFleet, " for the fleet"
	default:
		x.fail(http.StatusBadRequest, "fleet=%q: give fleet=true to release the group's fleet entry, or leave it out", policy.Clip(q.Get("fleet")))
		return
	}
	target := x.r.PathValue("target")
	example := collection(kind) + "/100.64.1.10"
	if target == "" {
		x.fail(http.StatusBadRequest, "no address in the path: DELETE %s?reason=... (a network as %s/100.64.1.0%%2F28)", example, collection(kind))
		return
	}
	p, err := overlay.ParseTarget(target)
	if err != nil {
		x.fail(http.StatusBadRequest, "path: %v; e.g. DELETE %s?reason=...", err, example)
		return
	}
	reason := q.Get("reason")
	if strings.TrimSpace(reason) == "" {
		x.fail(http.StatusBadRequest, "reason is required: say why, for the next person on shift (?reason=...)")
		return
	}
	// The rules of a reason when adding, refused here as the rest of the request is
	// (400), not by the daemon.
	if err := overlay.CheckText("reason", reason, true); err != nil {
		x.fail(http.StatusBadRequest, "reason: %v (?reason=..., percent-encoded)", strings.TrimPrefix(err.Error(), overlay.ErrInvalid.Error()+": "))
		return
	}
	k := overlay.Key{Kind: kind, Prefix: p}
	if err := release(k, "api:"+x.client.name, reason); err != nil {
		x.backendError(err)
		return
	}
	x.detail = fmt.Sprintf("released %s%s: %s", k, scope, reason)
	x.reply(http.StatusOK, ReleaseResponse{Released: kind, Prefix: p})
}

func collection(kind overlay.Kind) string {
	if kind == overlay.Unblock {
		return "/v1/unblocks"
	}
	return "/v1/quarantines"
}

// backendError answers an error from the backend: 404 for an absent entry, 422 for
// one the policy or the rules refuse (the backend's message; also a kind at its limit
// of live entries: not 429, since no retry helps until entries are released or
// expire, and the message says which), 503 when entries cannot
// be changed now (the store failed), 500 for the rest.
func (x *exchange) backendError(err error) {
	switch {
	case errors.Is(err, overlay.ErrNotFound):
		x.fail(http.StatusNotFound, "%v", err)
	case errors.Is(err, overlay.ErrForbidden), errors.Is(err, overlay.ErrDuration),
		errors.Is(err, overlay.ErrInvalid), errors.Is(err, overlay.ErrKind), errors.Is(err, overlay.ErrFull):
		x.fail(http.StatusUnprocessableEntity, "%v", err)
	case errors.Is(err, overlay.ErrUnavailable):
		x.fail(http.StatusServiceUnavailable, "%v", err)
	default:
		x.fail(http.StatusInternalServerError, "the daemon could not do it: %v", err)
	}
}

// decode reads one JSON object into v, refusing unknown fields and trailing data; on a
// mistake it answers 400 (or 413) and returns false.
func (x *exchange) decode(body io.Reader, v any) bool {
	data, err := io.ReadAll(body)
	if err == nil {
		fields := jsonFields(v)
		if k, twice := oddKey(data, fields); k != "" && twice {
			x.fail(http.StatusBadRequest, "field %q is given twice; give each field once", policy.Clip(k))
			return false
		} else if k != "" {
			for _, f := range fields {
				if strings.EqualFold(k, f) {
					x.fail(http.StatusBadRequest, "field %q: write %q (field names are exactly as documented)", policy.Clip(k), f)
					return false
				}
			}
			x.fail(http.StatusBadRequest, "unknown field %q; the fields are %s", policy.Clip(k), strings.Join(fields, ", "))
			return false
		}
		// oddKey has refused every name but the fields' own.
		dec := json.NewDecoder(bytes.NewReader(data))
		err = dec.Decode(v)
		if err == nil {
			// One object and nothing after it but white space.
			if _, terr := dec.Token(); terr != io.EOF {
				err = terr
				if err == nil {
					err = errTrailing
				}
			}
		}
	}
	if err == nil {
		return true
	}
	const example = `{"address": "100.64.1.10", "for": "24h", "reason": "spam run", "ticket": "AB-123"}`
	var (
		tooBig *http.MaxBytesError
		syn    *json.SyntaxError
		typ    *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &tooBig):
		x.fail(http.StatusRequestEntityTooLarge, "the body is more than the %d KiB limit; a request is one small JSON object", maxBody>>10)
	case err == io.EOF:
		x.fail(http.StatusBadRequest, "the body is empty; send a JSON object such as %s", example)
	case err == errTrailing:
		x.fail(http.StatusBadRequest, "there is more after the JSON object; send exactly one object such as %s", example)
	case errors.As(err, &syn):
		x.fail(http.StatusBadRequest, "malformed JSON at byte %d (%v); send one object such as %s", syn.Offset, syn, example)
	case errors.Is(err, io.ErrUnexpectedEOF):
		x.fail(http.StatusBadRequest, "malformed JSON: the body ends inside the object; send one object such as %s", example)
	case errors.As(err, &typ) && typ.Field == "":
		x.fail(http.StatusBadRequest, "the body is a JSON %s; send one object such as %s", typ.Value, example)
	case errors.As(err, &typ):
		want := "string"
		if typ.Type != nil && typ.Type.Kind() == reflect.Bool {
			want = "boolean (true or false)"
		}
		x.fail(http.StatusBadRequest, "field %q must be a JSON %s, not a %s; e.g. %s", typ.Field, want, typ.Value, example)
	default:
		x.fail(http.StatusBadRequest, "the body is not a JSON object (%v); send one such as %s", err, example)
	}
	return false
}

var errTrailing = errors.New("data after the JSON object")

// jsonFields are the JSON names of the fields of the struct v points to, in order.
func jsonFields(v any) []string {
	t := reflect.TypeOf(v).Elem()
	var out []string
	for i := range t.NumField() {
		if name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ","); name != "" && name != "-" {
			out = append(out, name)
		}
	}
	return out
}

// oddKey returns a key of the JSON object data that encoding/json would read otherwise
// than a reader of the body might: one given twice (twice; encoding/json keeps the
// last, so {"address": A, "address": B} acts on B while a log or a proxy that reads the
// first sees A), or one that is not exactly one of fields (encoding/json matches names
// with Unicode case folding, so "ADDRESS" or "addreſs" is address). "" if none, or if
// data is not an object (the decoder then says what is wrong).
func oddKey(data []byte, fields []string) (key string, twice bool) {
	dec := json.NewDecoder(bytes.NewReader(data))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return "", false
	}
	seen := map[string]bool{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return "", false
		}
		k, _ := t.(string)
		if !slices.Contains(fields, k) {
			return k, false
		}
		if seen[k] {
			return k, true
		}
		seen[k] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return "", false
		}
	}
	return "", false
}

// ParseDuration parses how long an entry lasts (policy.ParseDuration: a Go duration or
// whole days, more than zero).
func ParseDuration(s string) (time.Duration, error) { return policy.ParseDuration(s) }
