// Package instance is one running genimg: a pipeline Service and its HTTP
// front door, as the functions see them. function.go builds one from
// the environment; the local stack and the end-to-end tests build several
// from explicit configuration and serve each under its own path.
package instance

import (
	"context"
	"net/http"

	"github.com/GoogleCloudPlatform/functions-framework-go/funcframework"
	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/genimg/genimg/internal/config"
	"github.com/genimg/genimg/internal/httpapi"
	"github.com/genimg/genimg/internal/pipeline"
)

// An Instance is genimg's five functions on one Service.
type Instance struct {
	*pipeline.Service
	API *httpapi.API
}

// New builds an Instance from cfg.
func New(ctx context.Context, cfg config.Config, opts ...pipeline.Option) (*Instance, error) {
	svc, err := pipeline.New(ctx, cfg, opts...)
	if err != nil {
		return nil, err
	}
	api, err := httpapi.New(svc)
	if err != nil {
		svc.Close()
		return nil, err
	}
	return &Instance{Service: svc, API: api}, nil
}

// Generate is the HTTP function: POST a job, GET ?id= its record.
func (in *Instance) Generate(w http.ResponseWriter, r *http.Request) { in.API.Generate(w, r) }

// PollBatches is the batch lane's poller.
func (in *Instance) PollBatches(w http.ResponseWriter, r *http.Request) { in.API.PollBatches(w, r) }

// Register serves the functions of whatever Instance get returns at the
// time of each request, under prefix (e.g. "/" or "/inst3/"), with the
// functions framework: prefix+"Generate", "OnMessage", "OnUpload" and
// "PollBatches", "OnCompletion". get may return nil while no Instance is there: the
// request then answers 503, and an event is redelivered.
func Register(ctx context.Context, prefix string, get func() *Instance) error {
	unavailable := func(w http.ResponseWriter) {
		http.Error(w, "genimg is not running here", http.StatusServiceUnavailable)
	}
	for _, err := range []error{
		funcframework.RegisterHTTPFunctionContext(ctx, prefix+"Generate", func(w http.ResponseWriter, r *http.Request) {
			if in := get(); in != nil {
				in.Generate(w, r)
				return
			}
			unavailable(w)
		}),
		funcframework.RegisterHTTPFunctionContext(ctx, prefix+"PollBatches", func(w http.ResponseWriter, r *http.Request) {
			if in := get(); in != nil {
				in.PollBatches(w, r)
				return
			}
			unavailable(w)
		}),
		funcframework.RegisterCloudEventFunctionContext(ctx, prefix+"OnMessage", func(ctx context.Context, e cloudevents.Event) error {
			if in := get(); in != nil {
				return in.OnMessage(ctx, e)
			}
			return errNotRunning
		}),
		funcframework.RegisterCloudEventFunctionContext(ctx, prefix+"OnUpload", func(ctx context.Context, e cloudevents.Event) error {
			if in := get(); in != nil {
				return in.OnUpload(ctx, e)
			}
			return errNotRunning
		}),
		funcframework.RegisterCloudEventFunctionContext(ctx, prefix+"OnCompletion", func(ctx context.Context, e cloudevents.Event) error {
			if in := get(); in != nil {
				return in.OnCompletion(ctx, e)
			}
			return errNotRunning
		}),
	} {
		if err != nil {
			return err
		}
	}
	return nil
}

// errNotRunning asks for redelivery of an event that arrived while no
// Instance was there.
var errNotRunning = notRunning{}

type notRunning struct{}

func (notRunning) Error() string { return "genimg is not running here; retry" }
