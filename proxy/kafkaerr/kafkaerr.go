// Package kafkaerr is the only code that turns a denial or a failure into
// Kafka error codes inside responses.
//
// ErrorResponse answers a whole request with one error code the way Kafka
// would: the response of the request's kind and version, every resource the
// request named (topic and partition, group, transactional id, config
// resource, ...) echoed back with the code. Filters that refuse only part of
// a request build a request holding the refused part, ask ErrorResponse for
// its answer and merge that into the upstream response, so error codes are
// still filled in only here.
package kafkaerr

import (
	"fmt"
	"reflect"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// echoFunc fills resp (already of req's kind and version) with every
// resource of req carrying code.
type echoFunc func(req kmsg.Request, resp kmsg.Response, code int16)

// echoes holds the APIs whose requests name resources; the others answer
// with their top-level error code. Filled by the per-family files.
var echoes = map[int16]echoFunc{}

func register(key int16, f echoFunc) {
	if _, dup := echoes[key]; dup {
		panic(fmt.Sprintf("kafkaerr: two echo functions for key %d", key))
	}
	echoes[key] = f
}

// ErrorResponse builds the response Kafka would send if it refused the whole
// request req with code: the response kind and version of req, every
// resource named in req echoed back with code set.
//
// It returns an error for an API key it does not know how to answer; the
// proxy then closes the connection.
func ErrorResponse(req kmsg.Request, code int16) (kmsg.Response, error) {
	if req == nil || reflect.ValueOf(req).IsNil() {
		return nil, fmt.Errorf("kafkaerr: nil request")
	}
	key := req.Key()
	if kmsg.RequestForKey(key) == nil {
		return nil, fmt.Errorf("kafkaerr: no error response for api key %d", key)
	}
	v := req.GetVersion()
	if v < 0 || v > req.MaxVersion() {
		return nil, fmt.Errorf("kafkaerr: %s version %d is outside 0..%d", kmsg.NameForKey(key), v, req.MaxVersion())
	}
	resp := req.ResponseKind()
	resp.SetVersion(v)
	if f, ok := echoes[key]; ok {
		f(req, resp, code)
		return resp, nil
	}
	if !setErrorCode(resp, code) {
		return nil, fmt.Errorf("kafkaerr: no error response for api key %d (%s)", key, kmsg.NameForKey(key))
	}
	return resp, nil
}

// setErrorCode sets the top-level ErrorCode field of resp, reporting
// whether it has one.
func setErrorCode(resp kmsg.Response, code int16) bool {
	rv := reflect.ValueOf(resp).Elem()
	f := rv.FieldByName("ErrorCode")
	if !f.IsValid() || f.Kind() != reflect.Int16 {
		return false
	}
	f.SetInt(int64(code))
	return true
}

// Message returns the standard message for code, for the ErrorMessage
// fields newer versions carry.
func message(code int16) *string {
	s := fmt.Sprintf("denied by gateway policy (error %d)", code)
	return &s
}
