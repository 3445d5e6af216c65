package trigger

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/genimg/genimg/internal/config"
	"github.com/genimg/genimg/job"
)

// MessagePublishedType is the CloudEvent type of a Pub/Sub message.
const MessagePublishedType = "google.cloud.pubsub.topic.v1.messagePublished"

// MaxEventBytes is Eventarc's limit on one event (512 KB): a job published
// to a topic that reaches a function through Eventarc must fit it.
const MaxEventBytes = 512 * 1024

// Attributes genimg sets on the job messages it queues itself (HTTP jobs,
// and held jobs it requeues), so that the record names the original trigger
// rather than the message, and the job's age runs from its first delivery.
const (
	AttrTrigger = "genimg-trigger"
	AttrSource  = "genimg-source"
	// AttrCreated is when genimg first took the job (RFC 3339).
	AttrCreated = "genimg-created"
	// AttrIdempotencyKey keys a job published without an "id": a client
	// library's retried publish (a new message id) is then the same job,
	// not a second paid one. Publishers should set it (README).
	AttrIdempotencyKey = "genimg-idempotency-key"
)

// A Message is a Pub/Sub message as the messagePublished event carries it.
// Real deliveries carry camelCase fields and snake_case twins; both decode.
type Message struct {
	Data        []byte            `json:"data"`
	Attributes  map[string]string `json:"attributes"`
	MessageID   string            `json:"messageId"`
	PublishTime time.Time         `json:"publishTime"`
	OrderingKey string            `json:"orderingKey"`

	MessageIDSnake   string    `json:"message_id"`
	PublishTimeSnake time.Time `json:"publish_time"`
}

// MessagePublished is the data of a messagePublished event.
type MessagePublished struct {
	Message      Message `json:"message"`
	Subscription string  `json:"subscription"`
}

// DecodeMessage reads a messagePublished event's data.
func DecodeMessage(e cloudevents.Event) (MessagePublished, error) {
	var m MessagePublished
	if err := json.Unmarshal(e.Data(), &m); err != nil {
		return m, fmt.Errorf("%w: Pub/Sub event data: %v", job.ErrInvalid, err)
	}
	if m.Message.MessageID == "" {
		m.Message.MessageID = m.Message.MessageIDSnake
	}
	if m.Message.MessageID == "" {
		m.Message.MessageID = e.ID()
	}
	if m.Message.PublishTime.IsZero() {
		m.Message.PublishTime = m.Message.PublishTimeSnake
	}
	if m.Message.PublishTime.IsZero() {
		m.Message.PublishTime = e.Time()
	}
	return m, nil
}

// FromMessage decodes a messagePublished event into a delivery: a job in
// the message data; or, for a Cloud Storage notification, an upload.
func FromMessage(e cloudevents.Event, u config.Uploads) (out Delivery) {
	if e.Type() == job.EventType {
		// genimg's own completion event, delivered as itself (an unwrapped
		// push subscription turns its ce-* attributes into headers): taking
		// it for a job would record a failure, whose event would come back.
		return Delivery{Ignore: "the event is a genimg completion event, never a job", Time: e.Time()}
	}
	m, err := DecodeMessage(e)
	if err != nil {
		return Delivery{
			ID:      job.DeriveID("msg", e.Source(), e.ID()),
			Trigger: job.Trigger{Kind: job.PubSub, Source: e.ID()},
			Time:    e.Time(),
			Err:     err,
		}
	}
	msg := m.Message
	attrs := msg.Attributes
	defer func() { out.Traceparent = traceparentOf(attrs) }()

	if attrs["ce-type"] == job.EventType || attrs["type"] == job.EventType {
		return Delivery{Ignore: "the message is a genimg completion event, never a job", Time: msg.PublishTime}
	}
	if kind, ok := attrs["eventType"]; ok && attrs["bucketId"] != "" {
		return fromNotification(kind, msg, u)
	}

	d := Delivery{
		ID:      job.DeriveID("msg", e.Source(), msg.MessageID),
		Trigger: job.Trigger{Kind: job.PubSub, Source: msg.MessageID},
		Time:    msg.PublishTime,
	}
	if key := attrs[AttrIdempotencyKey]; key != "" {
		d.ID = job.DeriveID("key", e.Source(), key)
	}
	switch kind := job.TriggerKind(attrs[AttrTrigger]); {
	case attrs[AttrSource] == "":
	case kind == job.HTTP, kind == job.PubSub, kind == job.Upload:
		d.Trigger = job.Trigger{Kind: kind, Source: attrs[AttrSource]}
	}
	if t, err := time.Parse(time.RFC3339Nano, attrs[AttrCreated]); err == nil {
		d.Time = t
	}
	if n := len(msg.Data); n > MaxEventBytes {
		d.Err = fmt.Errorf("%w: the message is %d bytes; a job delivered through Eventarc must fit %d bytes (512 KB): reference images by gs:// URI instead of inline data", job.ErrTooLarge, n, MaxEventBytes)
		return d
	}
	if IsBatch(msg.Data) {
		// Ids derive from the delivery's id, itself from the message id:
		// a redelivered batch maps to the same jobs.
		b, err := DecodeBatch(msg.Data, d.ID)
		if err != nil {
			d.Err = err
			return d
		}
		d.Batch = &b
		return d
	}
	j, err := job.Decode(msg.Data)
	if err != nil {
		// Record the failure under the caller's id when one can be read,
		// so that the caller finds it.
		if id := looseID(msg.Data); id != "" {
			d.ID = id
		}
		d.Err = err
		return d
	}
	if j.ID != "" {
		if !job.ValidID(j.ID) {
			d.Err = fmt.Errorf("%w: id %q: must be 1 to 128 characters of A-Z, a-z, 0-9, '.', '_' or '-'", job.ErrInvalid, truncate(j.ID))
			return d
		}
		d.ID = j.ID
	}
	j.ID = d.ID
	d.Job = j
	return d
}

// Attributes that carry a W3C trace context on a message: Google's client
// libraries write the first, other publishers the second.
const (
	AttrGoogTraceparent = "googclient_traceparent"
	AttrTraceparent     = "traceparent"
)

func traceparentOf(attrs map[string]string) string {
	if v := attrs[AttrGoogTraceparent]; v != "" {
		return v
	}
	return attrs[AttrTraceparent]
}

// fromNotification treats a Cloud Storage Pub/Sub notification exactly like
// an upload event.
func fromNotification(kind string, msg Message, u config.Uploads) Delivery {
	if kind != "OBJECT_FINALIZE" {
		return Delivery{Ignore: "storage notification " + kind + " is not an upload", Time: msg.PublishTime}
	}
	var o Object
	if msg.Attributes["payloadFormat"] == "JSON_API_V1" && len(msg.Data) > 0 {
		if err := json.Unmarshal(msg.Data, &o); err == nil {
			o.MetadataKnown = true
		}
	}
	o.Bucket = msg.Attributes["bucketId"]
	o.Name = msg.Attributes["objectId"]
	if g, err := strconv.ParseInt(msg.Attributes["objectGeneration"], 10, 64); err == nil {
		o.Generation = Int64(g)
	}
	when := msg.PublishTime
	if t, err := time.Parse(time.RFC3339Nano, msg.Attributes["eventTime"]); err == nil {
		when = t
	}
	return FromObject(o, when, u)
}

// looseID reads a valid "id" from a job that failed strict decoding, or "".
func looseID(data []byte) string {
	var v struct {
		ID string `json:"id"`
	}
	if json.Unmarshal(data, &v) != nil || !job.ValidID(v.ID) {
		return ""
	}
	return v.ID
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}
