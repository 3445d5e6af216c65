package webhook_test

import (
	"fmt"
	"net/http"
	"time"

	"github.com/genimg/genimg/internal/config"
	"github.com/genimg/genimg/internal/webhook"
)

// A client signs its request; the function verifies it.
func Example() {
	key, err := webhook.ParseKey(config.Secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"))
	if err != nil {
		panic(err)
	}
	body := []byte(`{"prompt":"a watercolor fox"}`)
	sent := time.Unix(1_800_000_000, 0)

	h := http.Header{}
	webhook.SignHeaders(h, key, "msg_1", sent, body)

	id, err := webhook.Verify(key, h, body, sent.Add(2*time.Second), 5*time.Minute)
	fmt.Println(id, err)
	_, err = webhook.Verify(key, h, []byte(`{"prompt":"a wolf"}`), sent, 5*time.Minute)
	fmt.Println(err)
	// Output:
	// msg_1 <nil>
	// webhook signature rejected: no signature in webhook-signature matches the body (check the secret, and sign "id.timestamp.body" over the exact bytes sent)
}
