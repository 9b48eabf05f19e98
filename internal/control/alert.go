package control

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// alertQueue bounds the omission events waiting for the webhook.
const alertQueue = 10_000

// alerter posts omission events to the alert webhook, one JSON event per
// POST, retrying with capped exponential backoff until the receiver answers
// 2xx or the attempts run out. Events that do not fit the queue, or whose
// delivery failed, are counted and logged: an alert lost is itself told.
type alerter struct {
	url    string
	log    *slog.Logger
	queue  chan Event
	client *http.Client
	result *prometheus.CounterVec // result: delivered, failed, dropped
}

func newAlerter(url string, log *slog.Logger, reg *prometheus.Registry) *alerter {
	a := &alerter{url: url, log: log.With("component", "alerts"), queue: make(chan Event, alertQueue),
		client: &http.Client{Timeout: 5 * time.Second}}
	a.result = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tally_control_alerts_total", Help: "Omission events posted to the alert webhook, by result.",
	}, []string{"result"})
	reg.MustRegister(a.result)
	return a
}

// send queues ev; it never blocks ingestion.
func (a *alerter) send(ev Event) {
	if a.url == "" {
		return
	}
	select {
	case a.queue <- ev:
	default:
		a.result.WithLabelValues("dropped").Inc()
		a.log.Error("alert dropped: webhook queue full", "event_id", ev.ID, "kind", ev.Kind, "queue", alertQueue)
	}
}

func (a *alerter) run(ctx context.Context) {
	if a.url == "" {
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-a.queue:
			if err := a.deliver(ctx, ev); err != nil {
				a.result.WithLabelValues("failed").Inc()
				a.log.Error("alert not delivered", "event_id", ev.ID, "kind", ev.Kind, "webhook", a.url, "err", err)
				continue
			}
			a.result.WithLabelValues("delivered").Inc()
		}
	}
}

func (a *alerter) deliver(ctx context.Context, ev Event) error {
	body, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	wait := 100 * time.Millisecond
	var last error
	for attempt := 1; attempt <= 8; attempt++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.url, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Tally-Event-Id", ev.ID)
		resp, err := a.client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode/100 == 2 {
				return nil
			}
			err = fmt.Errorf("webhook answered %s", resp.Status)
		}
		last = err
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(wait*2, 5*time.Second)
	}
	return fmt.Errorf("after 8 attempts: %w", last)
}
