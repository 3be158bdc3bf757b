package daemon

import (
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/portcullis/portcullis/controller"
	"github.com/portcullis/portcullis/overlay"
)

// The control socket answers the controller's refusals as the HTTP API does: a kind
// at its limit of live entries is the client's to fix (422), not the daemon's (500).
func TestEntryStatus(t *testing.T) {
	for _, c := range []struct {
		err  error
		want int
	}{
		{fmt.Errorf("%w: 50000 runtime unblocks are in force", overlay.ErrFull), http.StatusUnprocessableEntity},
		{fmt.Errorf("%w: x", overlay.ErrForbidden), http.StatusUnprocessableEntity},
		{fmt.Errorf("%w: x", overlay.ErrNotFound), http.StatusNotFound},
		{controller.ErrStoreFailed, http.StatusServiceUnavailable},
		{errors.New("the data plane refused"), http.StatusInternalServerError},
	} {
		if got := entryStatus(c.err); got != c.want {
			t.Errorf("%v: %d, want %d", c.err, got, c.want)
		}
	}
}
