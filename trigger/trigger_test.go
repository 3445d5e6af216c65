package trigger

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	cloudevents "github.com/cloudevents/sdk-go/v2"
)

// sampleEvent loads a structured-mode CloudEvent from testdata/events.
func sampleEvent(t *testing.T, name string) cloudevents.Event {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", "events", name))
	if err != nil {
		t.Fatal(err)
	}
	var e cloudevents.Event
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return e
}

// withData returns e with its data replaced by v (JSON).
func withData(t *testing.T, e cloudevents.Event, v any) cloudevents.Event {
	t.Helper()
	if err := e.SetData(cloudevents.ApplicationJSON, v); err != nil {
		t.Fatal(err)
	}
	return e
}

// messageEvent is a messagePublished event carrying data and attributes.
func messageEvent(t *testing.T, data []byte, attrs map[string]string) cloudevents.Event {
	t.Helper()
	e := sampleEvent(t, "pubsub-text-cloudevent.json")
	return withData(t, e, map[string]any{
		"subscription": "projects/p/subscriptions/s",
		"message": map[string]any{
			"data":        base64.StdEncoding.EncodeToString(data),
			"attributes":  attrs,
			"messageId":   "1234",
			"publishTime": "2026-11-25T10:00:00Z",
		},
	})
}
