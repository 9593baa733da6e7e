package eventsource

import (
	"encoding/json"
	"fmt"
	"reflect"
	"sync"
)

// Codec turns values into bytes and back. JSONCodec is the default.
type Codec interface {
	Marshal(v any) ([]byte, error)
	Unmarshal(data []byte, v any) error
}

// JSONCodec encodes with encoding/json. Unmarshal rejects unknown fields, so a
// misspelled field is an error (and a dead letter) rather than a silent zero.
type JSONCodec struct{}

// Marshal implements Codec.
func (JSONCodec) Marshal(v any) ([]byte, error) { return json.Marshal(v) }

// Unmarshal implements Codec.
func (JSONCodec) Unmarshal(data []byte, v any) error {
	dec := json.NewDecoder(bytesReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return fmt.Errorf("trailing data after JSON value")
	}
	return nil
}

// Registry maps explicit, stable type names to Go types for commands and
// events, and encodes and decodes them with its Codec. The names are what is
// stored in Postgres and sent on Kafka: renaming a registered name makes every
// stored event of the old name undecodable, so treat names as a schema.
//
// A Registry is safe for concurrent use. There are no package-level
// registries: create one per service and pass it in.
type Registry struct {
	codec  Codec
	mu     sync.RWMutex
	byName map[string]reflect.Type
	byType map[reflect.Type]string
}

// RegistryOption configures a Registry.
type RegistryOption func(*Registry)

// WithCodec replaces the default JSONCodec.
func WithCodec(c Codec) RegistryOption { return func(r *Registry) { r.codec = c } }

// NewRegistry returns an empty registry using JSONCodec unless WithCodec is given.
func NewRegistry(opts ...RegistryOption) *Registry {
	r := &Registry{codec: JSONCodec{}, byName: map[string]reflect.Type{}, byType: map[reflect.Type]string{}}
	for _, o := range opts {
		o(r)
	}
	return r
}

// Register binds name to the concrete type T. T must not be an interface or a
// pointer type: values are registered and decoded by value. It returns an
// error (never panics) when name is empty, already bound to another type, or
// when T is already registered under another name. Registering the same
// (name, T) pair twice is allowed and does nothing.
func Register[T any](r *Registry, name string) error {
	t := reflect.TypeFor[T]()
	if name == "" {
		return fmt.Errorf("eventsource: register %v: %w", t, ErrEmptyTypeName)
	}
	if t.Kind() == reflect.Interface || t.Kind() == reflect.Pointer {
		return fmt.Errorf("eventsource: register %q: type %v must be a concrete non-pointer type", name, t)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if old, ok := r.byName[name]; ok {
		if old == t {
			return nil
		}
		return fmt.Errorf("eventsource: register %q for %v: %w (already bound to %v)", name, t, ErrDuplicateTypeName, old)
	}
	if old, ok := r.byType[t]; ok {
		return fmt.Errorf("eventsource: register %q for %v: %w (already registered as %q)", name, t, ErrDuplicateType, old)
	}
	r.byName[name] = t
	r.byType[t] = name
	return nil
}

// MustRegister is Register for static setup in main or tests; it returns the
// registry so calls can be chained, and panics on error. Prefer Register when
// names come from configuration.
func MustRegister[T any](r *Registry, name string) *Registry {
	if err := Register[T](r, name); err != nil {
		panic(err)
	}
	return r
}

// NameOf returns the registered name of v's dynamic type.
func (r *Registry) NameOf(v any) (string, error) {
	t := reflect.TypeOf(v)
	r.mu.RLock()
	name, ok := r.byType[t]
	r.mu.RUnlock()
	if !ok {
		return "", &UnknownTypeError{GoType: fmt.Sprint(t)}
	}
	return name, nil
}

// Encode returns v's registered name and its encoding.
func (r *Registry) Encode(v any) (name string, data []byte, err error) {
	name, err = r.NameOf(v)
	if err != nil {
		return "", nil, err
	}
	data, err = r.codec.Marshal(v)
	if err != nil {
		return "", nil, fmt.Errorf("eventsource: encode %q: %w", name, err)
	}
	return name, data, nil
}

// Decode returns a value of the type registered as name, decoded from data.
// The result holds a T (not a *T). Unknown names give *UnknownTypeError;
// malformed data gives *DecodeError.
func (r *Registry) Decode(name string, data []byte) (any, error) {
	r.mu.RLock()
	t, ok := r.byName[name]
	r.mu.RUnlock()
	if !ok {
		return nil, &UnknownTypeError{Name: name}
	}
	p := reflect.New(t)
	if err := r.codec.Unmarshal(data, p.Interface()); err != nil {
		return nil, &DecodeError{Name: name, Err: err}
	}
	return p.Elem().Interface(), nil
}

// Names returns the registered names (unordered).
func (r *Registry) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, 0, len(r.byName))
	for n := range r.byName {
		out = append(out, n)
	}
	return out
}

// Codec returns the registry's codec (used for state snapshots).
func (r *Registry) Codec() Codec { return r.codec }
