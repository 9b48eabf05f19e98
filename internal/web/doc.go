// Package web holds the control plane's dashboard: one static HTML page with
// a small stylesheet and vanilla JavaScript, embedded in the binary (no build
// step, no external assets), and the handler that serves them.
//
// The page reads the control plane's REST API and its event stream
// (GET /api/v1/events) from the origin that served it. It shows the edges
// (sent, confirmed, omitted, in flight, p99 latency), the latest omission
// events as they happen, the "no policy set" warning of /api/v1/config, and
// buttons that switch each fault kind on and off through
// PUT/DELETE /api/v1/faults/{kind}. Those need the admin token, which the page
// takes from its URL fragment (#token=...), so it never reaches a server log;
// without one the buttons are disabled.
package web
