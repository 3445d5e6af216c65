// Package delivery brings messages from a Pub/Sub subscription to a
// function over HTTP the way Google Cloud does, for the emulators, which do
// not: a push subscription (the message as a CloudEvent, acknowledged by a
// 102/200/201/202/204, retried with exponential backoff, then sent to a
// dead-letter topic), and Eventarc for Cloud Storage (a notification turned
// into a google.cloud.storage.object.v1.finalized CloudEvent, retried until
// the maximum event age, 512 KB at most).
//
// The local stack and the end-to-end tests share it, so the tests exercise
// the delivery a newcomer's first job goes through.
package delivery

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"cloud.google.com/go/pubsub/v2"
)

// Kind is how messages are presented to the function.
type Kind int

const (
	// MessagePublished POSTs each message as a binary-mode
	// google.cloud.pubsub.topic.v1.messagePublished CloudEvent.
	MessagePublished Kind = iota
	// StorageFinalized POSTs each Cloud Storage notification
	// (eventType OBJECT_FINALIZE) as a binary-mode
	// google.cloud.storage.object.v1.finalized CloudEvent, as Eventarc
	// does; other notifications are acknowledged and dropped.
	StorageFinalized
)

// Production limits the deliveries enforce.
const (
	// MaxEventarcBytes is the largest event Eventarc delivers.
	MaxEventarcBytes = 512 * 1024
	// MaxPushBytes is the largest Pub/Sub message.
	MaxPushBytes = 10 * 1000 * 1000
)

// A Pusher delivers one subscription to one endpoint.
type Pusher struct {
	// Subscriber is the subscription to drain.
	Subscriber *pubsub.Subscriber
	// Endpoint is the function's URL.
	Endpoint string
	Kind     Kind
	// Topic is the topic's full name (projects/P/topics/T), for the event
	// source.
	Topic string
	// Subscription is the subscription's full name, for the event data.
	Subscription string
	// MinBackoff and MaxBackoff bound the exponential backoff between
	// attempts (Pub/Sub's retry policy: 10 s and 600 s by default).
	MinBackoff, MaxBackoff time.Duration
	// MaxAttempts is the number of deliveries before a message goes to
	// DeadLetter (Pub/Sub: 5 to 100). Zero means no limit.
	MaxAttempts int
	// MaxAge ends retries of a message older than this (Eventarc: 24 h).
	// Zero means no limit.
	MaxAge time.Duration
	// DeadLetter receives messages that were never acknowledged; nil drops
	// them, as Eventarc does.
	DeadLetter *pubsub.Publisher
	// MaxBytes rejects larger events before any attempt, as the platform
	// does; zero picks the Kind's limit.
	MaxBytes int
	// Client makes the requests; nil means a client with a 10-minute
	// timeout (the longest a push may take).
	Client *http.Client

	attempts, acked, deadLettered, rejected atomic.Int64
}

// Stats counts what a Pusher did.
type Stats struct {
	Attempts, Acked, DeadLettered, Rejected int64
}

// Stats returns the counts so far.
func (p *Pusher) Stats() Stats {
	return Stats{p.attempts.Load(), p.acked.Load(), p.deadLettered.Load(), p.rejected.Load()}
}

// Run delivers until ctx is done.
func (p *Pusher) Run(ctx context.Context) error {
	err := p.Subscriber.Receive(ctx, func(ctx context.Context, m *pubsub.Message) {
		p.Deliver(ctx, m)
		// Every message is acknowledged once its fate is decided: delivered,
		// dead-lettered, or dropped as the platform would drop it.
		m.Ack()
	})
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// Deliver presents one message to the endpoint until it is acknowledged or
// its retries are spent. It reports whether the endpoint acknowledged it.
func (p *Pusher) Deliver(ctx context.Context, m *pubsub.Message) bool {
	build := p.messagePublished
	if p.Kind == StorageFinalized {
		if m.Attributes["eventType"] != "OBJECT_FINALIZE" {
			return false
		}
		build = p.storageFinalized
	}
	body, header, err := build(m)
	if err != nil {
		slog.WarnContext(ctx, "delivery: message cannot be delivered", "messageId", m.ID, "error", err)
		p.rejected.Add(1)
		return false
	}
	if limit := p.maxBytes(); len(body) > limit {
		slog.WarnContext(ctx, "delivery: event over the platform's size limit, not delivered",
			"messageId", m.ID, "bytes", len(body), "limit", limit)
		p.rejected.Add(1)
		return false
	}

	backoff := p.MinBackoff
	for attempt := 1; ; attempt++ {
		p.attempts.Add(1)
		status, err := p.post(ctx, body, header)
		if err == nil && acknowledged(status) {
			p.acked.Add(1)
			return true
		}
		slog.InfoContext(ctx, "delivery: not acknowledged", "messageId", m.ID, "attempt", attempt, "status", status, "error", err)
		tooOld := p.MaxAge > 0 && time.Since(m.PublishTime) > p.MaxAge
		if (p.MaxAttempts > 0 && attempt >= p.MaxAttempts) || tooOld {
			p.deadLetter(ctx, m, attempt)
			return false
		}
		// Full jitter, as Pub/Sub spreads redeliveries.
		wait := time.Duration(rand.Int64N(int64(backoff) + 1))
		backoff = min(backoff*2, p.MaxBackoff)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(wait):
		}
	}
}

// acknowledged is Pub/Sub push's and Eventarc's notion of success.
func acknowledged(status int) bool {
	switch status {
	case 102, 200, 201, 202, 204:
		return true
	}
	return false
}

func (p *Pusher) maxBytes() int {
	switch {
	case p.MaxBytes > 0:
		return p.MaxBytes
	case p.Kind == StorageFinalized:
		return MaxEventarcBytes
	default:
		return MaxPushBytes
	}
}

// pushClient is the Pushers' default client: a 10-minute timeout (the
// longest a push may take), and idle connections kept for as many pushes as
// run at once, as Pub/Sub and Eventarc hold theirs open — not
// http.DefaultTransport's two per host, which dial and tear down a
// connection for nearly every push under load.
var pushClient = &http.Client{Timeout: 10 * time.Minute, Transport: func() http.RoundTripper {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns, t.MaxIdleConnsPerHost = 1024, 1024
	return t
}()}

func (p *Pusher) post(ctx context.Context, body []byte, header http.Header) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.Endpoint, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header = header.Clone()
	client := p.Client
	if client == nil {
		client = pushClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var drain [512]byte
	for {
		if _, err := resp.Body.Read(drain[:]); err != nil {
			break
		}
	}
	return resp.StatusCode, nil
}

func (p *Pusher) deadLetter(ctx context.Context, m *pubsub.Message, attempts int) {
	if p.DeadLetter == nil {
		slog.WarnContext(ctx, "delivery: retries exhausted, message dropped", "messageId", m.ID, "attempts", attempts)
		p.deadLettered.Add(1)
		return
	}
	attrs := make(map[string]string, len(m.Attributes)+2)
	for k, v := range m.Attributes {
		attrs[k] = v
	}
	// The attributes Pub/Sub adds to dead-lettered messages.
	attrs["CloudPubSubDeadLetterSourceDeliveryCount"] = strconv.Itoa(attempts)
	attrs["CloudPubSubDeadLetterSourceSubscription"] = p.Subscription
	if _, err := p.DeadLetter.Publish(ctx, &pubsub.Message{Data: m.Data, Attributes: attrs}).Get(ctx); err != nil {
		slog.ErrorContext(ctx, "delivery: dead-lettering failed", "messageId", m.ID, "error", err)
	}
	p.deadLettered.Add(1)
}

// messagePublished is the binary-mode CloudEvent Eventarc and the functions
// framework give a Pub/Sub-triggered function.
func (p *Pusher) messagePublished(m *pubsub.Message) ([]byte, http.Header, error) {
	publish := m.PublishTime.UTC().Format(time.RFC3339Nano)
	data := map[string]any{
		"subscription": p.Subscription,
		"message": map[string]any{
			"data":         m.Data,
			"attributes":   m.Attributes,
			"messageId":    m.ID,
			"message_id":   m.ID,
			"publishTime":  publish,
			"publish_time": publish,
		},
	}
	body, err := json.Marshal(data)
	if err != nil {
		return nil, nil, err
	}
	h := cloudEventHeader(m.ID, "google.cloud.pubsub.topic.v1.messagePublished", "//pubsub.googleapis.com/"+p.Topic, "", publish)
	return body, h, nil
}

// storageFinalized turns a Cloud Storage notification (payload
// JSON_API_V1) into the event Eventarc delivers for the same upload.
func (p *Pusher) storageFinalized(m *pubsub.Message) ([]byte, http.Header, error) {
	if m.Attributes["payloadFormat"] != "JSON_API_V1" || len(m.Data) == 0 {
		return nil, nil, fmt.Errorf("notification without a JSON_API_V1 payload")
	}
	bucket, name := m.Attributes["bucketId"], m.Attributes["objectId"]
	when := m.Attributes["eventTime"]
	if when == "" {
		when = m.PublishTime.UTC().Format(time.RFC3339Nano)
	}
	// Eventarc's event id is stable per upload: derive it from the object
	// and generation, so a redelivery carries the same id.
	sum := sha256.Sum256([]byte(bucket + "/" + name + "#" + m.Attributes["objectGeneration"]))
	h := cloudEventHeader(hex.EncodeToString(sum[:12]), "google.cloud.storage.object.v1.finalized",
		"//storage.googleapis.com/projects/_/buckets/"+bucket, "objects/"+name, when)
	return m.Data, h, nil
}

func cloudEventHeader(id, typ, source, subject, when string) http.Header {
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("ce-specversion", "1.0")
	h.Set("ce-id", id)
	h.Set("ce-type", typ)
	h.Set("ce-source", source)
	h.Set("ce-time", when)
	if subject != "" {
		h.Set("ce-subject", subject)
	}
	return h
}
