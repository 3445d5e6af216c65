package config_test

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/genimg/genimg/internal/config"
)

const (
	apiKey        = "AIzaSy-DISTINCTIVE-key-7f3a9e"
	webhookSecret = "whsec_DISTINCTIVE_webhook_9c1e"
)

// TestSecretsNeverPrinted prints a configuration every way a program
// might and looks for the secrets, in clear and hex-encoded.
func TestSecretsNeverPrinted(t *testing.T) {
	c, err := config.LoadConfig(env("GEMINI_API_KEY", apiKey, "GENIMG_WEBHOOK_SECRET", webhookSecret))
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	if got := c.Model.APIKey.Reveal(); got != apiKey {
		t.Errorf("APIKey.Reveal() = %q, want the key", got)
	}
	if got := c.Webhook.Secret.Reveal(); got != webhookSecret {
		t.Errorf("Webhook.Secret.Reveal() = %q, want the secret", got)
	}

	outputs := map[string]string{}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%d", "%x", "%X", "%10.3s", "%T %v"} {
		outputs["Config "+verb] = fmt.Sprintf(verb, c)
		outputs["*Config "+verb] = fmt.Sprintf(verb, &c)
		outputs["Model "+verb] = fmt.Sprintf(verb, c.Model)
		outputs["Webhook "+verb] = fmt.Sprintf(verb, c.Webhook)
		outputs["Secret "+verb] = fmt.Sprintf(verb, c.Model.APIKey)
		outputs["[]any "+verb] = fmt.Sprintf(verb, []any{c.Webhook.Secret})
	}
	outputs["Sprint"] = fmt.Sprint(c, c.Model.APIKey)
	outputs["Sprintln"] = fmt.Sprintln(c, c.Webhook.Secret)
	outputs["String"] = c.Model.APIKey.String()
	outputs["GoString"] = c.Model.APIKey.GoString()
	if b, err := json.Marshal(c); err != nil {
		t.Errorf("json.Marshal(Config): %v", err)
	} else {
		outputs["json"] = string(b)
	}
	for name, h := range map[string]func(*bytes.Buffer) slog.Handler{
		"slog json": func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
		"slog text": func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
	} {
		var b bytes.Buffer
		log := slog.New(h(&b))
		log.Info("configuration loaded", "config", c)
		log.Info("key", "apiKey", c.Model.APIKey, "secret", c.Webhook.Secret, "model", c.Model, "webhook", c.Webhook)
		log.Info("group", slog.Group("g", slog.Any("config", &c)))
		outputs[name] = b.String()
	}

	for name, out := range outputs {
		for _, secret := range []string{apiKey, webhookSecret} {
			hexed := hex.EncodeToString([]byte(secret))
			// A 12-character head also catches a width-truncated print.
			if strings.Contains(out, secret[:12]) || strings.Contains(strings.ToLower(out), hexed) {
				t.Errorf("%s prints a secret: %s", name, out)
			}
		}
	}
	// The redaction is visible, so an operator can tell "set" from "unset".
	for _, name := range []string{"Config %v", "json", "slog json", "Secret %s"} {
		if !strings.Contains(outputs[name], "[redacted]") {
			t.Errorf("%s does not show [redacted]: %s", name, outputs[name])
		}
	}
	if !strings.Contains(outputs["slog json"], `"webhookSecret":"[redacted]"`) || !strings.Contains(outputs["slog json"], `"backend":"gemini-api"`) {
		t.Errorf("slog JSON of Config lacks its LogValue fields: %s", outputs["slog json"])
	}
}

func TestSecretEmpty(t *testing.T) {
	var s config.Secret
	got := []string{s.String(), fmt.Sprintf("%v|%s|%q", s, s, s), s.Reveal()}
	want := []string{"", `||""`, ""}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("empty Secret printed %q, want %q", got[i], want[i])
		}
	}
	if b, _ := json.Marshal(s); string(b) != `""` {
		t.Errorf("json.Marshal(empty Secret) = %s, want \"\"", b)
	}
}

// TestSecretsNotInErrors: a failed start prints every problem, and never
// the secrets that sit beside them.
func TestSecretsNotInErrors(t *testing.T) {
	_, err := config.LoadConfig(env("GEMINI_API_KEY", apiKey, "GENIMG_WEBHOOK_SECRET", webhookSecret,
		"GENIMG_OUTPUT_BUCKET", "gs://bad", "GENIMG_WEBHOOK_TOLERANCE", "forever", "GENIMG_MODEL", "nope"))
	if err == nil {
		t.Fatal("LoadConfig = nil error, want problems")
	}
	if strings.Contains(err.Error(), apiKey) || strings.Contains(err.Error(), webhookSecret) {
		t.Errorf("LoadConfig error prints a secret: %v", err)
	}
	if !strings.Contains(err.Error(), `GENIMG_WEBHOOK_TOLERANCE="forever"`) {
		t.Errorf("LoadConfig error lacks the bad tolerance: %v", err)
	}
}
