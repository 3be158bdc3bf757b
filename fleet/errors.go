package fleet

import "errors"

// Sentinel errors, all of the package's.
var (
	// ErrConflict: the group's policy changed since the revision the push was based
	// on; re-read and push again.
	ErrConflict = errors.New("the group's policy changed since it was read")
	// ErrName: a group or router name outside [a-z0-9._-], or longer than 63.
	ErrName = errors.New("invalid name")
	// ErrPrefix: a key prefix that does not end in "/".
	ErrPrefix = errors.New("invalid key prefix")
	// ErrNoPolicy: the group has no policy in etcd.
	ErrNoPolicy = errors.New("the group has no policy")
	// ErrNoRevision: no history record of the group has the revision asked for.
	ErrNoRevision = errors.New("no such revision in the group's history")
	// ErrInvalid: a request missing what it needs (who, a duration, a valid entry).
	ErrInvalid = errors.New("invalid request")
	// ErrNotFound: no such fleet entry.
	ErrNotFound = errors.New("no such fleet entry")
	// ErrHeldLocally: a fleet entry waits for the router's own entry of the same kind
	// and prefix to end.
	ErrHeldLocally = errors.New("held by the router's own entry")
	// ErrNoGroup: no key of the group in etcd: a misspelt name, or a group still to
	// be made.
	ErrNoGroup = errors.New("no such group")
	// ErrDamagedEntry: a fleet entry's key in etcd holds what is not an entry (written
	// by hand or by another program); the others are still listed.
	ErrDamagedEntry = errors.New("damaged fleet entries")
	// ErrDamagedRecord: a key under a group's history holds what is not a record
	// (written by hand); the others are still listed, and pushes go on.
	ErrDamagedRecord = errors.New("damaged history records")
	// ErrNoRouter: the group knows no router of that name (Forget).
	ErrNoRouter = errors.New("no such router")
	// ErrTooLarge: etcd refused a request above its --max-request-bytes (a policy too
	// large to push with its history record).
	ErrTooLarge = errors.New("too large for etcd")
	// ErrClockSkew: a fleet entry this router's clock says has ended, although it
	// was put just now: the clocks of the router and of the writer differ.
	ErrClockSkew = errors.New("ended by this router's clock")
	// ErrUnreachable: etcd does not answer.
	ErrUnreachable = errors.New("etcd unreachable")
)
