package control

import (
	"log/slog"
	"net/http"

	"github.com/tally-mesh/tally/internal/ledger"
)

// LedgerHandler exports ledgerHandler to the tests of package control_test.
func LedgerHandler(lg *ledger.Log, log *slog.Logger) http.Handler { return ledgerHandler(lg, log) }
