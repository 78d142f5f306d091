// Command consumer is a DNS-style switcher fed by Tern's JSON events.
//
// It reads the JSON mirror of Tern's lifecycle events (tern.json.events.>, stream
// TERN_EVENTS_JSON) with an ordered JetStream consumer, as the events-reader NATS identity, turns
// each message into a CloudEvent with the CloudEvents Go SDK (binary mode: ce-* headers + JSON
// data), checks the data against the JSON Schema its dataschema names, and on every
// tern.failover.succeeded records where the VM now runs: a JSON file mapping each VM's name to
// its ARM id, region, resource group and private IPs.
//
//	go run -mod=mod . --endpoints ../../../.tern/endpoints.json --records records.json
//
// It replays everything the stream holds, then follows new events until interrupted; it exits 1
// if any event was refused.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	nethttp "net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"

	"github.com/cloudevents/sdk-go/v2/binding"
	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/santhosh-tekuri/jsonschema/v6"
)

const (
	jsonSubjects = "tern.json.events.>"
	jsonStream   = "TERN_EVENTS_JSON"
	// The events-reader may only receive replies on its own inbox prefix.
	inboxPrefix = "_INBOX_events-reader"
)

// Record is where a failed-over VM runs now.
type Record struct {
	ArmID         string   `json:"arm_id"`
	Region        string   `json:"region"`
	ResourceGroup string   `json:"resource_group"`
	PrivateIPs    []string `json:"private_ips"`
	PlanID        string   `json:"plan_id"`
	EventID       string   `json:"event_id"`
	Time          string   `json:"time,omitempty"`
}

// eventData is the part of a tern.v1.Event (protobuf JSON mapping, proto field names) read here.
type eventData struct {
	PlanID string `json:"plan_id"`
	VM     *struct {
		VM struct {
			Name string `json:"name"`
		} `json:"vm"`
		Resource struct {
			ArmID         string   `json:"arm_id"`
			Region        string   `json:"region"`
			ResourceGroup string   `json:"resource_group"`
			PrivateIPs    []string `json:"private_ips"`
		} `json:"resource"`
	} `json:"vm"`
}

// schemaBook holds the committed schemas, by their $id (the events' dataschema).
type schemaBook map[string]*jsonschema.Schema

func loadSchemas(dir string) (schemaBook, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil || len(paths) == 0 {
		return nil, fmt.Errorf("no schemas in %s: pass --schemas DIR (docs/events/schemas)", dir)
	}
	compiler := jsonschema.NewCompiler()
	var ids []string
	for _, path := range paths {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		doc, err := jsonschema.UnmarshalJSON(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		id, _ := doc.(map[string]any)["$id"].(string)
		if id == "" {
			return nil, fmt.Errorf("%s has no $id", path)
		}
		if err := compiler.AddResource(id, doc); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		ids = append(ids, id)
	}
	book := schemaBook{}
	for _, id := range ids {
		schema, err := compiler.Compile(id)
		if err != nil {
			return nil, fmt.Errorf("compiling %s: %w", id, err)
		}
		book[id] = schema
	}
	return book, nil
}

func (b schemaBook) check(dataschema string, data []byte) error {
	schema, ok := b[dataschema]
	if !ok {
		return fmt.Errorf("no schema with $id %q", dataschema)
	}
	instance, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("the data is not JSON: %w", err)
	}
	if err := schema.Validate(instance); err != nil {
		return fmt.Errorf("data does not match %s: %v", dataschema, err)
	}
	return nil
}

// records is the record file: VM name -> Record, written whole and atomically on every change.
type records struct {
	path string
	mu   sync.Mutex
	byVM map[string]Record
}

func (r *records) update(name string, record Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.byVM[name] = record
	text, err := json.MarshalIndent(r.byVM, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(r.path), ".records-")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(append(text, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), r.path)
}

// toCloudEvent reads a NATS message in CloudEvents binary mode through the SDK's HTTP binding,
// whose headers are the same ce-* names.
func toCloudEvent(ctx context.Context, msg jetstream.Msg) (*cloudevents.Event, error) {
	header := nethttp.Header{}
	for name, values := range msg.Headers() {
		for _, v := range values {
			header.Add(name, v)
		}
	}
	message := cehttp.NewMessage(header, io.NopCloser(bytes.NewReader(msg.Data())))
	defer message.Finish(nil)
	return binding.ToEvent(ctx, message)
}

func connect(endpointsFile, url, credentials string) (*nats.Conn, error) {
	if endpointsFile != "" {
		text, err := os.ReadFile(endpointsFile)
		if err != nil {
			return nil, err
		}
		var endpoints struct {
			NatsURL         string `json:"nats_url"`
			NatsCredentials string `json:"nats_credentials"`
		}
		if err := json.Unmarshal(text, &endpoints); err != nil {
			return nil, fmt.Errorf("%s: %w", endpointsFile, err)
		}
		if url == "" {
			url = endpoints.NatsURL
		}
		if credentials == "" {
			credentials = endpoints.NatsCredentials
		}
	}
	if url == "" {
		return nil, errors.New("no NATS URL: pass --endpoints FILE (from `tern up`) or --nats-url URL")
	}
	options := []nats.Option{nats.Name("dns-switcher-example-go"), nats.CustomInboxPrefix(inboxPrefix)}
	if credentials != "" {
		text, err := os.ReadFile(credentials)
		if err != nil {
			return nil, err
		}
		if strings.Contains(string(text), "BEGIN NATS USER JWT") {
			options = append(options, nats.UserCredentials(credentials))
		} else {
			seed, err := nats.NkeyOptionFromSeed(credentials)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", credentials, err)
			}
			options = append(options, seed)
		}
	}
	return nats.Connect(url, options...)
}

func run() int {
	endpoints := flag.String("endpoints", "", "endpoints.json of a `tern up` stack")
	url := flag.String("nats-url", "", "NATS server URL (overrides --endpoints)")
	credentials := flag.String("credentials", "", "the events-reader's nkey seed or .creds file")
	recordsFile := flag.String("records", "records.json", "the record file to keep (JSON)")
	schemasDir := flag.String("schemas", "../../../docs/events/schemas", "directory of the event schemas")
	flag.Parse()

	schemas, err := loadSchemas(*schemasDir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	nc, err := connect(*endpoints, *url, *credentials)
	if err != nil {
		fmt.Fprintln(os.Stderr, "connecting to NATS:", err)
		return 2
	}
	defer nc.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	js, err := jetstream.New(nc)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	consumer, err := js.OrderedConsumer(ctx, jsonStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{jsonSubjects},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "reading", jsonStream+":", err)
		return 2
	}
	book := &records{path: *recordsFile, byVM: map[string]Record{}}
	if text, err := os.ReadFile(*recordsFile); err == nil {
		_ = json.Unmarshal(text, &book.byVM)
	}
	var refused sync.Map
	handle := func(msg jetstream.Msg) error {
		event, err := toCloudEvent(ctx, msg)
		if err != nil {
			return fmt.Errorf("not a CloudEvent: %w", err)
		}
		if event.DataContentType() != "application/json" {
			return fmt.Errorf("content-type %q on the JSON mirror", event.DataContentType())
		}
		if err := schemas.check(event.DataSchema(), event.Data()); err != nil {
			return err
		}
		fmt.Printf("%s %s\n", event.Type(), event.Subject())
		if event.Type() != "tern.failover.succeeded" {
			return nil
		}
		var data eventData
		if err := event.DataAs(&data); err != nil {
			return err
		}
		if data.VM == nil {
			return errors.New("a failover event without its vm")
		}
		name := data.VM.VM.Name
		if name == "" {
			name = event.Subject()
		}
		planID, _ := event.Extensions()["ternplan"].(string)
		record := Record{
			ArmID:         data.VM.Resource.ArmID,
			Region:        data.VM.Resource.Region,
			ResourceGroup: data.VM.Resource.ResourceGroup,
			PrivateIPs:    append([]string{}, data.VM.Resource.PrivateIPs...),
			PlanID:        planID,
			EventID:       event.ID(),
		}
		if !event.Time().IsZero() {
			record.Time = event.Time().UTC().Format("2006-01-02T15:04:05.999Z07:00")
		}
		if err := book.update(name, record); err != nil {
			return fmt.Errorf("writing %s: %w", book.path, err)
		}
		fmt.Printf("%s: %s in %s\n", name, record.ArmID, record.Region)
		return nil
	}
	consumeContext, err := consumer.Consume(func(msg jetstream.Msg) {
		if err := handle(msg); err != nil {
			refused.Store(msg.Subject()+" "+err.Error(), true)
			fmt.Fprintf(os.Stderr, "event on %s refused: %v\n", msg.Subject(), err)
		}
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	fmt.Printf("reading %s (stream %s); records in %s\n", jsonSubjects, jsonStream, *recordsFile)
	<-ctx.Done()
	consumeContext.Stop()
	var problems []string
	refused.Range(func(k, _ any) bool {
		problems = append(problems, k.(string))
		return true
	})
	sort.Strings(problems)
	if len(problems) > 0 {
		return 1
	}
	return 0
}

func main() {
	os.Exit(run())
}
