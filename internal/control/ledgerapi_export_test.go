package control

import (
	"crypto/x509"
	"log/slog"
	"net/http"

	"github.com/tally-mesh/tally/internal/ledger"
)

// LedgerHandler exports ledgerHandler to the tests of package control_test.
func LedgerHandler(lg *ledger.Log, ca *x509.Certificate, log *slog.Logger) http.Handler {
	return ledgerHandler(lg, ca, log)
}
