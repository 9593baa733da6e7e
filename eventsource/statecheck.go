package eventsource

import (
	"bytes"
	"encoding"
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// This file holds the two checks that keep a snapshot from silently losing
// state: checkJSONState (static, from Aggregate.Validate) and diffState (at
// every snapshot, from Aggregate.EncodeState).

var (
	jsonMarshalerType   = reflect.TypeFor[json.Marshaler]()
	jsonUnmarshalerType = reflect.TypeFor[json.Unmarshaler]()
	textMarshalerType   = reflect.TypeFor[encoding.TextMarshaler]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
	timeType            = reflect.TypeFor[time.Time]()
)

// isJSONCodec reports whether c is the default JSONCodec.
func isJSONCodec(c Codec) bool {
	switch c.(type) {
	case JSONCodec, *JSONCodec:
		return true
	}
	return false
}

// rootName names a state type at the start of a field path: "State" for
// State or *State, the type's full spelling when it is unnamed.
func rootName(t reflect.Type) string {
	for t.Kind() == reflect.Pointer && t.Name() == "" {
		t = t.Elem()
	}
	if t.Name() != "" {
		return t.Name()
	}
	return t.String()
}

// checkJSONState walks the state type t as encoding/json sees it and returns
// the path and the reason of the first field JSON cannot round-trip, or ""
// when it found none. Types that encode and decode themselves
// (json.Marshaler/Unmarshaler, encoding.TextMarshaler/TextUnmarshaler) are
// trusted and not entered; EncodeState checks their values at run time.
func checkJSONState(t reflect.Type) (field, reason string) {
	c := jsonChecker{seen: map[jsonCheckKey]bool{}}
	// The codec gets the state as an interface value, so the state itself is
	// not addressable (encoding/json does not call pointer-receiver
	// MarshalJSON on it).
	return c.check(t, false, rootName(t))
}

type jsonCheckKey struct {
	t    reflect.Type
	addr bool
}

type jsonChecker struct{ seen map[jsonCheckKey]bool }

// check checks type t at path. addressable tells whether encoding/json holds
// such a value addressably when encoding (elements of slices and pointers
// are; the state itself, map values and their fields are not), which decides
// whether it calls a pointer-receiver MarshalJSON or MarshalText.
func (c *jsonChecker) check(t reflect.Type, addressable bool, path string) (string, string) {
	key := jsonCheckKey{t, addressable}
	if c.seen[key] { // checked already, or being checked (recursive type)
		return "", ""
	}
	c.seen[key] = true

	if t.Kind() == reflect.Interface {
		if t.NumMethod() > 0 {
			return path, fmt.Sprintf("has interface type %v: encoding/json cannot decode into a non-empty interface (it does not know which concrete type to create)", t)
		}
		return "", "" // any: whatever it holds is checked by EncodeState
	}

	if t.Kind() == reflect.Pointer {
		// encoding/json marshals through a pointer with the methods of *T
		// and decodes by allocating a T: both are T's own business.
		return c.check(t.Elem(), true, path)
	}

	pt := reflect.PointerTo(t)
	encSelf := t.Implements(jsonMarshalerType) || t.Implements(textMarshalerType)
	encAddr := pt.Implements(jsonMarshalerType) || pt.Implements(textMarshalerType)
	dec := pt.Implements(jsonUnmarshalerType) || pt.Implements(textUnmarshalerType)
	enc := encSelf || (addressable && encAddr)
	switch {
	case enc && dec:
		return "", "" // encodes and decodes itself
	case enc:
		return path, fmt.Sprintf("has type %v, which implements json.Marshaler or encoding.TextMarshaler but neither json.Unmarshaler nor encoding.TextUnmarshaler, so a snapshot would not decode as it was encoded", t)
	case encAddr && dec:
		return path, fmt.Sprintf("has type %v, whose MarshalJSON or MarshalText has a pointer receiver: encoding/json does not call it on a value that is not addressable (the state itself, a map value, or a field of either), so a snapshot would hold the plain struct encoding; use *%v or a value receiver", t, t)
	}

	switch t.Kind() {
	case reflect.Chan, reflect.Func, reflect.Complex64, reflect.Complex128, reflect.UnsafePointer:
		return path, fmt.Sprintf("has type %v, which encoding/json cannot encode", t)
	case reflect.Slice:
		return c.check(t.Elem(), true, path+"[]")
	case reflect.Array:
		return c.check(t.Elem(), addressable, path+"[]")
	case reflect.Map:
		if !jsonMapKeyOK(t.Key()) {
			return path, fmt.Sprintf("has map key type %v: encoding/json supports only string and integer keys and keys implementing encoding.TextMarshaler and encoding.TextUnmarshaler", t.Key())
		}
		return c.check(t.Elem(), false, path+"[]")
	case reflect.Struct:
		// The struct's own fields first, so a problem is named at the
		// shallowest path (not through a recursive type's second level).
		for i := range t.NumField() {
			if reason := fieldProblem(t.Field(i)); reason != "" {
				return path + "." + t.Field(i).Name, reason
			}
		}
		for i := range t.NumField() {
			sf := t.Field(i)
			if sf.Name == "_" || sf.Type.Size() == 0 {
				continue
			}
			if f, r := c.check(sf.Type, addressable, path+"."+sf.Name); f != "" {
				return f, r
			}
		}
	}
	return "", ""
}

// fieldProblem returns why encoding/json cannot round-trip the field itself
// (regardless of its type), or "". The fields it accepts are either exported
// or embedded unexported structs, whose fields encoding/json promotes.
func fieldProblem(sf reflect.StructField) string {
	if sf.Name == "_" || sf.Type.Size() == 0 {
		return "" // carries no state
	}
	if sf.Tag.Get("json") == "-" {
		return `is tagged json:"-": encoding/json skips it, so a snapshot would restore it as its zero value`
	}
	if sf.IsExported() {
		return ""
	}
	if sf.Anonymous {
		switch ft := sf.Type; {
		case ft.Kind() == reflect.Struct:
			return ""
		case ft.Kind() == reflect.Pointer && ft.Elem().Kind() == reflect.Struct:
			return fmt.Sprintf("is an embedded pointer to the unexported struct type %v: encoding/json cannot allocate it when decoding", ft.Elem())
		}
	}
	return "is unexported: encoding/json skips it, so a snapshot would restore it as its zero value"
}

// jsonMapKeyOK reports whether encoding/json can encode and decode map keys
// of type k.
func jsonMapKeyOK(k reflect.Type) bool {
	switch k.Kind() {
	case reflect.String,
		reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return true
	}
	return k.Implements(textMarshalerType) && reflect.PointerTo(k).Implements(textUnmarshalerType)
}

// stateDiff is the first difference diffState found.
type stateDiff struct {
	segs          []string // path segments, innermost first
	before, after string
}

func (d *stateDiff) path(root string) string {
	var b strings.Builder
	b.WriteString(root)
	for i := len(d.segs) - 1; i >= 0; i-- {
		b.WriteString(d.segs[i])
	}
	return b.String()
}

// diffState compares a state with the state its snapshot decodes to, like
// reflect.DeepEqual except that
//   - a value whose type has a method Equal(T) bool (on T or *T) is compared
//     with it, so a time.Time that lost its monotonic reading or location
//     pointer in JSON is still equal;
//   - a nil and an empty slice or map are equal.
//
// It returns nil when they are equal and the first difference otherwise.
// a and b must have the same type and be addressable: diff keeps every value
// it visits addressable (copying map entries and interface values), so that
// it can call Equal on values reached through unexported fields.
func diffState(a, b reflect.Value) *stateDiff {
	var d differ
	return d.diff(a, b)
}

type differ struct {
	depth   int
	visited map[visit]bool // only used deep down, to stop on cyclic values
}

type visit struct {
	a, b uintptr
	t    reflect.Type
}

// cycleDepth is the depth from which diff remembers the pointers, maps and
// slices it has entered, as reflect.DeepEqual does from the start: only a
// cyclic value (which encoding/json refuses anyway) goes this deep.
const cycleDepth = 100

func (d *differ) diff(a, b reflect.Value) *stateDiff {
	if !a.IsValid() || !b.IsValid() {
		if a.IsValid() == b.IsValid() {
			return nil
		}
		return mismatch(a, b)
	}
	if a.Type() != b.Type() {
		return mismatch(a, b)
	}
	t := a.Type()
	if t == timeType && a.CanAddr() && b.CanAddr() { // the common case, without reflect.Call
		ta, tb := (*time.Time)(a.Addr().UnsafePointer()), (*time.Time)(b.Addr().UnsafePointer())
		return same(ta.Equal(*tb), a, b)
	}
	if eq := equalMethodOf(t); eq.ok {
		if r, ok := eq.equal(a, b); ok {
			if r {
				return nil
			}
			return mismatch(a, b)
		}
		// Not callable here (value behind an unexported, unaddressable
		// path): compare its contents instead.
	}
	switch a.Kind() {
	case reflect.Bool:
		return same(a.Bool() == b.Bool(), a, b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return same(a.Int() == b.Int(), a, b)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return same(a.Uint() == b.Uint(), a, b)
	case reflect.Float32, reflect.Float64:
		return same(a.Float() == b.Float(), a, b)
	case reflect.Complex64, reflect.Complex128:
		return same(a.Complex() == b.Complex(), a, b)
	case reflect.String:
		return same(a.String() == b.String(), a, b)
	case reflect.Chan, reflect.UnsafePointer:
		return same(a.Pointer() == b.Pointer(), a, b)
	case reflect.Func:
		return same(a.IsNil() && b.IsNil(), a, b)
	case reflect.Array:
		return d.diffElems(a, b, a.Len(), a.Len())
	case reflect.Slice:
		if a.Len() == 0 && b.Len() == 0 { // nil and empty are equal
			return nil
		}
		if a.Len() == b.Len() && a.UnsafePointer() == b.UnsafePointer() {
			return nil
		}
		if t.Elem().Kind() == reflect.Uint8 && !equalMethodOf(t.Elem()).ok && bytes.Equal(a.Bytes(), b.Bytes()) {
			return nil
		}
		if d.seen(a, b) {
			return nil
		}
		return d.diffElems(a, b, a.Len(), b.Len())
	case reflect.Map:
		if a.Len() == 0 && b.Len() == 0 { // nil and empty are equal
			return nil
		}
		if a.UnsafePointer() == b.UnsafePointer() || d.seen(a, b) {
			return nil
		}
		return d.diffMap(a, b)
	case reflect.Pointer:
		if a.IsNil() || b.IsNil() {
			return same(a.IsNil() && b.IsNil(), a, b)
		}
		if a.UnsafePointer() == b.UnsafePointer() || d.seen(a, b) {
			return nil
		}
		return d.enter(a.Elem(), b.Elem())
	case reflect.Interface:
		if a.IsNil() || b.IsNil() {
			return same(a.IsNil() && b.IsNil(), a, b)
		}
		a, b = interfaceable(a), interfaceable(b)
		return d.enter(addressable(a.Elem()), addressable(b.Elem()))
	case reflect.Struct:
		for i := range a.NumField() {
			if r := d.enter(a.Field(i), b.Field(i)); r != nil {
				r.segs = append(r.segs, "."+t.Field(i).Name)
				return r
			}
		}
	}
	return nil
}

// diffMap compares two non-empty maps of the same type entry by entry.
func (d *differ) diffMap(a, b reflect.Value) *stateDiff {
	a, b = interfaceable(a), interfaceable(b)
	// Entries are copied into addressable variables, so the Equal methods of
	// values in them can be called whatever their path. (diff keeps values
	// addressable, so the maps are always readable here; if not, compare the
	// entries as they come.)
	t := a.Type()
	copyEntries := a.CanInterface() && b.CanInterface()
	var k, va, vb reflect.Value
	if copyEntries {
		k = reflect.New(t.Key()).Elem()
		va, vb = reflect.New(t.Elem()).Elem(), reflect.New(t.Elem()).Elem()
	}
	it := a.MapRange()
	for it.Next() {
		if copyEntries {
			k.SetIterKey(it)
			va.SetIterValue(it)
		} else {
			k, va = it.Key(), it.Value()
		}
		bv := b.MapIndex(k)
		if !bv.IsValid() {
			return &stateDiff{segs: []string{keySeg(k)}, before: show(va), after: "<missing>"}
		}
		if copyEntries {
			vb.Set(bv)
		} else {
			vb = bv
		}
		if r := d.enter(va, vb); r != nil {
			r.segs = append(r.segs, keySeg(k))
			return r
		}
	}
	if b.Len() > a.Len() {
		it := b.MapRange()
		for it.Next() {
			if !a.MapIndex(it.Key()).IsValid() {
				return &stateDiff{segs: []string{keySeg(it.Key())}, before: "<missing>", after: show(it.Value())}
			}
		}
	}
	return nil
}

func (d *differ) enter(a, b reflect.Value) *stateDiff {
	d.depth++
	r := d.diff(a, b)
	d.depth--
	return r
}

// diffElems compares the first min(na, nb) elements, then reports a missing one.
func (d *differ) diffElems(a, b reflect.Value, na, nb int) *stateDiff {
	for i := range min(na, nb) {
		if r := d.enter(a.Index(i), b.Index(i)); r != nil {
			r.segs = append(r.segs, "["+strconv.Itoa(i)+"]")
			return r
		}
	}
	switch {
	case na > nb:
		return &stateDiff{segs: []string{"[" + strconv.Itoa(nb) + "]"}, before: show(a.Index(nb)), after: "<missing>"}
	case nb > na:
		return &stateDiff{segs: []string{"[" + strconv.Itoa(na) + "]"}, before: "<missing>", after: show(b.Index(na))}
	}
	return nil
}

// seen reports whether the pair (a, b) is already being compared, once diff
// is deep enough for a cycle to be possible.
func (d *differ) seen(a, b reflect.Value) bool {
	if d.depth < cycleDepth {
		return false
	}
	if d.visited == nil {
		d.visited = map[visit]bool{}
	}
	v := visit{uintptr(a.UnsafePointer()), uintptr(b.UnsafePointer()), a.Type()}
	if d.visited[v] {
		return true
	}
	d.visited[v] = true
	return false
}

func same(eq bool, a, b reflect.Value) *stateDiff {
	if eq {
		return nil
	}
	return mismatch(a, b)
}

func mismatch(a, b reflect.Value) *stateDiff {
	before, after := show(a), show(b)
	if a.IsValid() && b.IsValid() && a.Type() != b.Type() {
		before += " (" + a.Type().String() + ")"
		after += " (" + b.Type().String() + ")"
	}
	return &stateDiff{before: before, after: after}
}

// maxShown bounds a value printed in a SnapshotRoundTripError.
const maxShown = 200

func show(v reflect.Value) string {
	if !v.IsValid() {
		return "nil"
	}
	s := fmt.Sprintf("%#v", v)
	if len(s) > maxShown {
		cut := maxShown
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}

func keySeg(k reflect.Value) string {
	if k.Kind() == reflect.String {
		return "[" + strconv.Quote(k.String()) + "]"
	}
	return "[" + fmt.Sprint(k) + "]"
}

// equalInfo describes a type's Equal(T) bool method.
type equalInfo struct {
	ok  bool
	ptr bool          // declared on *T
	fn  reflect.Value // the method as a func(T or *T, T) bool
}

var equalMethods sync.Map // reflect.Type -> equalInfo

func equalMethodOf(t reflect.Type) equalInfo {
	if t.PkgPath() == "" { // unnamed or predeclared: no methods of its own
		return equalInfo{}
	}
	if v, ok := equalMethods.Load(t); ok {
		return v.(equalInfo)
	}
	var info equalInfo
	if t.Kind() != reflect.Interface {
		if m, ok := t.MethodByName("Equal"); ok && isEqualFunc(m.Type, t) {
			info = equalInfo{ok: true, fn: m.Func}
		} else if m, ok := reflect.PointerTo(t).MethodByName("Equal"); ok && isEqualFunc(m.Type, t) {
			info = equalInfo{ok: true, ptr: true, fn: m.Func}
		}
	}
	equalMethods.Store(t, info)
	return info
}

// isEqualFunc reports whether ft (a method with its receiver first) is
// func(recv, T) bool.
func isEqualFunc(ft, t reflect.Type) bool {
	return ft.NumIn() == 2 && ft.In(1) == t && ft.NumOut() == 1 && ft.Out(0).Kind() == reflect.Bool
}

// equal calls the Equal method; ok is false when it cannot be called on these
// values (reached through an unexported field and not addressable).
func (e equalInfo) equal(a, b reflect.Value) (result, ok bool) {
	a, b = interfaceable(a), interfaceable(b)
	if !a.CanInterface() || !b.CanInterface() {
		return false, false
	}
	recv := a
	if e.ptr {
		if a.CanAddr() {
			recv = a.Addr()
		} else {
			recv = reflect.New(a.Type())
			recv.Elem().Set(a)
		}
	}
	return e.fn.Call([]reflect.Value{recv, b})[0].Bool(), true
}

// addressable returns v, or for a struct or array that is not addressable
// (an interface's dynamic value), an addressable copy of it.
func addressable(v reflect.Value) reflect.Value {
	if !v.IsValid() || v.CanAddr() || !v.CanInterface() {
		return v
	}
	switch v.Kind() {
	case reflect.Struct, reflect.Array:
		c := reflect.New(v.Type()).Elem()
		c.Set(v)
		return c
	}
	return v
}

// interfaceable returns v such that its Equal method can be called and its
// map entries read without reflect's restriction on values reached through
// unexported fields: the value at the same address, when v is addressable.
// Comparing only reads it.
func interfaceable(v reflect.Value) reflect.Value {
	if v.CanInterface() || !v.CanAddr() {
		return v
	}
	return reflect.NewAt(v.Type(), v.Addr().UnsafePointer()).Elem()
}
