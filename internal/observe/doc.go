// Package observe holds the process-wide observability helpers of tally: a
// small in-process event bus that fans values out to subscribers without ever
// letting a slow subscriber hold up the publisher.
//
// # Concurrency
//
// A Bus is safe for concurrent use. Publish never blocks: each subscriber has
// a bounded channel, and a subscriber whose channel is full when a value
// arrives is dropped (its channel is closed and the drop is counted), so a
// stalled reader costs nothing but its own stream.
package observe
