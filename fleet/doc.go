// Package fleet is the etcd side of a fleet of routers (issue 14): one change by the
// NOC reaches every router through etcd. The NOC pushes a group's policy with a
// compare-and-swap on the revision it read (push.go), each push with a history
// record written in the same transaction (history.go), so history and rollback survive
// etcd's compaction. Each router's daemon watches its group (Source, source.go: a
// controller.Source, so a pushed policy is validated, applied, proved and rolled back
// like any other), takes the group's fleet-wide runtime entries (entries.go: each under
// a lease that ends with the entry), and reports what it has in force under a lease of
// its own (status.go). FleetStatus (fleetstatus.go) puts the reports beside the
// group's current revision: which routers are ok, behind, failed, stale or gone.
//
// Everything lives under one prefix (keys.go, default "/portcullis/"):
//
//	groups/G/policy                  the policy text in force for group G
//	groups/G/history/<seq>           one JSON Record per push (seq: 1, 2, ... 20 digits)
//	groups/G/entries/<kind>/<prefix> a fleet-wide runtime entry ("/" written "_"), leased
//	groups/G/routers/NAME            a router's Report, under the router's lease
//	groups/G/known/NAME              written by a router when absent, no lease: "gone" detection
//
// The package touches no kernel: the daemon wires the Source and the Reporter to the
// controller, and the CLI calls Push, DryRun, History, Rollback and FleetStatus.
package fleet
