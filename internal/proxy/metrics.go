package proxy

import (
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// metrics are the sidecar metrics of SPEC.md plus the proxy's own limits.
type metrics struct {
	sent, confirmed, received *prometheus.CounterVec // source, destination
	bytesSent, bytesConfirmed *prometheus.CounterVec // source, destination
	retries                   *prometheus.CounterVec // source, destination
	omissions                 *prometheus.CounterVec // source, destination, kind
	duration                  *prometheus.HistogramVec
	limitHits                 *prometheus.CounterVec // limit
	recordsDropped            prometheus.Counter
	handshakeFailures         *prometheus.CounterVec // reason
	badInput                  *prometheus.CounterVec // what
	svidRenewals              prometheus.Counter
	peerDials                 *prometheus.CounterVec // result
	svidExpiry                prometheus.Gauge
}

func newMetrics(reg *prometheus.Registry) *metrics {
	edge := []string{"source", "destination"}
	m := &metrics{
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tally_messages_sent_total", Help: "Messages this sidecar sent for its app."}, edge),
		confirmed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tally_messages_confirmed_total", Help: "Sent messages whose receipt verified."}, edge),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tally_messages_received_total", Help: "Messages this sidecar received whole for its app."}, edge),
		bytesSent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tally_bytes_sent_total", Help: "Body bytes sent (requests, and TCP caller-to-callee)."}, edge),
		bytesConfirmed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tally_bytes_confirmed_total", Help: "Body bytes of confirmed messages, both directions."}, edge),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tally_retries_total", Help: "Attempts after the first, for messages that never reached a peer."}, edge),
		omissions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tally_omissions_total", Help: "Omissions this sidecar detected, by kind."}, []string{"source", "destination", "kind"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "tally_request_duration_seconds", Help: "Time from send to verified receipt.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}, edge),
		limitHits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tally_proxy_limit_hits_total", Help: "Times a configured limit was reached, by limit."}, []string{"limit"}),
		recordsDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tally_proxy_records_dropped_total", Help: "Records that did not fit the record buffer (reported as audit_gap)."}),
		handshakeFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tally_proxy_handshake_failures_total", Help: "Inbound mTLS handshakes refused, by reason."}, []string{"reason"}),
		badInput: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tally_proxy_bad_input_total", Help: "Malformed input refused, by what."}, []string{"what"}),
		peerDials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tally_proxy_peer_dials_total", Help: "Connections dialed to other sidecars, by result."}, []string{"result"}),
		svidRenewals: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tally_proxy_svid_renewals_total", Help: "SVIDs renewed (at two thirds of their life)."}),
		svidExpiry: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tally_proxy_svid_expiry_timestamp_seconds", Help: "When the current SVID expires (Unix time)."}),
	}
	reg.MustRegister(m.sent, m.confirmed, m.received, m.bytesSent, m.bytesConfirmed, m.retries,
		m.omissions, m.duration, m.limitHits, m.recordsDropped, m.handshakeFailures, m.badInput,
		m.svidRenewals, m.svidExpiry, m.peerDials)
	return m
}

// edge is the caller side's state for one destination service: its sequence
// space and its cached metric children (no label hashing per message).
type edge struct {
	dest     string
	destID   spiffeid.ID
	sourceID string // this sidecar's own SPIFFE ID
	seq      atomic.Uint64

	sent, confirmed, received prometheus.Counter
	bytesSent, bytesConfirmed prometheus.Counter
	retries                   prometheus.Counter
	duration                  prometheus.Observer

	source    string
	omissions *prometheus.CounterVec
	omMu      sync.Mutex // guards omByKind
	omByKind  map[string]prometheus.Counter
}

func (m *metrics) newEdge(source, dest string, destID spiffeid.ID) *edge {
	return &edge{
		dest: dest, destID: destID, source: source,
		sent:           m.sent.WithLabelValues(source, dest),
		confirmed:      m.confirmed.WithLabelValues(source, dest),
		received:       m.received.WithLabelValues(source, dest),
		bytesSent:      m.bytesSent.WithLabelValues(source, dest),
		bytesConfirmed: m.bytesConfirmed.WithLabelValues(source, dest),
		retries:        m.retries.WithLabelValues(source, dest),
		duration:       m.duration.WithLabelValues(source, dest),
		omissions:      m.omissions,
		omByKind:       map[string]prometheus.Counter{},
	}
}

func (e *edge) omitted(kind string) {
	e.omMu.Lock()
	c, ok := e.omByKind[kind]
	if !ok {
		c = e.omissions.WithLabelValues(e.source, e.dest, kind)
		e.omByKind[kind] = c
	}
	e.omMu.Unlock()
	c.Inc()
}
